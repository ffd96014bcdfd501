"""HTTP views on Faust's web server: contact look-up, health, readiness, metrics.

`GET /contacts/{id}` goes through `table_route`: Faust hashes the id like the producers do,
finds the worker that owns that partition, and proxies the request there, so any worker
answers for any contact. Faust's own `/table` and `/router` pages are switched off (they would
expose contact data and cluster topology); the server binds to 127.0.0.1 unless configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faust import web
from prometheus_client import CONTENT_TYPE_LATEST

from streams.scoring import contact_view

if TYPE_CHECKING:
    from streams.worker.app import Worker

NOT_READY = 503


def register_views(worker: Worker) -> None:
    app, states, plans = worker.app, worker.states, worker.plans

    @app.page("/contacts/{contact_id}")
    @app.table_route(table=worker.table, match_info="contact_id")
    async def contact(view: web.View, request: web.Request, contact_id: str) -> web.Response:
        if not worker.ready():
            return view.json({"error": "not ready"}, status=NOT_READY)
        held = states.get(None, contact_id)
        body = None if held is None else contact_view(held.state, plans)
        if body is None:
            return view.json({"error": "unknown contact", "contact_id": contact_id}, status=404)
        return view.json(body)

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
