"""`GET /leads` without a broker: parameters, merging partitions into stable pages, the cursor,
and answers that say which partitions they miss."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.harness import free_port
from streams.scoring import load_plans
from streams.worker.state.lead_index import Entry, order_suffix
from streams.worker.state.store import ContactStore
from streams.worker.web.leads_query import (
    LOCAL_PATH,
    MAX_LIMIT,
    Cluster,
    QueryError,
    decode_cursor,
    encode_cursor,
    entries_from_json,
    entries_json,
    page,
    parse_query,
    threshold_counts,
)
from tests.worker.harness import EXAMPLE_PLANS

PLANS = load_plans(EXAMPLE_PLANS)


def _entry(contact: str, score: int, changed_at: float) -> Entry:
    return Entry(order_suffix(score, changed_at) + contact.encode(), contact, score, changed_at)


def test_a_threshold_is_the_plan_s_score_and_bad_parameters_say_which() -> None:
    query = parse_query({"plan": "lead-score", "threshold": "warm"}, PLANS)
    assert (query.plan, query.min_score, query.limit, query.after) == ("lead-score", 100, 100, None)
    assert parse_query({"plan": "icp-fit", "min_score": "-5", "limit": "7"}, PLANS).min_score == -5
    refused = {
        "plan: required": {},
        "no active plan 'nope'": {"plan": "nope"},
        "has no 'tepid'; it has warm, hot": {"plan": "lead-score", "threshold": "tepid"},
        "not both": {"plan": "lead-score", "threshold": "warm", "min_score": "1"},
        "min_score: expected an integer": {"plan": "lead-score", "min_score": "high"},
        f"limit: expected 1 to {MAX_LIMIT:,}": {"plan": "lead-score", "limit": str(MAX_LIMIT + 1)},
        "cursor: not a cursor": {"plan": "lead-score", "cursor": "a"},
    }
    for message, params in refused.items():
        with pytest.raises(QueryError, match=message):
            parse_query(params, PLANS)
    with pytest.raises(QueryError) as unknown:
        parse_query({"plan": "nope"}, PLANS)
    assert unknown.value.status == 404


def test_pages_merge_partitions_in_order_and_the_cursor_continues_them_all() -> None:
    everyone = [_entry(f"c{i:02d}", score=(i * 7) % 5, changed_at=float(i % 3)) for i in range(30)]
    by_partition = {p: sorted(everyone[p::3], key=lambda e: e.position) for p in range(3)}
    expected = sorted(everyone, key=lambda e: (-e.score, -e.changed_at, e.contact_id))

    pages: list[list[Entry]] = []
    after: bytes | None = None
    while True:
        answers = {  # what each partition's index gives for the page
            p: [e for e in found if after is None or e.position > after][:4]
            for p, found in by_partition.items()
        }
        found, after = page(answers, 4)
        pages.append(found)
        if after is None:
            break
    assert [e.contact_id for p in pages for e in p] == [e.contact_id for e in expected]
    assert all(len(p) == 4 for p in pages[:-1])
    assert decode_cursor(encode_cursor(expected[3].position)) == expected[3].position


def test_a_worker_sends_only_the_entries_that_can_be_on_the_page() -> None:
    answers = {
        0: [_entry("a", 5, 10.5), _entry("d", -2, 0.0)],
        2: [_entry("b", -1, 0.0), _entry("c", -1, 0.0)],
        4: [],
    }
    sent = entries_from_json(json.loads(json.dumps(entries_json(answers, 3))))
    assert sent == {
        0: [_entry("a", 5, 10.5)],
        2: [_entry("b", -1, 0.0), _entry("c", -1, 0.0)],
        4: [],
    }


def test_threshold_counts_add_partitions_up() -> None:
    plan = PLANS.get("lead-score")
    assert plan is not None
    counts = {0: [(250, 1), (100, 2), (10, 5)], 1: [(199, 3), (-4, 1)]}
    assert threshold_counts(plan, counts) == {"warm": 6, "hot": 1}


def _cluster(store: ContactStore, own: list[int], owners: Mapping[str, list[int]]) -> Cluster:
    session: list[aiohttp.ClientSession] = []

    def http() -> aiohttp.ClientSession:
        if not session:
            session.append(aiohttp.ClientSession())
        return session[0]

    return Cluster(
        lambda: store,
        lambda: True,
        lambda: own,
        4,
        lambda: owners,
        "http://127.0.0.1:1",
        http,
    )


def test_an_answer_names_the_partitions_nobody_answered(store: ContactStore) -> None:
    """Partition 0 is this worker's; another worker answers for 1 (and claims 2, which it
    does not have any more); the owner of 3 is gone. Partitions 2 and 3 are missing."""

    async def other(request: web.Request) -> web.Response:
        assert request.query["plan"] == "lead-score"
        return web.json_response(entries_json({1: [_entry("far", 9, 1.0)]}, 10))

    async def run() -> tuple[dict[int, Any], list[int]]:
        server = web.Application()
        server.router.add_get(LOCAL_PATH, other)
        runner = web.AppRunner(server)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        owners = {
            "http://127.0.0.1:1": [0],
            f"http://127.0.0.1:{port}": [1, 2],
            f"http://127.0.0.1:{free_port()}": [3],  # nobody listens there
        }
        cluster = _cluster(store, [0], owners)
        try:
            return await cluster.gather(
                lambda owned: {p: [_entry("near", 3, 1.0)] for p in owned},
                LOCAL_PATH,
                {"plan": "lead-score"},
                entries_from_json,
            )
        finally:
            await cluster.http().close()
            await runner.cleanup()

    answers, missing = asyncio.run(run())
    assert {p: [e.contact_id for e in found] for p, found in answers.items()} == {
        0: ["near"],
        1: ["far"],
    }
    assert missing == [2, 3]
