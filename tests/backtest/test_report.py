"""The backtest report: statistics on hand-computed examples, edges, text, JSON and PNG."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.backtest.report import (
    BAR_WIDTH,
    MAX_BUCKETS,
    Bucket,
    PlanReport,
    ScoreStats,
    Suggestion,
    ThresholdReport,
    build_report,
    plot_png,
    render_text,
    report_to_json,
    suggest_threshold,
)

SCORE_LISTS = st.lists(st.integers(-1_000, 1_000), min_size=1, max_size=300)


def _stats(scores: list[int]) -> ScoreStats:
    stats = build_report("plan", scores, [], {}, {}).stats
    assert stats is not None
    return stats


def test_one_to_ten() -> None:
    stats = _stats([10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    assert stats.mean == 5.5
    assert (stats.minimum, stats.maximum) == (1, 10)
    # nearest rank: the ceil(p * 10 / 100)-th smallest
    assert stats.percentiles == ((50, 5), (75, 8), (90, 9), (95, 10), (99, 10))
    assert stats.histogram == tuple(Bucket(score, score, 1) for score in range(1, 11))


def test_nearest_rank_percentiles_of_twenty() -> None:
    stats = _stats(list(range(1, 21)))
    assert stats.percentiles == ((50, 10), (75, 15), (90, 18), (95, 19), (99, 20))


def test_all_equal_negative_scores_make_one_bucket() -> None:
    stats = _stats([-4] * 5)
    assert stats.mean == -4
    assert stats.percentiles == tuple((p, -4) for p in (50, 75, 90, 95, 99))
    assert stats.histogram == (Bucket(-4, -4, 5),)


def test_narrow_negative_range_has_one_bucket_per_score() -> None:
    stats = _stats([-5, -5, 0, 4])
    assert [(b.low, b.high) for b in stats.histogram] == [(s, s) for s in range(-5, 5)]
    assert [b.count for b in stats.histogram] == [2, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_a_hundred_scores_in_twenty_buckets_of_five() -> None:
    stats = _stats(list(range(100)))
    assert stats.histogram == tuple(Bucket(5 * i, 5 * i + 4, 5) for i in range(20))


def test_a_range_just_over_the_limit_doubles_the_width() -> None:
    stats = _stats(list(range(-10, 11)))  # 21 values
    assert len(stats.histogram) == 11
    assert stats.histogram[0] == Bucket(-10, -9, 2)
    assert stats.histogram[-1] == Bucket(10, 11, 1)


@given(SCORE_LISTS)
def test_histogram_and_percentile_invariants(scores: list[int]) -> None:
    stats = _stats(scores)
    buckets = stats.histogram
    width = buckets[0].high - buckets[0].low + 1
    assert len(buckets) <= MAX_BUCKETS
    assert buckets[0].low == min(scores)
    assert buckets[-1].low <= max(scores) <= buckets[-1].high
    for before, after in itertools.pairwise(buckets):
        assert after.low == before.high + 1
        assert after.high - after.low + 1 == width
    assert sum(b.count for b in buckets) == len(scores)
    for b in buckets:
        assert b.count == sum(b.low <= s <= b.high for s in scores)
    for p, value in stats.percentiles:
        # nearest rank: at least p% of scores are <= value, fewer than p% are < value
        assert sum(s <= value for s in scores) * 100 >= p * len(scores)
        assert sum(s < value for s in scores) * 100 < p * len(scores)


@pytest.mark.parametrize(
    ("top_pct", "expected"), [(25, 40), (25.1, 30), (50, 30), (30, 30), (75, 20), (100, 10)]
)
def test_suggest_threshold(top_pct: float, expected: int) -> None:
    assert suggest_threshold([30, 10, 40, 20], top_pct) == expected


def test_suggest_threshold_with_ties_selects_all_of_them() -> None:
    assert suggest_threshold([5, 5, 5, 1], 25) == 5
    assert suggest_threshold([7, 7], 1) == 7


def test_suggest_threshold_reads_the_percent_as_written() -> None:
    assert math.ceil(16.1 * 1000 / 100) == 162  # what binary floating point would do
    assert suggest_threshold(list(range(1000)), 16.1) == 1000 - 161


@pytest.mark.parametrize("top_pct", [0, -1, 100.5, math.nan, math.inf])
def test_suggest_threshold_rejects_a_bad_percent(top_pct: float) -> None:
    with pytest.raises(ValueError, match="top percent"):
        suggest_threshold([1, 2, 3], top_pct)


def test_suggest_threshold_needs_scores() -> None:
    with pytest.raises(ValueError, match="no scores"):
        suggest_threshold([], 10)


@given(SCORE_LISTS, st.floats(0.01, 100))
def test_suggestion_selects_at_least_the_top_share_and_no_lower_score_would_do_less(
    scores: list[int], top_pct: float
) -> None:
    score = suggest_threshold(scores, top_pct)
    assert score in scores
    assert sum(s >= score for s in scores) * 100 >= top_pct * len(scores) * (1 - 1e-12)
    higher = [s for s in scores if s > score]
    assert len(higher) * 100 < top_pct * len(scores) * (1 + 1e-12)


def _warm_report() -> PlanReport:
    return build_report(
        "warm-leads",
        [0, 10, 20, 30, 40, 50, 60, 70, 80, 90],
        [("warm", 50), ("hot", 85)],
        {"warm": 7, "hot": 1},
        {"warm": 2},
        suggest_top_pct=20,
    )


def test_thresholds_and_suggestion() -> None:
    report = _warm_report()
    assert report.contacts == 10
    assert report.thresholds == (
        ThresholdReport("warm", 50, 5, 7, 2),
        ThresholdReport("hot", 85, 1, 1, 0),
    )
    assert report.suggestion == Suggestion(20, 80, 2)


def test_no_suggestion_unless_asked() -> None:
    assert build_report("p", [1, 2], [], {}, {}).suggestion is None


def test_a_plan_that_scored_nobody() -> None:
    report = build_report("empty", [], [("warm", 50)], {"warm": 3}, {}, suggest_top_pct=5)
    assert report == PlanReport("empty", 0, None, (ThresholdReport("warm", 50, 0, 3, 0),), None)


def test_render_text() -> None:
    empty = build_report("empty", [], [], {}, {})
    text = render_text([_warm_report(), empty])
    assert "Plan warm-leads: 10 contacts scored" in text
    assert "mean 45.00   min 0   max 90" in text
    assert "p50 40   p75 70   p90 80   p95 90   p99 90" in text
    assert "suggested threshold for the top 20%: 80 (2 contacts at or above, 20.0%)" in text
    assert "Plan empty: 0 contacts scored\n  no contacts scored" in text
    lines = text.splitlines()
    warm = next(line for line in lines if line.lstrip().startswith("warm "))
    assert warm.split() == ["warm", "50", "5", "50.0%", "7", "2"]
    bars = [line for line in lines if "█" in line]
    assert len(bars) == 10  # of 19 buckets of width 5, ten hold one score each: all at the peak
    assert all("█" * BAR_WIDTH in line for line in bars)


def test_small_buckets_get_partial_blocks() -> None:
    text = render_text([build_report("p", [0] * 80 + [1] + [3] * 3, [], {}, {})])
    counts = {line.split()[0]: line for line in text.splitlines() if line.startswith("      ")}
    assert "█" * BAR_WIDTH in counts["0"]
    assert counts["1"].split()[1] == "▌"  # 1/80 of 40 characters is 4 eighths
    assert counts["2"].split() == ["2", "0"]
    assert counts["3"].split()[1] == "█▌"  # 3/80 of 40 is 1.5


def test_report_to_json() -> None:
    data = report_to_json([_warm_report(), build_report("empty", [], [], {}, {})])
    assert orjson.loads(orjson.dumps(data)) == data
    warm, empty = data["plans"]
    assert list(warm) == ["plan", "contacts", "stats", "thresholds", "suggestion"]
    assert warm["stats"]["percentiles"] == {"p50": 40, "p75": 70, "p90": 80, "p95": 90, "p99": 90}
    assert (warm["stats"]["mean"], warm["stats"]["min"], warm["stats"]["max"]) == (45.0, 0, 90)
    assert warm["stats"]["histogram"][0] == {"low": 0, "high": 4, "count": 1}
    assert warm["thresholds"][0] == {
        "name": "warm",
        "score": 50,
        "contacts_at_or_above": 5,
        "alerts_crossed": 7,
        "alerts_dropped": 2,
    }
    assert warm["suggestion"] == {"top_pct": 20, "score": 80, "contacts_at_or_above": 2}
    assert empty == {
        "plan": "empty",
        "contacts": 0,
        "stats": None,
        "thresholds": [],
        "suggestion": None,
    }


def test_plot_png(tmp_path: Path) -> None:
    path = tmp_path / "report.png"
    plot_png([_warm_report(), build_report("empty", [], [("warm", 1)], {}, {})], path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_plot_png_needs_a_plan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no plans"):
        plot_png([], tmp_path / "report.png")
