"""HTTP views on Faust's web server: contact look-up and history, health, readiness, metrics.

`GET /contacts/{id}` and `GET /contacts/{id}/history` go through `table_route`:
`ContactRouter` names the partition that owns the id (`streams.kafka.partitioning`, the same
answer the re-routing check and the producers use), finds the worker that owns that
partition, and proxies the request there, so any worker answers for any contact; the owner
reads the contact on that partition only. Faust's own `/table` and `/router` pages are
switched off (they would expose contact data and cluster topology); the server binds to
127.0.0.1 unless configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from faust import web
from faust.app.router import Router
from faust.types import K
from prometheus_client import CONTENT_TYPE_LATEST
from yarl import URL

from streams.kafka.partitioning import partition_for
from streams.scoring import contact_view, plans_for
from streams.worker.settings import setting_name
from streams.worker.state.history import history_view
from streams.worker.web.leads_query import Cluster, register_lead_views

if TYPE_CHECKING:
    from streams.worker.plans.live import LivePlans
    from streams.worker.runtime.faust_app import WorkerApp
    from streams.worker.settings import WorkerSettings
    from streams.worker.state.states import ContactStates, Held
    from streams.worker.state.store import ContactTable
    from streams.worker.web.metrics import Metrics

NOT_READY = 503


def contact_partition(contact_id: str, partitions: int) -> int:
    return partition_for(contact_id.encode(), partitions)


class ContactRouter(Router):
    """Faust's router, with the owner of a key named by `streams.kafka.partitioning`."""

    def key_store(self, table_name: str, key: K) -> URL:
        """The URL of the worker whose active partitions include the key's; a KeyError (no
        such worker, e.g. during a rebalance) makes Faust answer 503."""
        table = self._get_table(table_name)
        topic = self._get_table_topic(table)
        partition = contact_partition(str(key), table.partitions or 0)
        for url, topics in self.table_metadata(table_name).items():
            if partition in topics.get(topic, ()):
                return URL(url)
        raise KeyError(partition)


class Served(Protocol):
    """What the views read of a worker (`streams.worker.app.Worker`, which builds them): named
    here so that the views need not import the app that assembles everything."""

    @property
    def settings(self) -> WorkerSettings: ...
    @property
    def app(self) -> WorkerApp: ...
    @property
    def live(self) -> LivePlans: ...
    @property
    def table(self) -> ContactTable: ...
    @property
    def states(self) -> ContactStates: ...
    @property
    def metrics(self) -> Metrics: ...
    def ready(self) -> bool: ...
    def active_partitions(self) -> list[int]: ...
    async def refresh_metrics(self) -> None: ...


def register_views(worker: Served) -> None:
    app, states, live = worker.app, worker.states, worker.live
    partitions = worker.settings.partitions
    history_size = worker.settings.history_size

    def owned(view: web.View, contact_id: str) -> Held | web.Response | None:
        """The contact's state on its partition (None: unknown), or why this worker cannot
        say."""
        if not worker.ready():
            return view.json({"error": "not ready"}, status=NOT_READY)
        partition = contact_partition(contact_id, partitions)
        if partition not in worker.active_partitions():  # routed here with stale metadata
            return view.json({"error": "not the contact's owner"}, status=NOT_READY)
        return states.durable(partition, contact_id)  # changes with /leads, at the commit

    def unknown(view: web.View, contact_id: str) -> web.Response:
        return view.json({"error": "unknown contact", "contact_id": contact_id}, status=404)

    @app.page("/contacts/{contact_id}")
    @app.table_route(table=worker.table, match_info="contact_id")
    async def contact(view: web.View, request: web.Request, contact_id: str) -> web.Response:
        held = owned(view, contact_id)
        if isinstance(held, web.Response):
            return held
        body = (
            None if held is None else contact_view(held.state, plans_for(held.state, live.history))
        )
        if body is None:
            return unknown(view, contact_id)
        return view.json(body)

    @app.page("/contacts/{contact_id}/history")
    @app.table_route(table=worker.table, match_info="contact_id")
    async def history(view: web.View, request: web.Request, contact_id: str) -> web.Response:
        """The contact's last score changes per plan (`streams.worker.state.history`)."""
        if history_size == 0:
            off = f"score history is off: {setting_name('history_size')} is 0"
            return view.json({"error": off}, status=404)
        held = owned(view, contact_id)
        if isinstance(held, web.Response):
            return held
        if held is None or held.state.first_seen is None:  # never seen, or erased
            return unknown(view, contact_id)
        plan = request.query.get("plan")
        status, body = history_view(
            contact_id, held.history, plans_for(held.state, live.history), history_size, plan
        )
        return view.json(body, status=status)

    register_lead_views(
        app,
        Cluster(
            lambda: worker.table.store,
            worker.ready,
            worker.active_partitions,
            partitions,
            lambda: {
                url: topics.get(worker.table.changelog_topic.get_topic_name(), ())
                for url, topics in app.router.table_metadata(worker.table.name).items()
            },
            worker.settings.web_url,
            lambda: app.http_client,
        ),
        lambda: live.current,
    )

    @app.page("/healthz")
    async def healthz(view: web.View, request: web.Request) -> web.Response:
        """Alive: the process serves HTTP and its app has not crashed."""
        if app.crashed:
            return view.json({"status": "crashed"}, status=NOT_READY)
        return view.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(view: web.View, request: web.Request) -> web.Response:
        """Ready: table state recovered from the changelog and partitions assigned."""
        if worker.ready():
            return view.json({"status": "ready", "partitions": worker.active_partitions()})
        status = "recovering" if app.in_recovery else "starting"
        return view.json({"status": status}, status=NOT_READY)

    @app.page("/metrics")
    async def metrics(view: web.View, request: web.Request) -> web.Response:
        await worker.refresh_metrics()
        return view.bytes(
            worker.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
