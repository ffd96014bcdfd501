"""The worker's exposition: its own registry with the process, GC and platform collectors, in a
format Prometheus' own checker accepts, on a real worker too."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from streams.kafka.client import EventPublisher
from streams.worker.web.metrics import Metrics
from tests.support import event
from tests.worker.conftest import StartWorker
from tests.worker.harness import http_get, parse_metrics, series, wait_until

PROMTOOL = shutil.which("promtool")
COLLECTED = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    series("python_gc_collections_total", generation="0"),
)


def _promtool_check(exposition: bytes) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        check=False,
        input=exposition,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


def test_each_registry_has_the_process_gc_and_platform_collectors() -> None:
    """Two workers in one process (as in tests) each expose them, in their own registry."""
    for metrics in (Metrics(), Metrics()):
        values = parse_metrics(metrics.exposition().decode())
        assert values["process_resident_memory_bytes"] > 0
        assert all(name in values for name in COLLECTED)
        assert any(name.startswith("python_info{") for name in values)


def test_the_exposition_passes_promtool_with_every_family_sampled() -> None:
    metrics = Metrics(["custom.thing"])
    metrics.events.labels("email.opened", "applied").inc()
    metrics.dead_letters.labels("not-json").inc()
    metrics.scoring_errors.labels("event").inc()
    metrics.alerts.labels("lead-score", "leadscore.threshold.crossed").inc()
    metrics.updates.labels("lead-score").inc()
    metrics.timer_changes.labels("lead-score").inc()
    metrics.lag.labels("tracking-events", "0").set(3)
    for histogram in (metrics.processing_delay, metrics.event_to_output, metrics.agent_time):
        histogram.observe(0.02)
    _promtool_check(metrics.exposition())


@pytest.mark.integration
def test_a_real_worker_s_metrics_pass_promtool(
    start_worker: StartWorker, kafka_bootstrap: str
) -> None:
    if PROMTOOL is None:  # before starting a worker for nothing
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    worker = start_worker()
    with EventPublisher(kafka_bootstrap, worker.topics.events) as publisher:
        publisher.publish(event("email.replied", 0, contact="p-1"))
    delay = "leadscore_processing_delay_seconds_count"
    wait_until(lambda: worker.metrics().get(delay, 0) >= 1, 60, "a processing delay sample")
    status, text = http_get(worker.url + "/metrics")
    assert status == 200
    assert all(name in worker.metrics() for name in COLLECTED)
    _promtool_check(text.encode())
