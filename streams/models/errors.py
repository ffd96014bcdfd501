"""The error of an input that cannot be scored, shared by the decoders of events and times."""

from __future__ import annotations


class EventError(ValueError):
    """A tracking event that cannot be scored; `reason` is a short stable code for metrics."""

    def __init__(self, reason: str, message: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field_name = field_name


SCORING_ERROR = "scoring-error"


def scoring_error(error: Exception) -> EventError:
    """A valid event the scoring core failed on (a bug): dead-lettered like bad input, so that
    it costs one event, not the stream."""
    return EventError(SCORING_ERROR, f"the scoring core failed: {type(error).__name__}: {error}")
