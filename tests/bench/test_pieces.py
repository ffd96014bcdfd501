"""The worker benchmark's helpers: what turns raw samples into the numbers it reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bench.harness import PLANS, cpu_seconds, metric_sum, parse_metrics
from bench.latency import percentile
from bench.pyspy import parse_frame, summarize
from bench.report import render_markdown
from bench.timer_cost import measure as measure_timer_passes
from bench.worker import FULL
from bench.worker import summarize as summarize_runs
from streams.kafka.broker import kafka_version


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.07) == 7  # 0.07 * 100 is 7.000000000000001 in floats
    assert percentile([3.0], 0.99) == 3
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_metrics_are_summed_over_matching_labels() -> None:
    metrics = parse_metrics(
        "# HELP leadscore_events_consumed_total Events.\n"
        'leadscore_events_consumed_total{outcome="applied",type="email.opened"} 3.0\n'
        'leadscore_events_consumed_total{outcome="duplicate",type="email.opened"} 1.0\n'
        'leadscore_events_consumed_total{outcome="applied",type="page.visited"} 2.0\n'
        "leadscore_contacts 7.0\n"
    )
    assert metric_sum(metrics, "leadscore_events_consumed_total") == 6
    assert metric_sum(metrics, "leadscore_events_consumed_total", 'outcome="applied"') == 5
    assert metric_sum(metrics, "leadscore_contacts") == 7
    assert metric_sum(metrics, "leadscore_contact") == 0  # a prefix is not a name


def test_cpu_seconds_reads_this_process() -> None:
    assert cpu_seconds(os.getpid()) > 0


PROFILE = """\
thread (1): MainThread;run (asyncio/base_events.py:1);Handle._run (asyncio/events.py:80);score (streams/worker/app.py:229);apply (streams/scoring/engine.py:103) 6
thread (1): MainThread;run (asyncio/base_events.py:1);Handle._run (asyncio/events.py:80);Fetcher._fetcher (faust/transport/consumer.py:9);wait_first (mode/services.py:5) 3
thread (1): MainThread;run (asyncio/base_events.py:1);select (selectors.py:468) 1
thread (2): Thread-1;run (asyncio/base_events.py:1);select (selectors.py:468) 10
"""


def test_profile_summary_describes_the_event_loop_thread() -> None:
    summary = summarize(PROFILE.splitlines())
    assert summary["samples"] == 10
    assert sorted((row["frame"], row["percent"]) for row in summary["threads"]) == [
        ("MainThread", 50.0),
        ("Thread-1", 50.0),
    ]
    assert summary["tasks"][0] == {"frame": "score > apply", "percent": 60.0}
    assert {"frame": "event loop itself: select", "percent": 10.0} in summary["tasks"]
    components = {row["frame"]: row["percent"] for row in summary["components"]}
    assert components["leadscore core (streams/scoring)"] == 60.0
    assert components["mode (faust's service framework)"] == 30.0
    inclusive = {row["frame"]: row["percent"] for row in summary["inclusive"]}
    assert inclusive["Handle._run (asyncio/events.py)"] == 90.0
    assert "run (asyncio/base_events.py)" not in inclusive  # on every stack: no information
    assert parse_frame("<module> (<string>:8)") == ("<module>", "<string>")


def test_timer_pass_costs_follow_the_due_count() -> None:
    result = measure_timer_passes(PLANS, 3_000, fractions=(0.0, 0.01, 0.1), repeats=1)
    assert [p["due"] for p in result["passes"]] == [0, 30, 300]
    assert result["switch_pass"]["ticks"] == 3_000  # after a plan version: every contact


def _run(eps: float, cpu: float) -> dict[str, Any]:
    throughput = {
        "events_per_second": eps,
        "cpu_us_per_event": cpu,
        "cpu_cores_busy": 0.9,
        "contacts": 100.0,
        "rss_mib": [100.0],
        "peak_rss_mib": [120.0],
        "disk_bytes_per_contact": 500.0,
        "ready_seconds": [3.0],
    }
    return {
        "baseline": {"events_per_second": eps * 10, "cpu_us_per_event": cpu / 10},
        "pair": {**throughput, "events_per_second": eps * 1.5},
        "single": throughput,
        "recovery": {"seconds": 5.0, "contacts": 100.0, "changelog_messages": 300},
    }


def test_summary_takes_medians_and_the_report_renders_them(tmp_path: Path) -> None:
    latency = {"p50_ms": 10.0, "p99_ms": 50.0, "max_ms": 80.0, "with_output": 8, "sent": 10}
    summary = summarize_runs(
        sizes=FULL,
        load_seconds={},
        per_run=[_run(1000, 900), _run(3000, 300), _run(2000, 400)],
        latencies={"1000": [latency, {**latency, "max_ms": 300.0}]},
        large=_run(1500, 500)["single"],
        large_recoveries=[{"seconds": 40.0, "contacts": 1000.0, "changelog_messages": 2000}],
        timers={
            "contacts": 1000,
            "passes": [
                {"due_fraction": 0.001, "due": 1, "median_seconds": 0.001},
                {"due_fraction": 0.01, "due": 10, "median_seconds": 0.008},
            ],
        },
        profile=None,
    )
    assert summary["worker_events_per_second"] == 2000
    assert summary["worker_to_baseline"] == pytest.approx(0.1)
    assert summary["two_workers_to_one"] == pytest.approx(1.5)
    assert summary["cpu_us_per_event"]["worker"] == 400
    assert summary["latency"]["1000"]["max_ms"] == 190
    assert summary["latency"]["1000"]["worst_max_ms"] == 300
    assert summary["timers"]["one_percent_to_tenth"] == pytest.approx(8)
    results = {
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "memory_gib": 24,
            "python": "CPython 3.11",
            "kafka": kafka_version(),
            "broker": "embedded",
        },
        "started": "now",
        "minutes": 1.0,
        "load_average_before": [0.5, 0.5, 0.5],
        "load_average_after": [1.0, 1.0, 1.0],
        "settings": {"runs": 3, "partitions": 6, "rates": [1000.0], "worker": "defaults"},
        **summary,
    }
    text = render_markdown(results)
    assert "| worker, 1 process | 2,000 | 0.100 of baseline | 400 µs |" in text
    assert "| 1,000/s | 10 ms | 50 ms | 190 / 300 ms | 80% |" in text
