"""`GET /leads` and `GET /leads/counts`: the hottest contacts and segment sizes, cluster-wide.

Any worker answers. It reads its own partitions' leads index (`streams.worker.state.lead_index`)
and asks every other worker that owns partitions (Faust's assignment metadata, as the contact
look-up's router does) for theirs, through internal views that answer per partition. The
answers are merged in index order: score, highest first, then the latest change, then the
contact id, so pages are stable, and a cursor (the position of a page's last entry) continues
in every partition at once.

A partition is counted once, from the first answer that includes it. One that nobody answered
(a rebalance, a worker recovering, or one that did not answer within `ASK_TIMEOUT`) is named
in `missing_partitions` with `"partial": true`: an answer is never silently short.

Thresholds are those of the plan in force now (`LivePlans.current`); a contact still scored
with an older version is placed by its score.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import aiohttp
import faust
from faust import web
from yarl import URL

from streams.models.plans import Plan, PlanSet
from streams.models.times import format_time
from streams.worker.state.lead_index import Entry, at_or_above
from streams.worker.state.store import ContactStore

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
ASK_TIMEOUT = 2.0
"""Seconds another worker has to answer before its partitions are reported missing."""
LOCAL_PATH = "/leads/partitions"
LOCAL_COUNTS_PATH = "/leads/partitions/counts"
BAD_REQUEST = 400

PartitionEntries = dict[int, list[Entry]]
PartitionCounts = dict[int, list[tuple[int, int]]]


class QueryError(ValueError):
    """A query that cannot be answered as asked; the message says which parameter and why."""

    def __init__(self, message: str, status: int = BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class LeadsQuery:
    plan: str
    min_score: int | None
    limit: int
    after: bytes | None
    """The cursor: the index position of the previous page's last entry."""


def encode_cursor(position: bytes) -> str:
    return base64.urlsafe_b64encode(position).decode().rstrip("=")


def decode_cursor(cursor: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise QueryError("cursor: not a cursor of GET /leads") from None


def _integer(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise QueryError(f"{name}: expected an integer, got {text!r}") from None


def plan_named(plans: PlanSet, params: Mapping[str, str]) -> Plan:
    """The `plan` parameter's plan among the active plans in force."""
    name = params.get("plan")
    active = [plan.name for plan in plans]
    if not name:
        raise QueryError(f"plan: required, one of {', '.join(active)}")
    plan = next((plan for plan in plans if plan.name == name), None)
    if plan is None:
        raise QueryError(f"plan: no active plan {name!r}; active: {', '.join(active)}", 404)
    return plan


def parse_query(params: Mapping[str, str], plans: PlanSet) -> LeadsQuery:
    """`plan`, then `threshold` (a name) or `min_score`, `limit` and `cursor`."""
    plan = plan_named(plans, params)
    min_score = _integer(params, "min_score")
    threshold = params.get("threshold")
    if threshold is not None:
        if min_score is not None:
            raise QueryError("give threshold or min_score, not both")
        named = next((t for t in plan.thresholds if t.name == threshold), None)
        if named is None:
            known = ", ".join(t.name for t in plan.thresholds) or "none"
            raise QueryError(f"threshold: plan {plan.name} has no {threshold!r}; it has {known}")
        min_score = named.score
    limit = _integer(params, "limit")
    limit = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit: expected 1 to {MAX_LIMIT:,}, got {limit}")
    cursor = params.get("cursor")
    after = None if not cursor else decode_cursor(cursor)
    return LeadsQuery(plan.name, min_score, limit, after)


def local_entries(
    store: ContactStore, partitions: Iterable[int], query: LeadsQuery
) -> PartitionEntries:
    """Each partition's first `limit` entries after the cursor: a page can need them all."""
    return {
        p: store.leads(p, query.plan, query.min_score, query.after, query.limit) for p in partitions
    }


def local_counts(store: ContactStore, partitions: Iterable[int], plan: str) -> PartitionCounts:
    return {p: store.score_counts(p, plan) for p in partitions}


def page(answers: PartitionEntries, limit: int) -> tuple[list[Entry], bytes | None]:
    """The first `limit` entries of every partition's, in index order, and the cursor of the
    next page (None when this one holds everything left)."""
    merged = heapq.merge(*answers.values(), key=lambda entry: entry.position)
    taken = list(islice(merged, limit + 1))
    if len(taken) > limit:
        return taken[:limit], taken[limit - 1].position
    return taken, None


def threshold_counts(plan: Plan, counts: PartitionCounts) -> dict[str, int]:
    """Contacts at or above each of the plan's thresholds."""
    histogram: Counter[int] = Counter()
    for partition_counts in counts.values():
        for score, count in partition_counts:
            histogram[score] += count
    scores = sorted(histogram.items(), reverse=True)
    return {t.name: at_or_above(scores, t.score) for t in plan.thresholds}


def segment_sizes(
    store: ContactStore, partitions: Iterable[int], plans: PlanSet
) -> dict[tuple[str, str], int]:
    """(plan, threshold) -> contacts at or above it on `partitions`: the gauges' values."""
    owned = list(partitions)
    return {
        (plan.name, threshold): count
        for plan in plans
        for threshold, count in threshold_counts(
            plan, local_counts(store, owned, plan.name)
        ).items()
    }


# --- the wire between workers ----------------------------------------------------------------


def entries_json(answers: PartitionEntries, limit: int) -> dict[str, Any]:
    """The partitions answered, and only the first `limit` of their entries together: no
    other entry of theirs can be on the page. Each entry names its partition, so that a
    partition two workers answered for (a rebalance) is taken from one of them only."""
    merged = heapq.merge(
        *([(p, e) for e in found] for p, found in answers.items()),
        key=lambda tagged: tagged[1].position,
    )
    return {
        "partitions": sorted(answers),
        "entries": [
            [p, encode_cursor(e.position), e.contact_id, e.score, e.changed_at]
            for p, e in islice(merged, limit)
        ],
    }


def entries_from_json(body: Mapping[str, Any]) -> PartitionEntries:
    answers: PartitionEntries = {int(p): [] for p in body["partitions"]}
    for p, position, contact_id, score, changed_at in body["entries"]:
        answers[p].append(Entry(decode_cursor(position), contact_id, score, changed_at))
    return answers


def counts_json(counts: PartitionCounts) -> dict[str, Any]:
    return {"partitions": {str(p): found for p, found in counts.items()}}


def counts_from_json(body: Mapping[str, Any]) -> PartitionCounts:
    return {
        int(p): [(score, count) for score, count in found]
        for p, found in body["partitions"].items()
    }


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the leads views need from the worker (kept narrow: this module does not import
    the app)."""

    store: Callable[[], ContactStore]
    ready: Callable[[], bool]
    active_partitions: Callable[[], list[int]]
    partitions: int
    owners: Callable[[], Mapping[str, Iterable[int]]]
    """Worker URL -> the partitions it owns, as the group's last assignment says."""
    own_url: str
    http: Callable[[], aiohttp.ClientSession]

    def owned(self) -> list[int]:
        """The partitions this worker can answer for now (none while it recovers)."""
        return self.active_partitions() if self.ready() else []

    async def gather(
        self,
        local: Callable[[list[int]], dict[int, Any]],
        path: str,
        params: Mapping[str, str],
        parse: Callable[[Mapping[str, Any]], dict[int, Any]],
    ) -> tuple[dict[int, Any], list[int]]:
        """Every partition's answer (own ones read here, the others asked of their owners),
        and the partitions nobody answered."""
        owned = self.owned()
        others = [
            url
            for url, partitions in self.owners().items()
            if not _same_worker(url, self.own_url) and set(partitions) - set(owned)
        ]
        asking = asyncio.gather(*(self._ask(url, path, params, parse) for url in others))
        answers: dict[int, Any] = dict(local(owned))
        for answered in await asking:
            for partition, answer in answered.items():
                answers.setdefault(partition, answer)
        missing = sorted(set(range(self.partitions)) - answers.keys())
        return answers, missing

    async def _ask(
        self,
        url: str,
        path: str,
        params: Mapping[str, str],
        parse: Callable[[Mapping[str, Any]], dict[int, Any]],
    ) -> dict[int, Any]:
        timeout = aiohttp.ClientTimeout(total=ASK_TIMEOUT)
        try:
            async with self.http().get(
                str(URL(url).with_path(path)), params=dict(params), timeout=timeout
            ) as response:
                if response.status != 200:
                    logger.info("GET %s%s answered %s", url, path, response.status)
                    return {}
                return parse(await response.json())
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as error:
            logger.info("GET %s%s failed: %s", url, path, error or type(error).__name__)
            return {}


def _same_worker(url: str, own: str) -> bool:
    a, b = URL(url), URL(own)
    return (a.host, a.port) == (b.host, b.port)


def _missing(missing: list[int]) -> dict[str, Any]:
    return {"partial": bool(missing), "missing_partitions": missing}


def register_lead_views(app: faust.App, cluster: Cluster, plans: Callable[[], PlanSet]) -> None:
    """`GET /leads`, `GET /leads/counts`, and the per-partition views workers ask each other."""

    def refused(view: web.View, error: QueryError) -> web.Response:
        return view.json({"error": str(error)}, status=error.status)

    @app.page("/leads")
    async def leads(view: web.View, request: web.Request) -> web.Response:
        """The contacts of a plan at or above a threshold or score, highest first, paged."""
        try:
            query = parse_query(request.query, plans())
        except QueryError as error:
            return refused(view, error)
        answers, missing = await cluster.gather(
            lambda owned: local_entries(cluster.store(), owned, query),
            LOCAL_PATH,
            _wire_params(query),
            entries_from_json,
        )
        found, after = page(answers, query.limit)
        return view.json(
            {
                "plan": query.plan,
                "min_score": query.min_score,
                "leads": [
                    {
                        "contact_id": e.contact_id,
                        "score": e.score,
                        "changed_at": format_time(e.changed_at),
                    }
                    for e in found
                ],
                "next": None if after is None else encode_cursor(after),
                **_missing(missing),
            }
        )

    @app.page("/leads/counts")
    async def counts(view: web.View, request: web.Request) -> web.Response:
        """Contacts at or above each threshold of a plan."""
        try:
            plan = plan_named(plans(), request.query)
        except QueryError as error:
            return refused(view, error)
        answers, missing = await cluster.gather(
            lambda owned: local_counts(cluster.store(), owned, plan.name),
            LOCAL_COUNTS_PATH,
            {"plan": plan.name},
            counts_from_json,
        )
        return view.json(
            {
                "plan": plan.name,
                "thresholds": threshold_counts(plan, answers),
                **_missing(missing),
            }
        )

    @app.page(LOCAL_PATH)
    async def partition_leads(view: web.View, request: web.Request) -> web.Response:
        """This worker's share of a `GET /leads`, per partition (for the other workers)."""
        params = request.query
        try:
            query = LeadsQuery(
                params["plan"],
                _integer(params, "min_score"),
                min(_integer(params, "limit") or DEFAULT_LIMIT, MAX_LIMIT),
                decode_cursor(params["cursor"]) if params.get("cursor") else None,
            )
        except (QueryError, KeyError) as error:
            return view.json({"error": str(error)}, status=BAD_REQUEST)
        found = local_entries(cluster.store(), cluster.owned(), query)
        return view.json(entries_json(found, query.limit))

    @app.page(LOCAL_COUNTS_PATH)
    async def partition_counts(view: web.View, request: web.Request) -> web.Response:
        """This worker's share of a `GET /leads/counts`, per partition."""
        plan = request.query.get("plan", "")
        return view.json(counts_json(local_counts(cluster.store(), cluster.owned(), plan)))


def _wire_params(query: LeadsQuery) -> dict[str, str]:
    params = {"plan": query.plan, "limit": str(query.limit)}
    if query.min_score is not None:
        params["min_score"] = str(query.min_score)
    if query.after is not None:
        params["cursor"] = encode_cursor(query.after)
    return params
