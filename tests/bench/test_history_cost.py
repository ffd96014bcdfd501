"""The score history benchmark's pieces, at sizes small enough for the suite."""

from __future__ import annotations

from bench.harness import PLANS
from bench.history_cost import _full_history_contact, measure_bytes, measure_time
from streams.scoring import load_plans
from streams.worker.state.history import DEFAULT_SIZE

PLAN_SET = load_plans(PLANS)


def test_the_full_history_contact_fills_every_plan() -> None:
    _, ledger = _full_history_contact(PLAN_SET)
    for plan in PLAN_SET:
        assert len(ledger.changes(plan.name, 10 * DEFAULT_SIZE)) == DEFAULT_SIZE


def test_records_with_history_are_measured_larger() -> None:
    population = measure_bytes(PLAN_SET, 50, 1_000)["population"]
    without, with_history = (
        population["record_bytes_without_history"],
        population["record_bytes_with_history"],
    )
    assert with_history["median"] > without["median"]
    assert with_history["max"] >= with_history["p99"] >= with_history["median"]


def test_the_history_shares_the_outbox_s_build_of_each_score_update() -> None:
    result = measure_time(PLAN_SET, 50, 500, rounds=1, persist_every=100)
    assert result["data_builds_per_score_update"] == 1.0
    sizes = result["per_event"]
    assert sizes["20"]["changelog_bytes_per_message"] > sizes["0"]["changelog_bytes_per_message"]
