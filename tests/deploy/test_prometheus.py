"""deploy/prometheus/: the alerting rules, tested with promtool on synthetic series."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from tests.deploy.tools import DEPLOY, require, runbook_anchors

PROMETHEUS = DEPLOY / "prometheus"


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """alerts_test.yml: a dead worker, a missing target, lag, dead letters, ... fire when
    they should and say what they should; healthy workers fire nothing."""
    promtool = require("promtool", "prometheus")
    for command in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool, *command], cwd=PROMETHEUS, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    firing = {
        case["alertname"]
        for group in tests
        for case in group["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in _rules()} == firing


def test_every_alert_has_a_summary_and_a_runbook_section() -> None:
    anchors = runbook_anchors()
    for rule in _rules():
        annotations = rule["annotations"]
        assert annotations["summary"], rule["alert"]
        url: str = annotations["runbook_url"]
        assert url.rpartition("#")[2] == rule["alert"].lower(), url
        assert rule["alert"].lower() in anchors, f"deploy/RUNBOOK.md has no section {rule['alert']}"
