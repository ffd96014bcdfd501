"""The peer of bench/peers.py: a Quix Streams app that scores with leadscore's compiled core.

    PYTHONPATH=. <quix venv>/bin/python bench/peers_quix.py BOOTSTRAP EVENTS ALERTS UPDATES
        GROUP STATE_DIR {at-least-once,exactly-once} COMMIT_INTERVAL

Runs in its own virtual environment (bench/peers.py makes it): Quix Streams pins
confluent-kafka below 2.13 and leadscore needs 2.16, so this file imports nothing from the
project but its core (`streams.scoring`, `streams.models`), and nothing of the worker's.

What it does per event is what the worker does, in Quix's idiom: decode the binary-mode
CloudEvent (`decode_kafka_message`), read the contact's state from Quix's RocksDB state (its
per-checkpoint cache, its changelog topic) with leadscore's own codec (`encode_state` /
`decode_state` as the store's dumps/loads), `score_event` with the plans history and lateness
the worker uses by default, and produce each output to the alerts or updates topic, keyed by
contact, with the worker's content-type header. Invalid input stops it: the benchmark's input
is valid, and a peer that silently skipped events would look faster than it is.

On SIGTERM (Quix stops gracefully) it prints what it scored as JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from quixstreams import Application, State
from quixstreams.models.serializers import Serializer
from quixstreams.state.rocksdb import RocksDBOptions

from streams.models.events import decode_kafka_message
from streams.models.plan_versions import PlanHistory
from streams.scoring import Output, decode_state, encode_state, load_plans, score_event

PLANS = Path(__file__).resolve().parents[1] / "schemas" / "examples" / "plans.yaml"
LATENESS = 86400.0
"""The worker's default `--lateness` (streams/worker/settings.py)."""
STATE_KEY = b"s"
"""Quix scopes state by message key (the contact id); one entry per contact under it."""
CONTENT_TYPE = [("content-type", b"application/cloudevents+json; charset=UTF-8")]


class OutputBytes(Serializer):
    """An `Output` as the worker sends it: its CloudEvent in structured mode."""

    def __call__(self, value: Output, ctx: Any) -> bytes:
        return value.to_bytes()


def main(argv: list[str]) -> int:
    bootstrap, events, alerts, updates, group, state_dir, guarantee, interval = argv
    history = PlanHistory.single(load_plans(PLANS))
    counts = {"events": 0, "alerts": 0, "updates": 0}
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=float(interval),
        processing_guarantee=guarantee,  # type: ignore[arg-type]
        state_dir=state_dir,
        rocksdb_options=RocksDBOptions(dumps=encode_state, loads=decode_state),
        loglevel="WARNING",
    )
    source = app.topic(events, value_deserializer="bytes", key_deserializer="bytes")
    alerts_topic = app.topic(alerts, value_serializer=OutputBytes(), key_serializer="bytes")
    updates_topic = app.topic(updates, value_serializer=OutputBytes(), key_serializer="bytes")

    def score(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> list[Output]:
        event = decode_kafka_message(key, value, headers)
        step = score_event(state.get(STATE_KEY), event, history, LATENESS)
        state.set(STATE_KEY, step.state)
        counts["events"] += 1
        return step.outputs

    def topic_of(value: Output, key: Any, timestamp: int, headers: Any) -> Any:
        if value.kind == "alert":
            counts["alerts"] += 1
            return alerts_topic
        counts["updates"] += 1
        return updates_topic

    sdf = app.dataframe(source)
    sdf = sdf.apply(score, stateful=True, metadata=True, expand=True)
    sdf = sdf.set_headers(lambda value, key, timestamp, headers: CONTENT_TYPE)
    sdf.to_topic(topic_of, key=lambda output: output.contact_id.encode())
    app.run()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
