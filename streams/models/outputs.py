"""What the core emits: sales alerts and score updates, as CloudEvents 1.0.

Ids are deterministic (a hash of contact, plan, type, threshold and cause), so an output
re-sent after a crash or produced again by a replay is recognisably the same output, and
consumers can deduplicate on `(source, id)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Literal

import orjson

from streams.models.events import SPEC_VERSION, TrackingEvent, format_time

THRESHOLD_CROSSED = "leadscore.threshold.crossed"
THRESHOLD_DROPPED = "leadscore.threshold.dropped"
SCORE_CHANGED = "leadscore.score.changed"
CONTACT_FORGOTTEN = "leadscore.contact.erased"
ENGINE_SOURCE = "/leadscore"

OutputKind = Literal["alert", "update"]


@dataclass(frozen=True, slots=True)
class Cause:
    """Why a score changed: an event and the rules it triggered, or a timer and its rules."""

    time: float
    rules: tuple[str, ...]
    event: TrackingEvent | None = None

    @property
    def identity(self) -> str:
        """Stable text naming this cause; it feeds the output ids."""
        if self.event is not None:
            return f"event\x1f{self.event.source}\x1f{self.event.id}"
        return f"timer\x1f{','.join(self.rules)}\x1f{self.time!r}"

    def to_json(self) -> dict[str, Any]:
        if self.event is None:
            return {"rules": list(self.rules), "timer": True}
        return {
            "event_id": self.event.id,
            "event_source": self.event.source,
            "event_type": self.event.type,
            "rules": list(self.rules),
        }


@dataclass(frozen=True, slots=True)
class Output:
    """One CloudEvent to send; `kind` picks the topic (alerts to sales, updates to the log)."""

    kind: OutputKind
    contact_id: str
    cloudevent: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.cloudevent["id"])

    @property
    def type(self) -> str:
        return str(self.cloudevent["type"])

    @property
    def data(self) -> Mapping[str, Any]:
        data: Mapping[str, Any] = self.cloudevent["data"]
        return data

    def to_bytes(self) -> bytes:
        """Structured-mode JSON, the form on Kafka and in `backtest --alerts`."""
        return orjson.dumps(self.cloudevent)


def output_id(*parts: str) -> str:
    return blake2b("\x1e".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def make_output(
    kind: OutputKind,
    event_type: str,
    source: str,
    contact_id: str,
    cause: Cause,
    data: dict[str, Any],
    discriminator: str = "",
) -> Output:
    """Wrap `data` in a CloudEvent whose id depends only on what caused it."""
    return Output(
        kind=kind,
        contact_id=contact_id,
        cloudevent={
            "specversion": SPEC_VERSION,
            "id": output_id(contact_id, source, event_type, discriminator, cause.identity),
            "source": source,
            "type": event_type,
            "subject": contact_id,
            "time": format_time(cause.time),
            "datacontenttype": "application/json",
            "data": data,
        },
    )
