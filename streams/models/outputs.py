"""What the core emits: sales alerts and score updates, as CloudEvents 1.0.

Ids are deterministic (a hash of contact, plan, type, threshold and cause), so an output
re-sent after a crash or produced again by a replay is recognisably the same output, and
consumers can deduplicate on `(source, id)`.

An `Output` is a compact record; its `data` (with the breakdown) and its CloudEvent (id hash,
RFC 3339 time) are built the first time something reads them, so a driver that only counts
score updates (a backtest without `--alerts`) never pays for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from hashlib import blake2b
from typing import Any, Final, Literal

import orjson

from streams.models.events import SPEC_VERSION, TrackingEvent, format_time

THRESHOLD_CROSSED: Final = "leadscore.threshold.crossed"
THRESHOLD_DROPPED: Final = "leadscore.threshold.dropped"
SCORE_CHANGED: Final = "leadscore.score.changed"
CONTACT_FORGOTTEN: Final = "leadscore.contact.erased"
ENGINE_SOURCE: Final = "/leadscore"

OutputKind = Literal["alert", "update"]


class Cause:
    """Why a score changed: an event and the rules it triggered, or a timer and its rules.

    Immutable (`Final`). A plain class: one is made for every score change, and the compiled
    core builds a named tuple through Python code, ten times slower."""

    __slots__ = ("event", "plan_change", "rescore", "rules", "time")

    def __init__(
        self,
        time: float,
        rules: tuple[str, ...],
        event: TrackingEvent | None = None,
        plan_change: str | None = None,
        rescore: bool = False,
    ) -> None:
        self.time: Final = time
        self.rules: Final = rules
        self.event: Final = event
        self.plan_change: Final = plan_change
        """The label of the plan version whose switch changed the score (no event, no rules)."""
        self.rescore: Final = rescore
        """The switch rescored the contact's history (`change: rescore`)."""

    def _fields(self) -> tuple[Any, ...]:
        return (self.time, self.rules, self.event, self.plan_change, self.rescore)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cause):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        extra = "" if self.plan_change is None else f", plan_change={self.plan_change!r}"
        extra += ", rescore=True" if self.rescore else ""
        return f"Cause(time={self.time!r}, rules={self.rules!r}, event={self.event!r}{extra})"

    def __reduce__(self) -> tuple[Callable[..., Cause], tuple[Any, ...]]:
        return Cause, self._fields()

    @property
    def identity(self) -> str:
        """Stable text naming this cause; it feeds the output ids."""
        if self.event is not None:
            return f"event\x1f{self.event.source}\x1f{self.event.id}"
        if self.plan_change is not None:
            return f"plan\x1f{self.plan_change}\x1f{self.rescore}\x1f{self.time!r}"
        return f"timer\x1f{','.join(self.rules)}\x1f{self.time!r}"

    def to_json(self) -> dict[str, Any]:
        if self.plan_change is not None:
            if self.rescore:
                return {"plan_change": self.plan_change, "rescore": True}
            return {"plan_change": self.plan_change}
        if self.event is None:
            return {"rules": list(self.rules), "timer": True}
        return {
            "event_id": self.event.id,
            "event_source": self.event.source,
            "event_type": self.event.type,
            "rules": list(self.rules),
        }


class Output:
    """One CloudEvent to send; `kind` picks the topic (alerts to sales, updates to the log)."""

    __slots__ = (
        "_cloudevent",
        "_data",
        "cause",
        "contact_id",
        "discriminator",
        "kind",
        "source",
        "type",
    )

    def __init__(
        self,
        kind: OutputKind,
        event_type: str,
        source: str,
        contact_id: str,
        cause: Cause,
        data: Callable[[], dict[str, Any]] | dict[str, Any],
        discriminator: str = "",
    ) -> None:
        self.kind: OutputKind = kind
        self.type = event_type
        self.source = source
        self.contact_id = contact_id
        self.cause = cause
        self.discriminator = discriminator
        self._data: Callable[[], dict[str, Any]] | dict[str, Any] = data
        self._cloudevent: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return output_id(
            self.contact_id, self.source, self.type, self.discriminator, self.cause.identity
        )

    @property
    def data(self) -> Mapping[str, Any]:
        if callable(self._data):
            self._data = self._data()
        return self._data

    @property
    def cloudevent(self) -> Mapping[str, Any]:
        if self._cloudevent is None:
            self._cloudevent = {
                "specversion": SPEC_VERSION,
                "id": self.id,
                "source": self.source,
                "type": self.type,
                "subject": self.contact_id,
                "time": format_time(self.cause.time),
                "datacontenttype": "application/json",
                "data": self.data,
            }
        return self._cloudevent

    def to_bytes(self) -> bytes:
        """Structured-mode JSON, the form on Kafka and in `backtest --alerts`."""
        return orjson.dumps(self.cloudevent)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Output):
            return NotImplemented
        return (self.kind, self.contact_id, self.cloudevent) == (
            other.kind,
            other.contact_id,
            other.cloudevent,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable caches: compared by content only

    def __reduce__(self) -> tuple[type[Output], tuple[Any, ...]]:
        """Pickled with its data built (what `backtest --jobs` sends between processes): the
        deferred form refers to the plan, whose compiled matchers cannot be pickled."""
        data = dict(self.data)
        fields = (self.kind, self.type, self.source, self.contact_id, self.cause, data)
        return Output, (*fields, self.discriminator)

    def __repr__(self) -> str:
        return f"Output(kind={self.kind!r}, contact_id={self.contact_id!r}, id={self.id!r})"


def output_id(*parts: str) -> str:
    return blake2b("\x1e".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def alert_data(update: Output, threshold: str, threshold_score: int) -> dict[str, Any]:
    """An alert's `data`: its score update's, and the threshold."""
    return {**update.data, "threshold": threshold, "threshold_score": threshold_score}
