"""The plan history a worker scores with, and how a new version gets into it.

Every part that scores or shows a contact (the processor, the states' deadlines, the timers'
switch passes, the HTTP view) reads `LivePlans.history` when it needs it, so installing a
version is one assignment on the event loop: the next event, tick or look-up sees it. A
version that cannot be used is logged and counted, and the history stays as it was: the worker
never stops scoring because of a plan.

A version with `change: rescore` is installed, then handed to `Rescorer.rescore`: time takes
no contact into it (`streams.scoring.engine`), the worker's rebuild of each partition from
the input topic's history does (`streams.worker.rescore.rescoring`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from streams.models.plan_versions import Change, PlanHistory, PlanVersion
from streams.models.plans import PlanSet
from streams.worker.plans.topic import Unusable

logger = logging.getLogger(__name__)


class Result(StrEnum):
    """What became of a version offered to the worker: the `result` label of
    `leadscore_plan_reloads_total`."""

    INSTALLED = "installed"
    UNCHANGED = "unchanged"
    """The same label and text as a version already installed (a SIGHUP with no edit)."""
    INVALID = Unusable.INVALID.value
    NEWER_FORMAT = Unusable.NEWER_FORMAT.value
    OUT_OF_ORDER = "out-of-order"
    """It takes over earlier than the latest version, or reuses a label with other content."""


class Rescorer(Protocol):
    """Rebuilds the states under a `change: rescore` version once it is installed."""

    def rescore(self, history: PlanHistory, version: PlanVersion) -> None: ...


class NoRebuild:
    """The rescorer of a `LivePlans` built without one (tests of installing alone): contacts
    stay on the version before the rescore, and the log says so."""

    def rescore(self, history: PlanHistory, version: PlanVersion) -> None:
        logger.warning(
            "plan %s asks for a rescore and nothing rebuilds the states here: contacts keep "
            "the version before it",
            version.describe(),
        )


class LivePlans:
    """The current history, installing versions, and the two plan metrics."""

    def __init__(
        self,
        history: PlanHistory,
        registry: CollectorRegistry,
        now: Callable[[], float],
        rescorer: Rescorer | None = None,
    ) -> None:
        self.history = history
        self._now = now
        """The worker's time (wall or stream time, as `--clock` says): a version without
        `effective_from` takes over then, and it decides which version is in force."""
        self.rescorer: Rescorer = rescorer or NoRebuild()
        self._info = Gauge(
            "leadscore_plan_version_info",
            "1 for the plan version in force now (state=current) and for each version "
            "installed to take over later (state=pending).",
            ["version", "state"],
            registry=registry,
        )
        self._reloads = Counter(
            "leadscore_plan_reloads",
            "Plan versions offered to the worker (from the plans topic, or the file on "
            "SIGHUP), by result: installed, unchanged, invalid, newer-format, out-of-order.",
            ["result"],
            registry=registry,
        )
        for result in Result:
            self._reloads.labels(result.value)  # every series from 0, for rate() and alerts

    @property
    def current(self) -> PlanSet:
        """The plan set in force at the worker's time now (what `GET /leads` names plans and
        thresholds by)."""
        history = self.history
        return history.versions[history.index_at(self._now())].plans

    def install(self, version: PlanVersion) -> Result:
        """Add `version` to the history, taking over at its `effective_from` or now; or
        refuse it, with a log line, and keep the history as it is."""
        history = self.history
        known = history.index_of(version.label)
        if known is not None:
            same = history.versions[known].text == version.text
            if same:
                return self._count(Result.UNCHANGED)
            logger.error(
                "plan %s refused: its label is already installed with other content; "
                "give the new file its own `version:`",
                version.describe(),
            )
            return self._count(Result.OUT_OF_ORDER)
        version = version.installed_at(self._now())
        try:
            self.history = history.then(version)
        except ValueError as error:
            logger.error("plan %s refused: %s", version.describe(), error)
            return self._count(Result.OUT_OF_ORDER)
        logger.info("plan %s installed", version.describe())
        self.refresh()
        if version.change is Change.RESCORE:
            self.rescorer.rescore(self.history, version)
        return self._count(Result.INSTALLED)

    def refused(self, reason: Unusable, message: str) -> Result:
        """A version that could not even be read: count it; the history stays."""
        latest = self.history.latest.describe()
        logger.error("plan refused (%s): %s; still scoring with %s", reason.value, message, latest)
        return self._count(Result(reason.value))

    def refresh(self) -> None:
        """Set the version gauge for the worker's time now (at scrape time)."""
        history = self.history
        current = history.index_at(self._now())
        self._info.clear()
        for index in range(current, len(history.versions)):
            state = "current" if index == current else "pending"
            self._info.labels(history.versions[index].label, state).set(1)

    def _count(self, result: Result) -> Result:
        self._reloads.labels(result.value).inc()
        return result
