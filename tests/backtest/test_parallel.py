"""`backtest --jobs N`: the same report, scores and alerts as one process, whatever N."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import orjson
import pytest

from streams.backtest import parallel
from streams.backtest import replay as replay_module
from streams.backtest.parallel import backtest_file, default_jobs, route
from streams.backtest.simulate import generate
from streams.cli import build_parser, main
from streams.models.events import format_time
from streams.scoring import ContactState, Output, PlanSet, advance, load_plans
from tests.support import BOOM, DAY, failing_score_event

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "plans.yaml"
_TIMING = re.compile(
    rb' in [0-9.]+ s \([0-9,]+ events/s\)|\n *"(seconds|events_per_second)": [^\n]*'
)


def _lines(*, in_order: bool) -> list[bytes]:
    """Generated events with every kind of trouble mixed in: lines that are no events, a
    duplicate, an event the core fails on, subjects only a full decode finds, a last event
    long after the others and (unless `in_order`) events far out of time order, some at equal
    times, so that the file is sorted."""
    events = list(generate(120, 2500, seed=11))
    documents = [event.to_cloudevent() for event in events]
    lines = [orjson.dumps(document) for document in documents]
    nested = {**documents[40], "id": "nested", "data": {**documents[40]["data"], "subject": "Hi"}}
    lines[40] = orjson.dumps(nested)  # "subject" twice: decoded to find the contact
    escaped = orjson.dumps({**documents[41], "id": "escaped"})
    lines[41] = escaped.replace(b'"subject"', b'"subj\\u0065ct"')  # a key only JSON can read
    lines[300:300] = [
        b"{oops",
        b"",
        orjson.dumps({**documents[299], "time": "never"}),
        orjson.dumps({**documents[299], "id": "boom", "type": BOOM}),
        lines[120],  # a duplicate
        b'["not", "an", "object"]',
    ]
    later = {**documents[-1], "id": "later", "time": format_time(events[-1].time + 40 * DAY)}
    lines.append(orjson.dumps(later))  # every worker advances its contacts to this time
    if not in_order:  # late lines: one, and some of several contacts at one earlier time
        lines.append(lines.pop(5))
        tied = documents[200]["time"]
        lines += [orjson.dumps({**documents[i], "id": f"tied-{i}", "time": tied}) for i in range(6)]
    return lines


@pytest.fixture(scope="module", params=["in-order.jsonl", "out-of-order.jsonl.gz"])
def events_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name: str = request.param
    path = tmp_path_factory.mktemp("parallel") / name
    body = b"\n".join(_lines(in_order=name.startswith("in-order"))) + b"\n"
    path.write_bytes(gzip.compress(body, mtime=0) if name.endswith(".gz") else body)
    return path


def _failing_advance(
    state: ContactState, now: float, plans: PlanSet
) -> tuple[ContactState, list[Output]]:
    """`advance`, failing for some contacts (of every worker), as a bug in the core would."""
    if state.contact_id.endswith("7"):
        raise RuntimeError("simulated bug in advancing a contact")
    return advance(state, now, plans)


def _backtest(
    path: Path,
    jobs: int,
    out: Path,
    capsys: pytest.CaptureFixture[str],
    *options: str,
    plans: tuple[Path, ...] = (EXAMPLES,),
) -> tuple[bytes, bytes, bytes]:
    """(report without its timing, scores file, alerts file) of one `leadscore backtest`."""
    scores, alerts = out / f"scores-{jobs}.jsonl", out / f"alerts-{jobs}.jsonl"
    argv = ["backtest", str(path), "--jobs", str(jobs), *options]
    argv += [option for plan in plans for option in ("--plans", str(plan))]
    assert main([*argv, "--scores", str(scores), "--alerts", str(alerts)]) == 0
    report = capsys.readouterr().out.encode()
    return _TIMING.sub(b"", report), scores.read_bytes(), alerts.read_bytes()


@pytest.mark.parametrize("options", [(), ("--json", "--until", "2026-06-30T00:00:00Z")])
def test_more_jobs_give_the_same_report_scores_and_alerts(
    events_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    options: tuple[str, ...],
) -> None:
    monkeypatch.setattr(replay_module, "score_event", failing_score_event)  # forked workers too
    monkeypatch.setattr(replay_module, "advance", _failing_advance)
    alone = _backtest(events_file, 1, tmp_path, capsys, *options)
    report = alone[0].decode()
    assert "rejected lines 3" in report or '"rejected_lines": 3' in report
    errors = re.search(r'scoring.errors"?:? (\d+)', report)
    assert errors is not None and int(errors[1]) > 3  # the boom, and advancing some contacts
    assert "duplicates 1," in report or '"duplicates": 1,' in report
    assert alone[2].count(b"\n") > 100
    for jobs in (2, 3):
        assert _backtest(events_file, jobs, tmp_path, capsys, *options) == alone, f"--jobs {jobs}"


def test_a_failing_worker_fails_the_backtest_with_its_traceback(
    events_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside the core (which is reported per event) must not leave the parent waiting."""

    def broken(*_: object) -> list[parallel.ScoreRow]:
        raise ZeroDivisionError("a bug in a worker")

    monkeypatch.setattr(parallel, "score_rows", broken)
    with pytest.raises(RuntimeError, match=r"(?s)backtest worker \d failed.*ZeroDivisionError"):
        main(["backtest", str(events_file), "--plans", str(EXAMPLES), "--jobs", "2"])


@pytest.mark.parametrize(
    "document",
    [
        {"subject": "c-1", "data": {}},
        {"data": {"subject": "Re: offer"}, "subject": "c-1"},
        {"id": "\\", "subject": "c-1"},
        {"subject": "c-\u00f1"},
        {"subject": "c-1", "note": 'the "subject" field'},
    ],
)
def test_route_sends_every_line_of_a_contact_to_the_contact_s_worker(
    document: dict[str, object],
) -> None:
    contact = str(document["subject"])
    compact, spaced = orjson.dumps(document), orjson.dumps(document, option=orjson.OPT_INDENT_2)
    ascii_only = orjson.dumps(document).decode().replace("\u00f1", "\\u00f1").encode()
    alone = orjson.dumps({"subject": contact})
    for jobs in (2, 3, 7):
        expected = route(alone, jobs)
        assert route(compact, jobs) == route(spaced, jobs) == route(ascii_only, jobs) == expected


def test_the_default_is_the_cores_this_process_may_use() -> None:
    args = build_parser().parse_args(["backtest", "events.jsonl", "--plans", "plans.yaml"])
    assert args.jobs == default_jobs() == len(os.sched_getaffinity(0))


def test_progress_is_reported_while_the_file_is_dealt(events_file: Path) -> None:
    progress: list[tuple[int, int]] = []
    result = backtest_file(
        events_file, load_plans(EXAMPLES), progress=lambda *done: progress.append(done), jobs=2
    )
    assert result.scores
    assert progress[-1] == (events_file.stat().st_size,) * 2


def test_more_jobs_give_the_same_with_a_plan_history_and_a_rescore(
    events_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each worker rebuilds its own contacts for the `rescore` version, and what that sends is
    merged where one process sends it; failures of the core in the rebuild too."""
    monkeypatch.setattr(replay_module, "score_event", failing_score_event)
    monkeypatch.setattr(replay_module, "advance", _failing_advance)
    forward = EXAMPLES.with_name("plans-v2.yaml")
    rescore = tmp_path / "v3.yaml"
    rescore.write_text(
        forward.read_text(encoding="utf-8")
        .replace("version: spring-2", "version: spring-3")
        .replace("change: forward", "change: rescore")
        .replace("2026-02-15T00:00:00Z", "2026-03-10T00:00:00Z")
        .replace("points: 40", "points: 90"),
        encoding="utf-8",
    )
    plans = (EXAMPLES, forward, rescore)
    alone = _backtest(events_file, 1, tmp_path, capsys, plans=plans)
    assert b"version spring-3 (rescore from 2026-03-10T00:00:00Z)" in alone[0]
    alerts = [orjson.loads(line) for line in alone[2].splitlines()]
    causes = {str(alert["data"]["cause"].get("plan_change")) for alert in alerts}
    assert causes == {"None", "spring-2", "spring-3"}
    assert {alert["data"]["plan_version"] for alert in alerts} >= {"spring-2", "spring-3"}
    for jobs in (2, 3):
        assert _backtest(events_file, jobs, tmp_path, capsys, plans=plans) == alone, jobs
