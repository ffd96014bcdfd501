"""The compiled core: used only while it matches its source, and it scores exactly as the source.

The equivalence test needs the build (`python -m streams.compile`; `./dev test` makes it):
without one it is skipped with the reason, except under CI=true, where the build is part of
the install and its absence is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams import compiled

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "schemas" / "examples" / "plans.yaml"

# Rules the example plans leave out: a count limit without a window, a rolling window, regex,
# `in` and `exists` conditions, a rule for any type, clamping, inactivity points taken back on
# activity, a typed inactivity reset, attribute globs.
MORE_PLANS = """\
plans:
  - name: engagement
    min: 0
    max: 120
    thresholds: [{name: engaged, score: 40}, {name: champion, score: 90}]
    rules:
      - {id: first-clicks, when: {type: email.clicked}, points: 15, limit: {count: 2}}
      - {id: launch, when: {type: email.opened, data: {campaign: {regex: "launch$"}}}, points: 5, expires: 14d}
      - {id: forms, when: {type: form.submitted, data: {form: {in: [demo-request, contact-sales]}}}, points: 25, limit: {count: 1, per: 7d}}
      - {id: anything, when: {data: {url: {exists: true}}}, points: 1, expires: 2d}
      - {id: left, when: {type: list.unsubscribed}, points: -30}
    attributes:
      - {id: boss, attribute: job_title, glob: "pres*", points: 20}
      - {id: known-city, attribute: city, exists: true, points: 2}
    inactivity:
      - {id: lapsed, after: 10d, points: -20, revert_on_activity: true}
      - {id: cold, after: 45d, of: {type: [email.replied, form.submitted]}, reset: true}
"""

_RUN = (
    "import sys; from streams import compiled; from streams.cli import main; code = main(); "
    "print('compiled:', len(compiled.loaded()), file=sys.stderr); sys.exit(code)"
)
"""`leadscore` that says on stderr how many of the compiled modules it loaded from the build."""


def _fake_checkout(root: Path) -> dict[str, str]:
    """Sources for every compiled module under `root`, and their hashes."""
    for module in compiled.MODULES:
        path = compiled.source_path(module, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"NAME = {module!r}\n")
    return compiled.source_hashes(compiled.MODULES, root)


def _write_manifest(build: Path, sources: dict[str, str]) -> None:
    build.mkdir(parents=True)
    manifest = {
        "directory": "abc",
        "ext_suffix": compiled.ext_suffix(),
        "mypy": "0",
        "sources": sources,
        "files": {module: f"{module}.so" for module in sources},
    }
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))


def test_a_build_that_matches_its_sources_is_used(tmp_path: Path) -> None:
    _write_manifest(tmp_path / "build", _fake_checkout(tmp_path / "src"))
    found = compiled.check(tmp_path / "build", tmp_path / "src")
    assert found == {m: tmp_path / "build" / "abc" / f"{m}.so" for m in compiled.MODULES}
    finder = compiled.BuildFinder(found)
    spec = finder.find_spec("streams.scoring.engine", None)
    assert spec is not None and spec.origin == str(found["streams.scoring.engine"])
    assert finder.find_spec("streams.worker.app", None) is None  # not compiled: the source


def test_a_changed_source_makes_the_build_stale_and_it_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_manifest(tmp_path / "build", _fake_checkout(tmp_path / "src"))
    changed = compiled.source_path("streams.scoring.engine", tmp_path / "src")
    changed.write_text(changed.read_text() + "# edited\n")
    assert compiled.check(tmp_path / "build", tmp_path / "src") == (
        f"streams/scoring/engine.py changed since {tmp_path / 'build'} was built"
    )
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    finders = list(sys.meta_path)
    with pytest.warns(RuntimeWarning, match=r"not using the compiled core: streams/scoring/eng"):
        assert not compiled.install(tmp_path / "build", tmp_path / "src")
    assert sys.meta_path == finders


def test_a_build_of_other_modules_or_for_another_python_is_stale(tmp_path: Path) -> None:
    sources = _fake_checkout(tmp_path / "src")
    del sources["streams.scoring.engine"]
    _write_manifest(tmp_path / "fewer", sources)
    assert "other modules" in str(compiled.check(tmp_path / "fewer", tmp_path / "src"))
    _write_manifest(tmp_path / "other", _fake_checkout(tmp_path / "src"))
    manifest = json.loads((tmp_path / "other" / compiled.MANIFEST).read_text())
    manifest["ext_suffix"] = ".cpython-399-x86_64-linux-gnu.so"
    (tmp_path / "other" / compiled.MANIFEST).write_text(json.dumps(manifest))
    assert "cpython-399" in str(compiled.check(tmp_path / "other", tmp_path / "src"))


def test_no_build_or_the_pure_switch_runs_the_source_without_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    _fake_checkout(tmp_path / "src")
    monkeypatch.delenv(compiled.PURE_ENV, raising=False)
    assert not compiled.install(tmp_path / "none", tmp_path / "src")
    _write_manifest(tmp_path / "build", _fake_checkout(tmp_path / "src"))
    monkeypatch.setenv(compiled.PURE_ENV, "1")
    assert not compiled.install(tmp_path / "build", tmp_path / "src")
    assert not recwarn.list


def _backtest(events: Path, plans: Path, out: Path, *, pure: bool) -> tuple[str, str]:
    """`leadscore backtest` in a fresh process: (report, stderr)."""
    env = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}
    if pure:
        env[compiled.PURE_ENV] = "1"
    out.mkdir()
    done = subprocess.run(
        [
            *(sys.executable, "-c", _RUN, "backtest", str(events), "--plans", str(plans)),
            *("--alerts", str(out / "alerts.jsonl"), "--scores", str(out / "scores.jsonl")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout, done.stderr


@pytest.mark.parametrize("plans", ["examples", "more"])
def test_the_compiled_and_the_pure_core_give_identical_results(tmp_path: Path, plans: str) -> None:
    """Generated events (with a duplicate, an invalid line and an erasure added) through both
    builds: the alerts and scores files byte for byte, the report apart from its timing line."""
    found = compiled.check()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{found}: under CI=true the build is part of the install (./dev test)")
        pytest.skip(f"{found} (build it with `python -m streams.compile`)")
    events = tmp_path / "events.jsonl"
    subprocess.run(
        [
            *(sys.executable, "-m", "streams", "simulate", str(events)),
            *("--contacts", "1500", "--events", "30000", "--seed", "11"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    lines = events.read_bytes().splitlines()
    erasure = {
        "specversion": "1.0",
        "id": "erase-1",
        "source": "/test",
        "type": "contact.erased",
        "time": json.loads(lines[-1])["time"],
        "subject": json.loads(lines[100])["subject"],
    }
    lines += [lines[200], b"{not json", json.dumps(erasure).encode()]
    events.write_bytes(b"\n".join(lines) + b"\n")
    plan_file = EXAMPLES
    if plans == "more":
        plan_file = tmp_path / "plans.yaml"
        plan_file.write_text(MORE_PLANS)
    pure_report, pure_err = _backtest(events, plan_file, tmp_path / "pure", pure=True)
    fast_report, fast_err = _backtest(events, plan_file, tmp_path / "compiled", pure=False)
    assert "compiled: 0" in pure_err
    assert f"compiled: {len(compiled.MODULES)}" in fast_err
    for name in ("alerts.jsonl", "scores.jsonl"):
        pure_bytes = (tmp_path / "pure" / name).read_bytes()
        assert pure_bytes == (tmp_path / "compiled" / name).read_bytes(), name
    assert pure_bytes.count(b"\n") > 1000  # scores: the contacts, less the erased one
    assert (tmp_path / "pure" / "alerts.jsonl").stat().st_size > 0

    def without_timing(report: str) -> list[str]:
        return [line for line in report.splitlines() if "events/s" not in line]

    assert without_timing(pure_report) == without_timing(fast_report)
    assert "duplicates 1," in pure_report and "rejected lines 1" in pure_report
