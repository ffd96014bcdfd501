"""deploy/grafana/: the dashboard is what its generator writes, is well formed, and every
query runs against a real Prometheus that scraped a real worker."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bench.harness import free_port
from streams.kafka.client import EventPublisher
from tests.deploy.tools import DEPLOY, require
from tests.worker.conftest import StartWorker
from tests.worker.harness import http_get, wait_until
from tests.worker.test_examples import _warm_events

GRAFANA = DEPLOY / "grafana"
VARIABLES = {"$__rate_interval": "15s", "$instance": ".*"}
"""What Grafana substitutes, for a Prometheus that scrapes every second."""


def _generator() -> ModuleType:
    """deploy/ is not a package: load the script by path (registered, for its dataclasses)."""
    name = "deploy_grafana_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, GRAFANA / "generate.py")
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "leadscore.json").read_text())
    return loaded


def _targets() -> list[dict[str, Any]]:
    return [target for panel in _dashboard()["panels"] for target in panel["targets"]]


def test_the_checked_in_dashboard_is_the_generators_output() -> None:
    generated = _generator().render()
    assert (GRAFANA / "leadscore.json").read_text() == generated, (
        "run: python deploy/grafana/generate.py"
    )


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids)
    cells = set()
    for panel in panels:
        assert panel["title"] and panel["type"] == "timeseries"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip() and target["legendFormat"]
            used = set(re.findall(r"\$\w+", target["expr"]))
            assert used <= {*VARIABLES, "$instance"}, used
        pos = panel["gridPos"]
        cell = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & cell, f"{panel['title']} overlaps another panel"
        cells |= cell
    for wanted in (
        "leadscore_events_consumed_total",
        "leadscore_alerts_sent_total",
        "leadscore_processing_delay_seconds_bucket",
        "leadscore_consumer_lag",
        "leadscore_events_dead_lettered_total",
        "leadscore_timer_pass_seconds_bucket",
        "leadscore_state_persist_seconds_bucket",
        "leadscore_contacts",
        "leadscore_recovery_in_progress",
        "leadscore_ready",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert any(wanted in target["expr"] for target in _targets()), wanted


def test_the_provisioning_files_point_at_the_dashboard() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/leadscore.yml").read_text())
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/leadscore.json:{path}/leadscore.json:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url)
    assert status == 200 and body["status"] == "success", f"{expr}: {status} {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Prometheus on a free loopback port; its scrape config is written by the test."""
    binary = require("prometheus", "prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text("scrape_configs: []\n")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_get(url + "/-/ready")[0] == 200, 60, "Prometheus to be ready")
        yield url, config
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.mark.integration
def test_every_panel_query_runs_against_a_prometheus_that_scraped_a_worker(
    start_worker: StartWorker, kafka_bootstrap: str, prometheus: tuple[str, Path]
) -> None:
    url, config = prometheus
    worker = start_worker()
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "leadscore",
                        "static_configs": [{"targets": [f"127.0.0.1:{worker.web_port}"]}],
                    }
                ],
            }
        )
    )
    with urllib.request.urlopen(urllib.request.Request(url + "/-/reload", method="POST")) as r:
        assert r.status == 200
    with EventPublisher(kafka_bootstrap, worker.topics.events) as publisher:
        for event in _warm_events("g-warm"):  # crosses the example plan's threshold: an alert
            publisher.publish(event)
        publisher.publish_raw(b"g-bad", b"{not json", [])
    wait_until(lambda: worker.consumed() == 5, 60, "the traffic consumed")
    for target in _targets():
        expr = target["expr"]
        for name, value in VARIABLES.items():
            expr = expr.replace(name, value)
        wait_until(
            lambda expr=expr: _query(url, expr), 60, f"data for {target['legendFormat']}: {expr}"
        )
