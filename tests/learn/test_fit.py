"""`leadscore plans fit`: points learned from outcomes, as a plan that checks, diffs and wins."""

from __future__ import annotations

import contextlib
import io
import random
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from streams.backtest.evaluate import take_census
from streams.backtest.parallel import backtest_file
from streams.backtest.simulate import write_jsonl
from streams.cli import main
from streams.learn.fit import NotEnoughDataError, fit_plan
from streams.models.outcomes import Conversion, Outcomes, write_outcomes
from streams.models.outputs import THRESHOLD_CROSSED
from streams.scoring import load_plans
from tests.support import DAY, T0, attributes, event

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"
URLS = ("https://example.com/a", "https://example.com/b", "https://example.com/c")


@dataclass(frozen=True)
class Data:
    events: Path
    outcomes: Outcomes


def _hand_made(folder: Path, contacts: int, *, seed: int = 1) -> Data:
    """Contacts with `tier: gold` convert 80% of the time, the others 5%; `color` and the
    pages they visit are noise."""
    rng = random.Random(seed)
    events, conversions = [], []
    for index in range(contacts):
        contact = f"h-{index:04d}"
        gold = rng.random() < 0.4
        profile = {"color": rng.choice(["red", "blue"]), **({"tier": "gold"} if gold else {})}
        events.append(attributes(index * 60.0, contact=contact, **profile))
        for visit in range(rng.randint(1, 4)):
            at = index * 60.0 + (visit + 1) * 3600
            events.append(event("page.visited", at, {"url": rng.choice(URLS)}, contact))
        if rng.random() < (0.8 if gold else 0.05):
            conversions.append(Conversion(contact, T0 + 20 * DAY))
    events.sort(key=lambda item: item.time)
    path = folder / "events.jsonl"
    write_jsonl(events, path)
    return Data(path, Outcomes("won.jsonl", {c.contact_id: c for c in conversions}))


def test_the_deciding_feature_gets_the_most_points_and_noise_about_none(tmp_path: Path) -> None:
    data = _hand_made(tmp_path, 500)
    result = fit_plan(data.events, data.outcomes, min_conversions=50, jobs=1)
    points = {factor.feature.id: factor.points for factor in result.factors}
    assert points["tier.gold"] == 100 == max(abs(value) for value in points.values())
    for noise in ("color.red", "color.blue", *(f"page.visited.url.{c}" for c in "abc")):
        assert abs(points.get(noise, 0)) <= 10, (noise, points)
    assert result.factors[0].feature.id == "tier.gold"
    assert result.factors[0].converters_share > 0.8
    assert result.factors[0].others_share < 0.2


def test_too_little_data_is_refused_saying_how_much_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _hand_made(tmp_path, 120)
    with pytest.raises(NotEnoughDataError, match=r"at least 100 of each are needed"):
        fit_plan(data.events, data.outcomes)
    write_outcomes(data.outcomes.conversions.values(), tmp_path / "won.jsonl")
    argv = ["plans", "fit", str(data.events), "--outcomes", str(tmp_path / "won.jsonl")]
    assert main([*argv, "--out", str(tmp_path / "fitted.yaml"), "--jobs", "1"]) == 2
    assert "not enough data to fit" in capsys.readouterr().err
    assert not (tmp_path / "fitted.yaml").exists()


@dataclass(frozen=True)
class Fitted:
    events: Path
    out: Path
    report: dict  # type: ignore[type-arg]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Fitted:
    """The path of docs/backtest.md on a small population: simulate with outcomes, then fit."""
    folder = tmp_path_factory.mktemp("fit")
    events, outcomes, out = folder / "events.jsonl.gz", folder / "won.jsonl", folder / "fit.yaml"
    argv = ["simulate", str(events), "--contacts", "1000", "--events", "12000", "--seed", "4"]
    assert main([*argv, "--outcomes", str(outcomes)]) == 0
    argv = ["plans", "fit", str(events), "--outcomes", str(outcomes), "--out", str(out)]
    argv += ["--plans", str(EXAMPLES), "--horizon", "7d", "--capacity", "10/week"]
    argv += ["--min-conversions", "60", "--json", "--jobs", "1"]
    capture = _Capture()
    with capture:
        assert main(argv) == 0
    return Fitted(events, out, orjson.loads(capture.text))


class _Capture:
    """stdout of a command, in a module-scoped fixture (capsys is function-scoped)."""

    def __enter__(self) -> None:
        self._buffer = io.StringIO()
        self._redirect = contextlib.redirect_stdout(self._buffer)
        self._redirect.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._redirect.__exit__(*exc)  # type: ignore[arg-type]
        self.text = self._buffer.getvalue()


def test_the_fitted_plan_predicts_better_than_the_examples_on_the_same_contacts(
    fitted: Fitted,
) -> None:
    test = fitted.report["test"]
    aucs = {plan["plan"]: plan["auc"] for plan in test["plans"]}
    assert set(aucs) == {"lead-score", "icp-fit", "fitted"}
    assert aucs["fitted"] > aucs["lead-score"] and aucs["fitted"] > aucs["icp-fit"]
    assert {plan["contacts"] for plan in test["plans"]} == {fitted.report["test_contacts"]}


def test_its_threshold_sends_at_most_the_capacity_in_the_backtest(fitted: Fitted) -> None:
    plans = load_plans(fitted.out)  # what `plans check` loads: the file is valid
    (plan,) = plans.plans
    assert [t.score for t in plan.thresholds] == [fitted.report["threshold"]["score"]]
    alerts = backtest_file(fitted.events, plans).alerts
    crossed = sum(1 for alert in alerts if alert.type == THRESHOLD_CROSSED)
    census = take_census(fitted.events)
    assert census.first is not None and census.last is not None
    assert 0 < crossed / ((census.last - census.first) / (7 * DAY)) <= 10


def test_the_file_opens_with_its_data_and_test_auc_and_checks_and_diffs(
    fitted: Fitted, capsys: pytest.CaptureFixture[str]
) -> None:
    comments = fitted.out.read_text().split("plans:")[0].splitlines()
    header = " ".join(line.removeprefix("# ") for line in comments)
    auc = next(p["auc"] for p in fitted.report["test"]["plans"] if p["plan"] == "fitted")
    assert "12,000 events, 1,000 contacts" in header and f"Test AUC {auc:.3f}" in header
    assert main(["plans", "check", str(fitted.out)]) == 0
    assert f"{fitted.out}: OK" in capsys.readouterr().out
    argv = ["plans", "diff", str(EXAMPLES), str(fitted.out), str(fitted.events), "--jobs", "1"]
    assert main(argv) == 0
    assert "fitted" in capsys.readouterr().out


def test_the_report_gives_factors_with_their_evidence(fitted: Fitted) -> None:
    factors = fitted.report["factors"]
    assert factors and all(factor["points"] for factor in factors)
    strongest = factors[0]
    assert {"rule", "measures", "converters_mean", "others_mean"} <= strongest.keys()
    by_rule = {factor["rule"]: factor for factor in factors}
    demo = by_rule["form.submitted.form.demo-request"]  # the simulator's strongest signal
    assert demo["points"] > 0 and demo["converters_share"] > demo["others_share"]
