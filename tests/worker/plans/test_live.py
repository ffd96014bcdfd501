"""Installing plan versions in a running worker: the rules, the metrics, the rescore hook."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from streams.models.plan_versions import PlanHistory, PlanVersion, parse_plan_version
from streams.worker.plans.live import LivePlans, Result
from streams.worker.plans.topic import Unusable
from tests.worker.harness import EXAMPLE_PLANS, parse_metrics, series

TEXT = EXAMPLE_PLANS.read_text()


def version(label: str, start: str | None = None, change: str = "forward") -> PlanVersion:
    head = f"version: {label}\nchange: {change}\n"
    if start is not None:
        head += f'effective_from: "{start}"\n'
    return parse_plan_version(head + TEXT, f"{label}.yaml")


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Rescorer:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def rescore(self, history: PlanHistory, version: PlanVersion) -> None:
        self.calls.append((len(history.versions), version.label))


@pytest.fixture
def clock() -> _Clock:
    return _Clock(1_767_225_600.0)  # 2026-01-01T00:00:00Z


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def live(clock: _Clock, registry: CollectorRegistry) -> LivePlans:
    return LivePlans(PlanHistory((version("v1"),)), registry, clock)


def metrics(registry: CollectorRegistry) -> dict[str, float]:
    return parse_metrics(generate_latest(registry).decode())


def reloads(registry: CollectorRegistry, result: str) -> float:
    return metrics(registry)[series("leadscore_plan_reloads_total", result=result)]


def info(registry: CollectorRegistry) -> dict[str, str]:
    """Version label -> state of the version gauge's series."""
    prefix = "leadscore_plan_version_info{"
    found = {}
    for name, value in metrics(registry).items():
        if name.startswith(prefix) and value == 1:
            labels = dict(pair.split("=") for pair in name[len(prefix) : -1].split(","))
            found[labels["state"].strip('"')] = labels["version"].strip('"')
    return found


def test_a_version_takes_over_at_its_start_and_shows_as_pending_until_then(
    live: LivePlans, registry: CollectorRegistry, clock: _Clock
) -> None:
    assert live.install(version("v2", "2026-01-02T00:00:00Z")) is Result.INSTALLED
    assert [v.label for v in live.history.versions] == ["v1", "v2"]
    live.refresh()
    assert info(registry) == {"current": "v1", "pending": "v2"}
    assert live.current.version == "v1"  # what GET /leads names thresholds by
    clock.now += 86_400
    live.refresh()
    assert info(registry) == {"current": "v2"}
    assert live.current.version == "v2"
    assert reloads(registry, "installed") == 1


def test_a_version_without_effective_from_takes_over_at_the_workers_time(
    live: LivePlans, clock: _Clock
) -> None:
    live.install(version("v2"))
    assert live.history.start(1) == clock.now


def test_the_same_version_again_changes_nothing(
    live: LivePlans, registry: CollectorRegistry
) -> None:
    assert live.install(version("v1")) is Result.UNCHANGED
    assert len(live.history.versions) == 1
    assert reloads(registry, "unchanged") == 1


@pytest.mark.parametrize(
    ("offered", "message"),
    [
        pytest.param(
            parse_plan_version("version: v1\n" + TEXT.replace("points: 20", "points: 25")),
            "already installed with other content",
            id="a-label-reused",
        ),
        pytest.param(version("v0", "2025-12-31T00:00:00Z"), "takes over before", id="earlier"),
    ],
)
def test_a_conflicting_version_is_refused_and_scoring_goes_on_with_the_history(
    clock: _Clock,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    offered: PlanVersion,
    message: str,
) -> None:
    live = LivePlans(PlanHistory((version("v1"),)), registry, clock)
    live.install(version("v2", "2026-01-01T00:00:00Z"))
    history = live.history
    with caplog.at_level(logging.ERROR):
        assert live.install(offered) is Result.OUT_OF_ORDER
    assert live.history is history
    assert message in caplog.text
    assert reloads(registry, "out-of-order") == 1


def test_an_unreadable_version_is_counted_by_reason(
    live: LivePlans, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        assert live.refused(Unusable.NEWER_FORMAT, "format 2") is Result.NEWER_FORMAT
    assert "still scoring with version v1" in caplog.text
    assert reloads(registry, "newer-format") == 1
    assert reloads(registry, "invalid") == 0  # every result has a series from the start


def test_a_rescore_version_is_handed_to_the_rescorer_once_installed(
    clock: _Clock, registry: CollectorRegistry
) -> None:
    rescorer = _Rescorer()
    live = LivePlans(PlanHistory((version("v1"),)), registry, clock, rescorer)
    live.install(version("v2", "2026-01-02T00:00:00Z"))
    live.install(version("v3", "2026-01-03T00:00:00Z", change="rescore"))
    assert rescorer.calls == [(3, "v3")]
