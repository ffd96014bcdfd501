"""`leadscore demo`: alerts printed as they arrive, each with its change's points, and nothing
left running afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from queue import Empty, Queue
from typing import IO, Any

import pytest

from streams.models.outputs import SCORE_CHANGED, THRESHOLD_CROSSED
from streams.worker.commands.demo import AlertPoints, describe, top_line
from tests.worker.harness import REPO, free_port

# The `leadscore` entry point is the lead's; the demo's own parser is enough here.
DEMO = (
    "import argparse, sys\n"
    "from streams.worker.commands.run import add_cli\n"
    "parser = argparse.ArgumentParser(prog='leadscore')\n"
    "add_cli(parser.add_subparsers(required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.handler(args))\n"
)
ALERT = re.compile(r"^\S+ \S+  c-\d+ +(lead-score|icp-fit) +(crossed|dropped) \S+ \(\d+\)  score ")
TOP = re.compile(r"^top 5 now  (lead-score|icp-fit): (none yet|c-\d+ -?\d+(, c-\d+ -?\d+){0,4})$")
WHY = re.compile(r"  why: (\S+ \S+|timer \S+): (-|\S+ [+-]\d+(, \S+ [+-]\d+)*)$")


def _demo(kafka_bootstrap: str, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "LEADSCORE_KAFKA_BOOTSTRAP": kafka_bootstrap}
    command = [sys.executable, "-c", DEMO, "demo", "--contacts", "100", "--events", "3000"]
    return subprocess.Popen(
        [*command, "--web-port", str(free_port()), *options],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _worker_pid(stderr: str) -> int:
    match = re.search(r"worker pid (\d+)", stderr)
    assert match, stderr
    return int(match.group(1))


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.integration
def test_demo_prints_alerts_and_stops_its_worker(kafka_bootstrap: str) -> None:
    demo = _demo(kafka_bootstrap, "--rate", "0", "--alerts", "3")
    stdout, stderr = demo.communicate(timeout=180)
    assert demo.returncode == 0, stderr
    lines = [line for line in stdout.splitlines() if not line.startswith("top 5 now")]
    assert len(lines) == 3 and all(ALERT.match(line) for line in lines), stdout
    assert all(WHY.search(line) for line in lines), stdout
    assert _gone(_worker_pid(stderr))


@pytest.mark.integration
def test_sigterm_stops_the_demo_and_its_worker(kafka_bootstrap: str) -> None:
    demo = _demo(kafka_bootstrap, "--rate", "300")
    lines: Queue[str] = Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)

    assert demo.stdout is not None
    threading.Thread(target=pump, args=(demo.stdout,), daemon=True).start()
    seen: list[str] = []
    # An alert, and a leaderboard whose plans have leads (the first may come before any).
    while not (
        any(map(ALERT.match, seen)) and any("none yet" not in s for s in seen if TOP.match(s))
    ):
        try:
            seen.append(lines.get(timeout=180).rstrip("\n"))
        except Empty:
            demo.kill()
            pytest.fail(f"no alert and leaderboard printed\n{seen}\n{demo.communicate()[1]}")
        assert ALERT.match(seen[-1]) or TOP.match(seen[-1]), seen[-1]
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(90) == 0
    assert demo.stderr is not None
    assert _gone(_worker_pid(demo.stderr.read()))


def _output(
    kind: str, score: int, previous: int, breakdown: dict[str, int], event_id: str
) -> dict[str, Any]:
    cause = {
        "event_id": event_id,
        "event_source": "/web",
        "event_type": "email.opened",
        "rules": ["opened"],
    }
    data = {
        "contact_id": "c-1",
        "plan": "lead-score",
        "score": score,
        "previous_score": previous,
        "cause": cause,
        "breakdown": breakdown,
    }
    if kind == THRESHOLD_CROSSED:
        data |= {"threshold": "warm", "threshold_score": 100}
    return {"type": kind, "time": f"2026-03-0{score // 100 + 1}T10:00:00Z", "data": data}


def test_an_alert_shows_the_points_of_its_own_change_whichever_topic_comes_first() -> None:
    """The alert's breakdown says `opened +100`; the change that sent it was `opened +10`."""
    updates = [
        _output(SCORE_CHANGED, 10 * n, 10 * (n - 1), {"opened": 10 * n}, f"e-{n}")
        for n in range(1, 11)
    ]
    alert = _output(THRESHOLD_CROSSED, 100, 90, {"opened": 100}, "e-10")
    expected = (
        "2026-03-02 10:00  c-1        lead-score  crossed warm (100)  score 100 (was 90)  "
        "why: email.opened e-10: opened +10"
    )
    late = AlertPoints()
    assert [late.update(update) for update in updates] == [[]] * 10
    assert [describe(*shown) for shown in late.alert(alert)] == [expected]

    early = AlertPoints()
    assert [early.update(update) for update in updates[:9]] == [[]] * 9
    assert early.alert(alert) == []  # its own update is not read yet
    assert [describe(*shown) for shown in early.update(updates[9])] == [expected]


def test_a_leaderboard_line_names_its_plan_and_says_when_partitions_are_missing() -> None:
    leads = [{"contact_id": f"c-{i}", "score": 300 - i, "changed_at": "x"} for i in range(2)]
    whole = {"leads": leads, "partial": False, "missing_partitions": []}
    assert top_line("lead-score", whole) == "top 5 now  lead-score: c-0 300, c-1 299"
    partial = {"leads": [], "partial": True, "missing_partitions": [1, 2]}
    assert top_line("icp-fit", partial) == "top 5 now  icp-fit: none yet (partitions 1, 2 missing)"
