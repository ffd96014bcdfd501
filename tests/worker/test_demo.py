"""`leadscore demo`: alerts printed as they arrive, and nothing left running afterwards."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from queue import Empty, Queue
from typing import IO

import pytest

from tests.worker.harness import REPO, free_port

pytestmark = pytest.mark.integration

# The `leadscore` entry point is the lead's; the demo's own parser is enough here.
DEMO = (
    "import argparse, sys\n"
    "from streams.worker.cli import add_cli\n"
    "parser = argparse.ArgumentParser(prog='leadscore')\n"
    "add_cli(parser.add_subparsers(required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.handler(args))\n"
)
ALERT = re.compile(r"^\S+ \S+  c-\d+ +(lead-score|icp-fit) +(crossed|dropped) \S+ \(\d+\)  score ")


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


def test_demo_prints_alerts_and_stops_its_worker(kafka_bootstrap: str) -> None:
    demo = _demo(kafka_bootstrap, "--rate", "0", "--alerts", "3")
    stdout, stderr = demo.communicate(timeout=180)
    assert demo.returncode == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 3 and all(ALERT.match(line) for line in lines), stdout
    assert "why: " in lines[0]
    assert _gone(_worker_pid(stderr))


def test_sigterm_stops_the_demo_and_its_worker(kafka_bootstrap: str) -> None:
    demo = _demo(kafka_bootstrap, "--rate", "300")
    lines: Queue[str] = Queue()

    def pump(stream: IO[str]) -> None:
        for line in stream:
            lines.put(line)

    assert demo.stdout is not None
    threading.Thread(target=pump, args=(demo.stdout,), daemon=True).start()
    try:
        first = lines.get(timeout=180)
    except Empty:
        demo.kill()
        pytest.fail(f"no alert printed\n{demo.communicate()[1]}")
    assert ALERT.match(first), first
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(90) == 0
    assert demo.stderr is not None
    assert _gone(_worker_pid(demo.stderr.read()))
