"""Where a worker's plan versions come from: the plans file (reloaded on SIGHUP), or the plans
topic, read to its end before the worker consumes anything and followed while it runs.

Both hand every new version to `LivePlans.install`, with the same rules: a version that cannot
be used is logged and counted, and the worker keeps scoring with the history it has.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import faust

from streams.kafka.security import KafkaConnection
from streams.models.plan_file import PlanError
from streams.models.plan_versions import PlanHistory, PlanVersion, load_plan_version
from streams.worker.plans.live import LivePlans
from streams.worker.plans.topic import (
    PlanRecord,
    PlanTopicReader,
    Unusable,
    UnusableVersionError,
    decode_version,
)

logger = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
"""Seconds between looks at the plans topic: how late a worker may learn of a version (publish
it well before its `effective_from`)."""


class NoPlanVersionError(RuntimeError):
    """The plans topic holds no version this worker can score with: it cannot start."""


class PlanSource(Protocol):
    history: PlanHistory
    """What the worker starts with."""

    def follow(self, live: LivePlans, app: faust.App) -> None:
        """Hand the versions that come later to `live`, while `app` runs."""


class FileSource:
    """`--plans FILE`: read at start, read again on SIGHUP."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history = PlanHistory((load_plan_version(path),))  # PlanError: the start fails

    def follow(self, live: LivePlans, app: faust.App) -> None:
        on_sighup(app, lambda: self.reload(live))

    def reload(self, live: LivePlans) -> None:
        """Read the file again; an invalid one is refused, an unchanged one is a no-op."""
        logger.info("SIGHUP: reading %s again", self.path)
        try:
            version = load_plan_version(self.path)
        except PlanError as error:
            live.refused(Unusable.INVALID, str(error))
            return
        live.install(version)


class TopicSource:
    """`--plans-topic`: every version published to `<prefix>leadscore-plans`, in order."""

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self._reader = PlanTopicReader(kafka, topic)
        if not self._reader.exists():
            self._reader.close()
            raise NoPlanVersionError(_publish_hint(topic, "does not exist"))
        records = self._reader.read_to_end()
        usable = ((i, v) for i, r in enumerate(records) if (v := _usable(r)) is not None)
        first = next(usable, None)
        if first is None:
            self._reader.close()
            raise NoPlanVersionError(_publish_hint(topic, "holds no version it can use"))
        index, version = first
        self.history = PlanHistory((version,))
        self._backlog = records[:index] + records[index + 1 :]
        """The other records read at start, installed (or refused) once the worker's
        metrics exist, in topic order; those before the first usable one are refused."""

    def follow(self, live: LivePlans, app: faust.App) -> None:
        for record in self._backlog:
            offer(live, record)
        self._backlog = []
        on_sighup(app, lambda: logger.info("SIGHUP ignored: the plans come from the topic"))

        async def poll() -> None:
            try:
                records = self._reader.poll()
            except Exception:  # the next look tries again; scoring goes on with what it has
                logger.exception("reading the plans topic failed")
                return
            for record in records:
                offer(live, record)

        app.timer(POLL_INTERVAL, name="plans-topic")(poll)


def on_sighup(app: faust.App, handler: Callable[[], None]) -> None:
    """Call `handler` on SIGHUP once the app runs (SIGHUP would stop it otherwise)."""

    async def install() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)

    app.task(install)


def offer(live: LivePlans, record: PlanRecord) -> None:
    """Install the record's version, or count why it cannot be."""
    if record.value is None:
        logger.info("%s: a tombstone; a published version stays installed", record.origin)
        return
    try:
        version = decode_version(record.key, record.value, record.origin)
    except UnusableVersionError as error:
        live.refused(error.reason, str(error))
        return
    live.install(version)


def _usable(record: PlanRecord) -> PlanVersion | None:
    if record.value is None:
        return None
    try:
        return decode_version(record.key, record.value, record.origin)
    except UnusableVersionError:  # refused, with its log line and count, by `follow`
        return None


def _publish_hint(topic: str, what: str) -> str:
    return (
        f"the plans topic {topic} {what}: publish one with `leadscore plans publish "
        "plans.yaml --bootstrap HOST:PORT` (same --topic-prefix), or start with --plans FILE"
    )
