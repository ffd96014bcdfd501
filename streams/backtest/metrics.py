"""How well a score predicts conversion: pure functions of (score, converted) pairs.

What lead-scoring users read elsewhere (Salesforce Einstein: conversion rate per score band
against the overall rate) plus what a ranking is judged by: ROC AUC, and lift and capture of
the top few percent (whom sales would call first). Ties are the rule with whole-number points,
so every figure treats tied contacts alike: AUC counts a tied pair as half, and a top share
that cuts through a tie takes the tie's converters pro rata (the expected value of breaking the
tie at random), never "the converters first".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import groupby

TOP_PCTS = (1.0, 5.0, 10.0, 20.0)
BANDS = 10


@dataclass(frozen=True, slots=True)
class Labelled:
    """Contacts' scores and whether each converted, in the same order."""

    scores: Sequence[int]
    converted: Sequence[bool]

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.converted):
            raise ValueError("scores and labels differ in length")

    @property
    def contacts(self) -> int:
        return len(self.scores)

    @property
    def converters(self) -> int:
        return sum(self.converted)

    @property
    def base_rate(self) -> float | None:
        return self.converters / self.contacts if self.contacts else None


@dataclass(frozen=True, slots=True)
class Band:
    """Contacts scoring `low` to `high` (inclusive)."""

    low: int
    high: int
    contacts: int
    converters: int
    rate: float
    lift: float | None


@dataclass(frozen=True, slots=True)
class TopShare:
    """The top `pct` percent by score: how many converters (pro rata in a tie), the share of
    all converters they are (capture), and their rate over the base rate (lift)."""

    pct: float
    contacts: int
    converters: float
    capture: float | None
    lift: float | None
    score: int | None
    """The lowest score taken: the threshold that selects this share (a tie: a few more)."""


@dataclass(frozen=True, slots=True)
class AtThreshold:
    """Contacts at or above `score`."""

    score: int
    contacts: int
    converters: int
    precision: float | None
    recall: float | None
    lift: float | None


def auc(data: Labelled) -> float | None:
    """ROC AUC: the chance that a random converter outscores a random other contact (a tie
    counts half), by the rank sum (Mann-Whitney U). None without both kinds of contact."""
    positives = data.converters
    negatives = data.contacts - positives
    if not positives or not negatives:
        return None
    pairs = sorted(zip(data.scores, data.converted, strict=True))
    rank_sum = 0.0
    position = 0
    for _, group in groupby(pairs, key=lambda pair: pair[0]):
        labels = [converted for _, converted in group]
        mean_rank = position + (len(labels) + 1) / 2  # ranks position+1 .. position+len
        rank_sum += mean_rank * sum(labels)
        position += len(labels)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def top_share(data: Labelled, pct: float) -> TopShare:
    """The top `pct` percent of contacts (at least one): ceil(pct * N / 100) of them."""
    if not 0 < pct <= 100:
        raise ValueError(f"top percent must be in (0, 100], got {pct}")
    count = max(1, math.ceil(Fraction(str(pct)) * data.contacts / 100)) if data.contacts else 0
    taken = 0
    converters = 0.0
    lowest: int | None = None
    for score, group in groupby(_descending(data), key=lambda pair: pair[0]):
        labels = [converted for _, converted in group]
        share = min(len(labels), count - taken)
        converters += sum(labels) * share / len(labels)
        taken += share
        lowest = score
        if taken >= count:
            break
    total = data.converters
    base = data.base_rate
    return TopShare(
        pct,
        count,
        converters,
        converters / total if total else None,
        converters / count / base if count and base else None,
        lowest,
    )


def bands(data: Labelled, count: int = BANDS) -> list[Band]:
    """Up to `count` score bands of about equal numbers of contacts, lowest first.

    Bands of equal width would put nearly every contact in the first one: behavioural scores
    have a long tail (a few contacts with thousands of points). A band never splits a score,
    so ties merge bands (a plan with three distinct scores has at most three)."""
    ordered = sorted(zip(data.scores, data.converted, strict=True))
    total = len(ordered)
    base = data.base_rate
    edges = sorted({ordered[math.ceil(q * total / count) - 1][0] for q in range(1, count + 1)})
    result: list[Band] = []
    start = 0
    low = ordered[0][0] if ordered else 0
    for high in edges:
        end = start
        while end < total and ordered[end][0] <= high:
            end += 1
        members = ordered[start:end]
        converters = sum(converted for _, converted in members)
        rate = converters / len(members)
        result.append(
            Band(low, high, len(members), converters, rate, rate / base if base else None)
        )
        start, low = end, high + 1
    return result


def at_threshold(data: Labelled, score: int) -> AtThreshold:
    selected = [converted for value, converted in zip(data.scores, data.converted, strict=True)
                if value >= score]  # fmt: skip
    return _at(score, len(selected), sum(selected), data)


def _at(score: int, contacts: int, converters: int, data: Labelled) -> AtThreshold:
    precision = converters / contacts if contacts else None
    base = data.base_rate
    return AtThreshold(
        score,
        contacts,
        converters,
        precision,
        converters / data.converters if data.converters else None,
        precision / base if precision is not None and base else None,
    )


def threshold_for_precision(data: Labelled, target: float) -> AtThreshold | None:
    """The lowest score whose contacts at or above convert at `target` or better: the most
    converters found at that precision. None when no score reaches it."""
    best: AtThreshold | None = None
    contacts = converters = 0
    for score, group in groupby(_descending(data), key=lambda pair: pair[0]):
        labels = [converted for _, converted in group]
        contacts += len(labels)
        converters += sum(labels)
        if converters / contacts >= target:
            best = _at(score, contacts, converters, data)
    return best


def _descending(data: Labelled) -> list[tuple[int, bool]]:
    return sorted(zip(data.scores, data.converted, strict=True), key=lambda pair: -pair[0])
