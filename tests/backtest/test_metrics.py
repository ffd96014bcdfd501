"""The metrics of `plans evaluate` on tiny cases worked out by hand."""

from __future__ import annotations

import pytest

from streams.backtest.metrics import (
    Labelled,
    at_threshold,
    auc,
    bands,
    threshold_for_precision,
    top_share,
)

# Ten contacts; the three converters score 90, 50 and 10.
#   score:      90  80  70  50  50  40  30  20  10   0
#   converted:   y   n   n   y   n   n   n   n   y   n
TEN = Labelled(
    [90, 80, 70, 50, 50, 40, 30, 20, 10, 0],
    [True, False, False, True, False, False, False, False, True, False],
)


def test_auc_by_counting_pairs() -> None:
    # 3 converters x 7 others = 21 pairs. The converter at 90 beats all 7; the one at 50 beats
    # 40, 30, 20, 0 (4) and ties 50 (half); the one at 10 beats only 0 (1): 12.5 / 21.
    assert auc(TEN) == pytest.approx(12.5 / 21)


def test_auc_needs_both_kinds() -> None:
    assert auc(Labelled([1, 2], [True, True])) is None
    assert auc(Labelled([1, 2], [False, False])) is None


def test_top_share_lift_and_capture() -> None:
    # Top 10% = 1 contact (score 90), a converter: capture 1/3, rate 1 against 0.3: lift 10/3.
    top = top_share(TEN, 10)
    assert (top.contacts, top.converters, top.score) == (1, 1.0, 90)
    assert top.capture == pytest.approx(1 / 3)
    assert top.lift == pytest.approx(10 / 3)
    # Top 20% = 2 contacts (90, 80): one converter, rate 0.5: lift 5/3.
    assert top_share(TEN, 20).lift == pytest.approx(5 / 3)


def test_top_share_takes_a_tie_pro_rata() -> None:
    # Top 40% = 4 contacts: 90, 80, 70 and one of the two at 50 (one of which converted), so
    # 1 + 0.5 converters expected: capture 1.5/3, rate 1.5/4 = 0.375, lift 0.375/0.3 = 1.25.
    top = top_share(TEN, 40)
    assert (top.contacts, top.converters, top.score) == (4, 1.5, 50)
    assert top.capture == pytest.approx(0.5)
    assert top.lift == pytest.approx(1.25)


def test_bands_of_equal_counts_never_split_a_score() -> None:
    # Five bands of about two: edges at the 2nd, 4th, 6th, 8th and 10th lowest scores (0, 10,
    # 20, 30, 40, 50, 50, 70, 80, 90): 10, 30, 50, 70, 90. Rates: {0,10} 1/2, {20,30} 0,
    # {40,50,50} 1/3 (the tie stays together), {70} 0, {80,90} 1/2. Lift: rate / 0.3.
    found = [(b.low, b.high, b.contacts, b.converters) for b in bands(TEN, 5)]
    assert found == [(0, 10, 2, 1), (11, 30, 2, 0), (31, 50, 3, 1), (51, 70, 1, 0), (71, 90, 2, 1)]
    rates = [b.rate for b in bands(TEN, 5)]
    assert rates == pytest.approx([0.5, 0.0, 1 / 3, 0.0, 0.5])
    assert bands(TEN, 5)[0].lift == pytest.approx(0.5 / 0.3)


def test_bands_of_few_distinct_scores() -> None:
    data = Labelled([0, 0, 0, 5, 5, 5], [False, False, True, True, True, False])
    assert [(b.low, b.high, b.contacts, b.converters) for b in bands(data)] == [
        (0, 0, 3, 1),
        (1, 5, 3, 2),
    ]


def test_precision_and_recall_at_a_threshold() -> None:
    # At 50 or more: 90, 80, 70, 50, 50: two converters of five (precision 0.4), of three
    # (recall 2/3); lift 0.4 / 0.3.
    at = at_threshold(TEN, 50)
    assert (at.contacts, at.converters) == (5, 2)
    assert at.precision == pytest.approx(0.4)
    assert at.recall == pytest.approx(2 / 3)
    assert at.lift == pytest.approx(4 / 3)


def test_threshold_for_a_target_precision_is_the_lowest_that_reaches_it() -> None:
    # Precision going down the scores: 90 1/1, 80 1/2, 70 1/3, 50 2/5, 40 2/6, 30 2/7, 20 2/8,
    # 10 3/9, 0 3/10. At least 0.4: 90, 80 and 50; the lowest, 50, finds the most converters.
    assert threshold_for_precision(TEN, 0.4) == at_threshold(TEN, 50)
    assert threshold_for_precision(TEN, 1.0) == at_threshold(TEN, 90)
    assert threshold_for_precision(Labelled([1, 2], [False, False]), 0.1) is None
