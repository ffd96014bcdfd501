"""The model of `plans fit`: a regularised logistic regression (scikit-learn) on plan features.

Contacts are split into training and test sets once, stratified by outcome, with a fixed seed,
so a refit on the same data gives the same plan and the test contacts are never seen by the
fit. The strength of the L2 penalty is chosen by cross-validated ROC AUC on the training set
alone. Features are standardised for the fit (a count of e-mails opened and a yes/no attribute
are on different scales, and the penalty should treat them alike); the weights are then
given back per unit of each feature, which is what a rule's points are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

TEST_SHARE = 0.3
FOLDS = 5
C_GRID = 12
"""Penalty strengths tried, log-spaced from 1e-4 to 1e4."""


@dataclass(frozen=True, slots=True)
class Weights:
    per_unit: tuple[float, ...]
    """Log-odds per unit of each feature (0 for a feature constant on the training set)."""
    per_sd: tuple[float, ...]
    """Log-odds per standard deviation: how much each feature moves the ranking."""
    c: float
    """The inverse penalty strength chosen."""


def split(converted: Sequence[bool], seed: int) -> tuple[list[int], list[int]]:
    """Training and test positions (sorted), stratified by outcome."""
    positions = np.arange(len(converted))
    train, test = train_test_split(
        positions,
        test_size=TEST_SHARE,
        random_state=seed,
        stratify=np.asarray(converted, dtype=bool),
    )
    return sorted(int(i) for i in train), sorted(int(i) for i in test)


def fit_weights(rows: Sequence[Sequence[float]], converted: Sequence[bool], seed: int) -> Weights:
    """Fit on `rows` (one a contact, one column a feature) and their outcomes."""
    x = np.asarray(rows, dtype=float)
    y = np.asarray(converted, dtype=bool)
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    varying = sd > 0
    standard = (x[:, varying] - mean[varying]) / sd[varying]
    model = LogisticRegressionCV(
        Cs=np.logspace(-4, 4, C_GRID),
        l1_ratios=(0.0,),  # L2 alone: every feature keeps a weight (L1 took 4x as long)
        cv=StratifiedKFold(FOLDS, shuffle=True, random_state=seed),
        scoring="roc_auc",
        max_iter=5000,
        use_legacy_attributes=False,
    )
    # One thread: BLAS and OpenMP threads on a problem this small fought each other (and the
    # other processes) for the cores; the fit took 5 times as long on the 2-core machine.
    with threadpool_limits(limits=1):
        model.fit(standard, y)
    per_sd = np.zeros(x.shape[1])
    per_sd[varying] = model.coef_[0]
    per_unit = np.zeros(x.shape[1])
    per_unit[varying] = model.coef_[0] / sd[varying]
    return Weights(
        tuple(float(w) for w in per_unit), tuple(float(w) for w in per_sd), float(model.C_)
    )
