"""Thousands of malformed messages of every kind, mixed into a valid stream, through one worker.

It proves three things: every malformed message is in the dead-letter topic, one to one (by
its partition and offset, which every dead letter names, truncated ones too), with a reason
its kind allows; every valid event is applied (the scores and alerts equal the backtest's of
the valid events alone); and the worker never restarts (the same process all along, nothing
crashed in its log). Messages go through `EventPublisher.publish_raw` (murmur2, as the worker
expects), except three kinds sent on their own after the stream: header names that are not
UTF-8 (no confluent-kafka producer can send one: they go through aiokafka's record builder),
and a few valid events of contacts of their own on the wrong partition, whose forwards must
keep their null-valued headers.

Headers are fuzzed as well as values: null header values (Java's `new RecordHeader(name,
null)`, confluent-kafka's `(name, None)`) in both modes, in `ce_` and other headers, on
valid and malformed messages alike; duplicate names; thousands of headers; too many header
bytes. Every dead letter must carry the original headers as they were, nulls included.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from streams.backtest.replay import replay
from streams.backtest.simulate import generate
from streams.kafka.client import (
    EventPublisher,
    KeyedProducer,
    binary_message,
    structured_message,
)
from streams.kafka.security import as_connection
from streams.models.events import (
    MAX_CONTACT_ID_BYTES,
    MAX_EVENT_BYTES,
    MAX_HEADER_BYTES,
    TrackingEvent,
)
from streams.scoring import Outcome, load_plans
from streams.worker.flow.dead_letters import DLQ_HEADER, TRUNCATED_HEADER
from tests.kafka.raw_records import RawName, send_batches
from tests.worker.conftest import StartWorker
from tests.worker.expected import differences, expected_outcome, scores_from_updates
from tests.worker.harness import (
    EXAMPLE_PLANS,
    TopicReader,
    key_on_partition,
    partition_of,
    series,
    wait_until,
)

pytestmark = pytest.mark.integration

MALFORMED = 10_500
CONTACTS = 300
EVENTS = 3_000
PARTITIONS = 3
BROKER_LIMIT = 1_048_588
"""The broker's default `message.max.bytes` (every topic's `max.message.bytes` here)."""
FUZZ_HEADER = "fuzz"
"""Names the malformed message on the input topic, to find its partition and offset."""

Headers = list[tuple[str, bytes | None]]
NULL_HEADERS: Headers = [
    ("traceparent", None),
    ("x-null", None),
    ("ce_traceparent", None),
    ("ce_dataschema", None),
]
"""Null-valued headers that change nothing: no attribute of the event, or an optional one."""
REQUIRED_CE = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"]
RAW_NAMES = [b"x-\xff\xfe", b"ce_\xc3(", b"\xff", b"ce_id\x80"]
"""Header names that are not UTF-8 (Kafka's protocol says they are: a raw librdkafka or
hand-built producer can still send them)."""
STRAYS = 24
"""Valid events of contacts of their own, sent to a partition that does not own them."""


@dataclass(frozen=True)
class Malformed:
    kind: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    reasons: frozenset[str]
    """The reasons a dead letter of this message may give (several when random)."""


Maker = Callable[[random.Random, TrackingEvent], Malformed]


def _bad(
    kind: str, key: bytes | None, value: bytes | None, headers: Headers, *reasons: str
) -> Malformed:
    return Malformed(kind, key, value, headers, frozenset(reasons))


def _object(event: TrackingEvent) -> dict[str, Any]:
    return event.to_cloudevent()


def _structured(event: TrackingEvent, **changes: Any) -> bytes:
    return orjson.dumps({**_object(event), **changes})


def random_bytes(rng: random.Random, event: TrackingEvent) -> Malformed:
    while True:
        value = rng.randbytes(rng.randint(1, 300))
        try:
            if isinstance(orjson.loads(value), dict):
                continue  # an object by chance would be some other kind of bad input
        except orjson.JSONDecodeError:
            pass
        return _bad("random-bytes", event.subject.encode(), value, [], "not-json", "not-object")


def truncated_json(rng: random.Random, event: TrackingEvent) -> Malformed:
    whole = _structured(event)
    value = whole[: rng.randint(1, len(whole) - 1)]
    return _bad("truncated-json", event.subject.encode(), value, [], "not-json")


WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("id", 42, "wrong-type"),
    ("id", "", "wrong-type"),
    ("source", ["/web"], "wrong-type"),
    ("type", {"a": 1}, "wrong-type"),
    ("subject", 7, "wrong-type"),
    ("time", 1772366400, "wrong-type"),
    ("data", "text", "wrong-type"),
    ("data", [1, 2], "wrong-type"),
    ("specversion", 1.0, "bad-specversion"),
    ("specversion", None, "missing-field"),
    ("id", None, "missing-field"),
]


def wrong_type(rng: random.Random, event: TrackingEvent) -> Malformed:
    name, value, reason = rng.choice(WRONG_TYPES)
    return _bad(
        "wrong-type", event.subject.encode(), _structured(event, **{name: value}), [], reason
    )


BAD_TIMES = [
    "yesterday",
    "20260301T120000Z",
    "2026-03-01T12Z",
    "2026-03-01 12:00:00Z",
    "2026-03-01T12:00:00",
    "2026-02-30T12:00:00Z",
    "2026-03-01T25:00:00Z",
    "2026-03-01T12:00:00+25:00",
    "2026-03-01T12:00:60Z",
    "2026-03-01T12:00:00.Z",
    "9999-12-31T23:30:00-01:00",
    "0001-01-01T00:30:00+01:00",
    "0000-06-01T00:00:00Z",
    "99999-01-01T00:00:00Z",
]


def bad_time(rng: random.Random, event: TrackingEvent) -> Malformed:
    value = _structured(event, time=rng.choice(BAD_TIMES))
    return _bad("bad-time", event.subject.encode(), value, [], "bad-time")


def huge_json(rng: random.Random, event: TrackingEvent) -> Malformed:
    padding = "x" * rng.randint(MAX_EVENT_BYTES, MAX_EVENT_BYTES + 20_000)
    value = _structured(event, data={"campaign": padding})
    return _bad("huge-json", event.subject.encode(), value, [], "oversized")


def deeply_nested(rng: random.Random, event: TrackingEvent) -> Malformed:
    depth = rng.randint(1_100, 20_000)  # orjson refuses more than 1,024 levels
    data = b'{"a":' * depth + b"1" + b"}" * depth
    value = _structured(event, data={"url": "u"}).replace(b'{"url":"u"}', data)
    reasons = ("oversized", "not-json") if len(value) > MAX_EVENT_BYTES else ("not-json",)
    return _bad("deeply-nested", event.subject.encode(), value, [], *reasons)


def invalid_utf8_value(rng: random.Random, event: TrackingEvent) -> Malformed:
    value = _structured(event, id="X").replace(b'"X"', b'"\xff' + rng.randbytes(3) + b'"')
    return _bad("invalid-utf8-value", event.subject.encode(), value, [], "not-json")


def invalid_utf8_key(rng: random.Random, event: TrackingEvent) -> Malformed:
    key = event.subject.encode() + b"\xc3" + rng.choice([b"", b"(", b"\xff"])
    return _bad("invalid-utf8-key", key, _structured(event), [], "bad-key")


def null_key(rng: random.Random, event: TrackingEvent) -> Malformed:
    _, value, headers = rng.choice([structured_message, binary_message])(event)
    return _bad("null-key", None, value, headers, "missing-key")


def empty_parts(rng: random.Random, event: TrackingEvent) -> Malformed:
    """An empty key (a contact id no event has), or an empty value without `ce_` headers; with
    a header whose name is empty."""
    if rng.random() < 0.5:
        return _bad("empty-parts", b"", _structured(event), [("", b"")], "key-mismatch")
    return _bad("empty-parts", event.subject.encode(), b"", [("", None)], "empty")


def null_value(rng: random.Random, event: TrackingEvent) -> Malformed:
    return _bad("null-value", event.subject.encode(), None, [], "empty")


def garbage_ce_headers(rng: random.Random, event: TrackingEvent) -> Malformed:
    key, value, headers = binary_message(event)
    garbage = "".join(rng.choices(string.printable, k=20)).encode()
    name, replacement, reason = rng.choice(
        [
            ("ce_source", rng.randbytes(6) + b"\xff", "bad-header"),
            ("ce_time", garbage, "bad-time"),
            ("ce_specversion", garbage, "bad-specversion"),
            ("ce_subject", garbage, "key-mismatch"),
            ("ce_id", None, "missing-field"),
        ]
    )
    changed = [(n, v) for n, v in headers if n != name]
    if replacement is not None:
        changed.append((name, replacement))
    return _bad("garbage-ce-headers", key, value, changed, reason)


def bad_data_base64(rng: random.Random, event: TrackingEvent) -> Malformed:
    cloudevent = {k: v for k, v in _object(event).items() if k != "data"}
    data = orjson.dumps(event.data)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"data_base64": base64.b64encode(data).decode(), "datacontenttype": "image/png"},
         "unsupported-content-type"),
        ({"data_base64": "not base64!"}, "bad-base64"),
        ({"data_base64": base64.b64encode(b"\x00\x01").decode()}, "not-json"),
        ({"data_base64": base64.b64encode(data).decode(), "data": {"url": "x"}}, "conflicting-data"),
    ]  # fmt: skip
    change, reason = rng.choice(cases)
    value = orjson.dumps({**cloudevent, **change})
    return _bad("bad-data-base64", event.subject.encode(), value, [], reason)


def long_contact_id(rng: random.Random, event: TrackingEvent) -> Malformed:
    subject = event.subject + "x" * rng.randint(MAX_CONTACT_ID_BYTES, 40_000)
    value = _structured(event, subject=subject)
    return _bad("long-contact-id", subject.encode(), value, [], "contact-id-too-long")


def key_mismatch(rng: random.Random, event: TrackingEvent) -> Malformed:
    return _bad("key-mismatch", b"someone-else", _structured(event), [], "key-mismatch")


def null_ce_header(rng: random.Random, event: TrackingEvent) -> Malformed:
    """A required attribute as a null-valued header: in place, or after the valid one (the
    last header of a name counts, as Kafka's `lastHeader`); or a structured event with a null
    `ce_specversion` header, which makes it a binary one without attributes."""
    case = rng.randrange(3)
    if case == 2:
        key, value, headers = structured_message(event)
        return _bad("null-ce-header", key, value, [*headers, ("ce_specversion", None)],
                    "missing-field")  # fmt: skip
    key, value, headers = binary_message(event)
    name = rng.choice(REQUIRED_CE)
    changed: Headers = list(headers)
    if case == 0:
        changed = [(n, None if n == name else v) for n, v in changed]
    else:
        changed.append((name, None))
    return _bad("null-ce-header", key, value, changed, "missing-field")


def too_many_headers(rng: random.Random, event: TrackingEvent) -> Malformed:
    """More header bytes than an event may have: thousands of small headers (duplicate
    names, nulls among them), or one huge attribute, which the outputs would repeat."""
    if rng.random() < 0.25:  # the rarer: thousands of headers cost time in every client
        key, value, headers = rng.choice([structured_message, binary_message])(event)
        count = MAX_HEADER_BYTES // 30 + rng.randint(1, 2_000)  # 37 bytes each on average
        filler: Headers = [(f"h{i % 50}", None if i % 7 == 0 else b"v" * 40) for i in range(count)]
        return _bad("too-many-headers", key, value, [*headers, *filler], "oversized")
    key, value, headers = binary_message(event)
    huge = b"s" * rng.randint(MAX_HEADER_BYTES, MAX_HEADER_BYTES + 20_000)
    changed: Headers = [(n, huge if n == "ce_source" else v) for n, v in headers]
    return _bad("too-many-headers", key, value, changed, "oversized")


def with_nulls(rng: random.Random, headers: Sequence[tuple[str, bytes | None]]) -> Headers:
    """`headers`, half the time with null-valued ones (`NULL_HEADERS`) at random places."""
    changed = list(headers)
    if rng.random() < 0.5:
        for header in rng.sample(NULL_HEADERS, rng.randint(1, len(NULL_HEADERS))):
            changed.insert(rng.randint(0, len(changed)), header)
    return changed


MAKERS: dict[Maker, int] = {
    random_bytes: 10,
    truncated_json: 10,
    wrong_type: 10,
    bad_time: 10,
    huge_json: 1,  # the large kinds less often: they are many megabytes to send and read
    deeply_nested: 1,
    invalid_utf8_value: 10,
    invalid_utf8_key: 10,
    null_key: 10,
    null_value: 10,
    empty_parts: 5,
    garbage_ce_headers: 10,
    bad_data_base64: 10,
    long_contact_id: 1,
    key_mismatch: 10,
    null_ce_header: 10,
    too_many_headers: 1,
}
"""Each kind of malformed message and how often it is drawn."""
SIZE_LIMITS = [MAX_EVENT_BYTES + 1, 999_999, 1_000_000, 1_000_001, BROKER_LIMIT - 200]
"""Raw values just over the event limit, around librdkafka's default `message.max.bytes` and
just under the broker's limit (whose dead letter, with its headers, is over it: truncated)."""


def malformed_messages(rng: random.Random, events: list[TrackingEvent]) -> list[Malformed]:
    """`MALFORMED` bad messages about the valid stream's contacts, every kind many times."""
    makers = rng.choices(list(MAKERS), weights=list(MAKERS.values()), k=MALFORMED)
    made = [make(rng, rng.choice(events)) for make in makers]
    made = [dataclasses.replace(m, headers=with_nulls(rng, m.headers)) for m in made]
    made += [
        _bad("size-limit", events[i].subject.encode(), b"x" * size, [], "oversized")
        for i, size in enumerate(SIZE_LIMITS)
    ]
    return made


def valid_headers(rng: random.Random, headers: Headers, index: int, count: int) -> Headers:
    """Headers that must not stop a valid event: null values (a null `content-type` is
    JSON, as an absent one), a duplicate attribute with the same value, and, for one event,
    thousands of small headers within the limit."""
    changed = with_nulls(rng, headers)
    if rng.random() < 0.2:
        changed = [(n, None if n == "content-type" else v) for n, v in changed]
    if rng.random() < 0.2:
        changed = [*changed, *[(n, v) for n, v in changed if n.startswith("ce_")][:1]]
    if index == count // 3:
        changed += [(f"n{i % 10}", None if i % 3 else b"") for i in range(5_000)]
    return changed


def valid_messages(
    rng: random.Random, events: list[TrackingEvent]
) -> Iterator[tuple[bytes, bytes, Headers]]:
    """Each valid event in one of four encodings: binary, structured, structured with
    `data_base64`, or structured padded with an extension attribute to exactly the limit;
    with headers from `valid_headers`."""
    for index, event in enumerate(events):
        encoding = 3 if index == len(events) // 2 else rng.randrange(3)
        if encoding < 2:
            key, value, headers = (binary_message if encoding == 0 else structured_message)(event)
            yield key, value, valid_headers(rng, list(headers), index, len(events))
        else:
            cloudevent = {k: v for k, v in _object(event).items() if k != "data"}
            if encoding == 2:
                cloudevent["data_base64"] = base64.b64encode(orjson.dumps(event.data)).decode()
            else:
                cloudevent["data"] = dict(event.data)
                room = MAX_EVENT_BYTES - len(orjson.dumps({**cloudevent, "padding": ""}))
                cloudevent["padding"] = "p" * room
            value = orjson.dumps(cloudevent)
            assert encoding == 2 or len(value) == MAX_EVENT_BYTES
            yield event.subject.encode(), value, valid_headers(rng, [], index, len(events))


def raw_name(rng: random.Random, event: TrackingEvent) -> Malformed:
    """A valid event but for one header name that is not UTF-8, anywhere among its headers."""
    key, value, headers = rng.choice([structured_message, binary_message])(event)
    changed: Headers = with_nulls(rng, headers)
    for name in rng.sample(RAW_NAMES, rng.randint(1, 2)):
        changed.insert(rng.randint(0, len(changed)), (RawName(name), rng.choice([b"v", None])))
    return _bad("raw-header-name", key, value, changed, "bad-header")


def raw_name_batches(
    rng: random.Random, events: list[TrackingEvent]
) -> list[tuple[int, list[Malformed]]]:
    """Per partition, one record batch: a malformed message, messages with raw header names,
    another malformed message. aiokafka's reader raised at the first raw name, so the records
    around them must be read too."""
    batches = []
    for partition in range(PARTITIONS):
        mine = [e for e in events if partition_of(e.subject, PARTITIONS) == partition]
        items = [null_value(rng, rng.choice(mine))]
        items += [raw_name(rng, rng.choice(mine)) for _ in range(rng.randint(1, 4))]
        items.append(null_key(rng, rng.choice(mine)))
        batches.append((partition, items))
    return batches


def send_raw(
    bootstrap: str, topic: str, batches: list[tuple[int, list[Malformed]]]
) -> dict[tuple[int, int], Malformed]:
    """Send each batch as one record batch to its partition; where each message landed."""
    records = [
        (p, [(item.key, item.value, item.headers) for item in items]) for p, items in batches
    ]
    firsts = asyncio.run(send_batches(bootstrap, topic, records))
    return {
        (partition, first + i): item
        for (partition, items), first in zip(batches, firsts, strict=True)
        for i, item in enumerate(items)
    }


def strays(events: list[TrackingEvent]) -> list[TrackingEvent]:
    """Valid events of contacts of their own, at the stream's end (so their late arrival on
    the owner, through the rerouted topic, changes nothing), to send to the wrong partition."""
    end = events[-1].time
    return [
        TrackingEvent(f"stray-{i}", "/test", e.type, end, f"stray-{i}", e.data)
        for i, e in enumerate(events[:STRAYS])
    ]


def send_strays(
    rng: random.Random, bootstrap: str, topic: str, events: list[TrackingEvent]
) -> dict[bytes, Headers]:
    """Send each stray, with null-valued headers, to a partition that does not own its key;
    the headers of each by key, which its forward must keep."""
    sent: dict[bytes, Headers] = {}
    producer = KeyedProducer(as_connection(bootstrap))
    for event in events:
        key, value, headers = rng.choice([structured_message, binary_message])(event)
        sent[key] = [*headers, ("ce_traceparent", None), ("x-null", None)]
        wrong = (partition_of(event.subject, PARTITIONS) + 1) % PARTITIONS
        producer.produce(topic, key, value, sent[key], wrong)
    producer.flush()
    return sent


def valid_stream() -> list[TrackingEvent]:
    """The simulated population, then one event per partition at the end (as in
    test_replay_equivalence), so every partition's stream time reaches the replay's end."""
    events = list(generate(CONTACTS, EVENTS, seed=5))
    end = events[-1].time
    return events + [
        TrackingEvent(
            id=f"end-{p}", source="/test", type="test.end", time=end,
            subject=key_on_partition(p, PARTITIONS, "end"),
        )
        for p in range(PARTITIONS)
    ]  # fmt: skip


def test_malformed_messages_are_dead_lettered_one_to_one_and_valid_events_applied(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    rng = random.Random(13)
    valid = valid_stream()
    bad = malformed_messages(rng, valid)
    worker = start_worker(partitions=PARTITIONS)
    assert worker.process is not None
    pid = worker.process.pid

    # Valid events keep their order; malformed ones go in between at random.
    slots = sorted(rng.sample(range(len(valid) + len(bad)), len(bad)))
    good = iter(valid_messages(rng, valid))
    pending = iter(enumerate(bad))
    config = {"message.max.bytes": 2 * BROKER_LIMIT}
    with EventPublisher(kafka_bootstrap, worker.topics.events, config=config) as publisher:
        next_slot = iter(slots)
        slot = next(next_slot, None)
        for position in range(len(valid) + len(bad)):
            if position == slot:
                number, item = next(pending)
                headers = [*item.headers, (FUZZ_HEADER, str(number).encode())]
                publisher.publish_raw(item.key, item.value, headers)
                slot = next(next_slot, None)
            else:
                publisher.publish_raw(*next(good))
    raw = send_raw(kafka_bootstrap, worker.topics.events, raw_name_batches(rng, valid))
    stray = strays(valid)
    stray_headers = send_strays(rng, kafka_bootstrap, worker.topics.events, stray)

    # Where each malformed message landed, read back from the input topic.
    where: dict[tuple[int, int], Malformed] = dict(raw)
    sent_headers = {origin: item.headers for origin, item in raw.items()}
    for message in TopicReader(kafka_bootstrap, worker.topics.events).catch_up(60):
        origin = (message.partition(), message.offset())
        if origin in raw:
            continue  # confluent-kafka cannot read its headers; placed when sent
        number = dict(message.headers() or []).get(FUZZ_HEADER)
        if number is not None:
            where[origin] = bad[int(number)]
            sent_headers[origin] = [*where[origin].headers, (FUZZ_HEADER, number)]
    assert len(where) == len(bad) + len(raw)

    plans = load_plans(EXAMPLE_PLANS)
    expected_scores, expected_alerts = expected_outcome(valid + stray, plans)
    applied = replay(valid + stray, plans).outcomes[Outcome.APPLIED]
    updates = TopicReader(kafka_bootstrap, worker.topics.updates)
    alerts = TopicReader(kafka_bootstrap, worker.topics.alerts)
    dead = TopicReader(kafka_bootstrap, worker.topics.dead_letters)

    def settled() -> bool:
        assert worker.process is not None and worker.process.poll() is None, worker.log(200)
        return (
            len(dead.catch_up(60)) >= len(where)
            and not differences(expected_scores, scores_from_updates(updates.values(), plans))
            and {alert["id"] for alert in alerts.values()} == expected_alerts
        )

    try:
        wait_until(settled, 180, "every dead letter, and the scores of the valid events", 1.0)
    except AssertionError:
        scores = scores_from_updates(updates.values(), plans)
        pytest.fail(
            f"dead letters {len(dead.messages)} of {len(where)}\n"
            + "\n".join(differences(expected_scores, scores))
            + f"\n{worker.log()}"
        )

    reasons: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    found: set[tuple[int, int]] = set()
    for letter in dead.messages:
        headers = {n: v for n, v in letter.headers() if n.startswith(DLQ_HEADER)}
        origin = (int(headers[DLQ_HEADER + "partition"]), int(headers[DLQ_HEADER + "offset"]))
        item = where[origin]  # a dead letter of a valid event would fail here
        assert origin not in found, f"two dead letters for {item.kind} at {origin}"
        found.add(origin)
        reason = headers[DLQ_HEADER + "reason"].decode()
        assert reason in item.reasons, f"{item.kind}: {reason} not in {sorted(item.reasons)}"
        assert headers[DLQ_HEADER + "error"]
        if TRUNCATED_HEADER not in headers:
            assert letter.key() == item.key and letter.value() == item.value
            original = [(n, v) for n, v in letter.headers() if not n.startswith(DLQ_HEADER)]
            assert original == sent_headers[origin], item.kind
        reasons[reason] += 1
        kinds[item.kind] += 1
    assert found == set(where)
    made = {m.__name__.replace("_", "-") for m in MAKERS}
    assert kinds.keys() == made | {"size-limit", "raw-header-name"}

    # The strays' forwards keep their headers as they were, nulls included.
    forwards = TopicReader(kafka_bootstrap, worker.topics.rerouted).catch_up(60)
    kept = {
        m.key(): [(n, v) for n, v in m.headers() if not n.startswith("leadscore.rerouted.")]
        for m in forwards
    }
    assert kept == stray_headers

    metrics = worker.metrics()
    dead_lettered = sum(
        v for k, v in metrics.items() if k.startswith("leadscore_events_dead_lettered_total{")
    )
    assert dead_lettered == len(where)
    assert metrics["leadscore_dead_letters_truncated_total"] == 1
    assert worker.consumed("applied") == applied
    assert metrics.get(series("leadscore_scoring_errors_total", input="event"), 0) == 0
    assert worker.process.poll() is None and worker.process.pid == pid
    log = worker.log(10_000)
    for sign in ("Traceback", "CRITICAL", "crashed", "scoring failed", "stopping"):
        assert sign not in log, log
    print(
        f"\nfuzz: {len(where):,} malformed, {len(valid) + len(stray):,} valid; "
        f"by reason: {dict(reasons.most_common())}"
    )
    print(f"fuzz: by kind: {dict(kinds.most_common())}")
