"""Writes deploy/grafana/leadscore.json, the Grafana dashboard of leadscore workers.

Run `python deploy/grafana/generate.py` after editing the panels below; the JSON it writes is
checked in, and tests/deploy/test_grafana.py fails when the two differ, so the dashboard is
reviewed as this short list of panels and queries instead of as 1,000 lines of JSON. Plain
Python rather than a dashboard SDK: the panels use a small, stable part of Grafana's schema,
and the project gains no dependency that follows Grafana's release train.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("leadscore.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SELECTOR = 'job="leadscore", instance=~"$instance"'
RATE = "$__rate_interval"
WIDTH = 12
HEIGHT = 8


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def rate(metric: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{SELECTOR}}}[{RATE}]))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) "
        f"(rate({histogram}_bucket{{{SELECTOR}}}[{RATE}])))"
    )


def mean(histogram: str) -> str:
    return (
        f"sum(rate({histogram}_sum{{{SELECTOR}}}[{RATE}])) "
        f"/ sum(rate({histogram}_count{{{SELECTOR}}}[{RATE}]))"
    )


def durations(title: str, description: str, histogram: str) -> Panel:
    """Mean and p99 of a duration histogram."""
    queries = (Query(mean(histogram), "mean"), Query(quantile(0.99, histogram), "p99"))
    return Panel(title, description, "s", queries)


PANELS = (
    Panel(
        "Events consumed by type and outcome",
        "Tracking events per second; outcome applied, duplicate, ignored or dead_lettered.",
        "ops",
        (Query(rate("leadscore_events_consumed_total", "type, outcome"), "{{type}} {{outcome}}"),),
    ),
    Panel(
        "Alerts sent by plan and type",
        "Threshold alerts per second to sales-alerts.",
        "ops",
        (Query(rate("leadscore_alerts_sent_total", "plan, type"), "{{plan}} {{type}}"),),
    ),
    Panel(
        "Processing delay",
        "From an input message's Kafka timestamp to its outputs being sent "
        "(alert LeadscoreProcessingDelayHigh at p99 > 30 s).",
        "s",
        (
            Query(quantile(0.5, "leadscore_processing_delay_seconds"), "p50"),
            Query(quantile(0.99, "leadscore_processing_delay_seconds"), "p99"),
        ),
    ),
    Panel(
        "Lag per partition",
        "Messages not yet processed (consumer lag) and not yet committed (commit lag).",
        "short",
        (
            Query(
                f"sum by (topic, partition) (leadscore_consumer_lag{{{SELECTOR}}})",
                "{{topic}}/{{partition}} unprocessed",
            ),
            Query(
                f"max by (topic, partition) (leadscore_commit_lag{{{SELECTOR}}})",
                "{{topic}}/{{partition}} uncommitted",
            ),
        ),
    ),
    Panel(
        "Dead letters by reason",
        "Messages per second sent to the dead-letter topic (deploy/RUNBOOK.md: replaying).",
        "ops",
        (Query(rate("leadscore_events_dead_lettered_total", "reason"), "{{reason}}"),),
    ),
    Panel(
        "Re-routed input",
        "Input messages per second that a producer put on the wrong partition.",
        "ops",
        (Query(rate("leadscore_events_rerouted_total", "instance"), "{{instance}}"),),
    ),
    Panel(
        "Plan versions",
        "1 per worker for the version in force (current) and each installed to take over "
        "later (pending); reloads refused per second (deploy/RUNBOOK.md: LeadscorePlanRefused).",
        "short",
        (
            Query(
                f"max by (version, state) (leadscore_plan_version_info{{{SELECTOR}}})",
                "{{version}} {{state}}",
            ),
            Query(
                f"sum by (result) (rate(leadscore_plan_reloads_total{{{SELECTOR}, "
                f'result!~"installed|unchanged"}}[{RATE}]))',
                "refused: {{result}}",
            ),
        ),
    ),
    durations(
        "Timer pass time",
        "One timer pass over a worker's partitions: finds due deadlines, sends ticks.",
        "leadscore_timer_pass_seconds",
    ),
    durations(
        "Persist time",
        "Making states durable before an offset commit (RocksDB and changelog).",
        "leadscore_state_persist_seconds",
    ),
    Panel(
        "warm leads now",
        "Contacts at or above each threshold of each plan in force, summed over the workers' "
        "partitions (GET /leads/counts answers the same; GET /leads lists them).",
        "short",
        (
            Query(
                f"sum by (plan, threshold) (leadscore_contacts_at_threshold{{{SELECTOR}}})",
                "{{plan}} {{threshold}}",
            ),
        ),
    ),
    Panel(
        "Contacts in state",
        "Contacts held by each worker's partitions.",
        "short",
        (Query(f"sum by (instance) (leadscore_contacts{{{SELECTOR}}})", "{{instance}}"),),
    ),
    Panel(
        "Recovery and readiness",
        "1 while recovering from the changelog; ready 1 once consuming; up 0: not scraped.",
        "short",
        (
            Query(f"leadscore_recovery_in_progress{{{SELECTOR}}}", "{{instance}} recovering"),
            Query(f"leadscore_ready{{{SELECTOR}}}", "{{instance}} ready"),
            Query(f"up{{{SELECTOR}}}", "{{instance}} up"),
        ),
    ),
    Panel(
        "Process CPU",
        "CPU seconds per second of each worker process.",
        "percentunit",
        (Query(f"rate(process_cpu_seconds_total{{{SELECTOR}}}[{RATE}])", "{{instance}}"),),
    ),
    Panel(
        "Process memory (RSS)",
        "Resident memory of each worker (about 430-460 MiB in bench/README.md's runs).",
        "bytes",
        (Query(f"process_resident_memory_bytes{{{SELECTOR}}}", "{{instance}}"),),
    ),
)


def _panel(index: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": HEIGHT, "w": WIDTH, "x": (index % 2) * WIDTH, "y": (index // 2) * HEIGHT},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + number),
                "datasource": DATASOURCE,
                "expr": query.expr,
                "legendFormat": query.legend,
            }
            for number, query in enumerate(panel.queries)
        ],
    }


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    return {
        "uid": "leadscore",
        "title": "leadscore workers",
        "tags": ["leadscore", "kafka"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "instance",
                    "label": "worker",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": 'label_values(up{job="leadscore"}, instance)',
                        "refId": "instance",
                    },
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": [_panel(index, panel) for index, panel in enumerate(PANELS)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
