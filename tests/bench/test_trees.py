from __future__ import annotations

from bench.trees import summarize


def test_ratios_to_the_base_are_taken_within_each_round() -> None:
    def run(events_per_second: float, cpu: float, p99: float | None = None) -> dict[str, object]:
        latency = {} if p99 is None else {"1000": [{"p99_ms": p99}]}
        return {"events_per_second": events_per_second, "cpu_us_per_event": cpu, "latency": latency}

    runs = {
        "base": [run(1000, 400, 300), run(500, 500, 900)],
        "new": [run(1500, 300, 200), run(1000, 250, 700)],
    }
    summary = summarize(runs, "base")
    assert summary["new"]["to_base_events_per_second"] == 1.75  # median of 1.5 and 2.0
    assert summary["new"]["to_base_cpu_per_event"] == 0.625  # median of 0.75 and 0.5
    assert summary["new"]["p99_ms_at_1000"] == 450
    assert summary["base"]["to_base_events_per_second"] == 1
    assert summarize({"base": [run(1, 1)]}, "base")["base"]["p99_ms_at_1000"] is None
