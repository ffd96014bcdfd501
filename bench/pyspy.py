"""Sampling a running worker with py-spy, and reading the samples back as percentages.

py-spy reads the target's memory from outside (ptrace, hence root), so the worker runs
unmodified. Its `raw` format is one line per distinct stack, `frame;frame;...;leaf COUNT`,
root first, each frame `function (file:line)`, after a `thread (TID): NAME` frame (`-t`).

The worker has two Python threads: the event loop that runs the agent, the fetcher, the
producer and the commits (MainThread), and the thread in which Faust runs aiokafka's
consumer. The event loop is the one that is busy; the consumer thread mostly waits in
`select()`, which py-spy does not always recognise as idle. So the shares by *thread* come
first, and the rest describes the event-loop thread alone, as a share of its samples:

- *self*: the leaf function of each sample, where the CPU actually was;
- *inclusive*: every function on the stack, once per sample, the time spent in it and below;
- *component*: the leaf's package (faust, aiokafka, asyncio, the scoring core, ...): which
  layer the time goes to;
- *task*: the two frames under `Handle._run`, i.e. which coroutine (the agent, Faust's
  fetcher, aiokafka's sender, the commit handler, ...) the event loop was running.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_THREAD = re.compile(r"^thread \(\d+\): (?P<name>.*)$")
COMPONENTS = (
    ("streams/scoring/", "leadscore core (streams/scoring)"),
    ("streams/models/", "leadscore models (events, outputs)"),
    ("streams/worker/", "leadscore worker shell (streams/worker)"),
    ("faust/", "faust"),
    ("mode/", "mode (faust's service framework)"),
    ("aiokafka/", "aiokafka"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "asyncio"),
    ("prometheus_client/", "prometheus_client"),
    ("rocksdict/", "rocksdict"),
    ("logging/", "logging"),
    ("msgpack/", "msgpack"),
)


def executable() -> str | None:
    """py-spy from the same environment as this Python, else from PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start(pid: int, output: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Sample `pid` until `stop()`; the samples go to `output` in raw (collapsed) format."""
    program = executable()
    if program is None:
        raise FileNotFoundError("py-spy is not installed (pip install py-spy)")
    command = [program, "record", "-p", str(pid), "-r", str(rate), "-t", "-f", "raw"]
    command += ["-o", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(recorder: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Ctrl-C, which makes py-spy write its file; raise with its message if it failed."""
    if recorder.poll() is None:
        recorder.send_signal(signal.SIGINT)
    try:
        _, errors = recorder.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        recorder.kill()
        recorder.communicate()
        raise RuntimeError("py-spy did not stop within its timeout") from None
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed ({recorder.returncode}): {errors.decode().strip()}")


def parse_frame(frame: str) -> tuple[str, str]:
    """`'apply (streams/scoring/engine.py:103)'` -> `('apply', 'streams/scoring/engine.py')`."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["function"], match["file"]


def component(file: str) -> str:
    for marker, name in COMPONENTS:
        if marker in file:
            return name
    return "other (stdlib, C extensions' callers)"


def summarize(lines: Iterable[str], top: int = 20, thread: str = "MainThread") -> dict[str, Any]:
    """Shares of samples per thread, then of `thread`'s samples by leaf function, by function
    anywhere on the stack, by layer and by event-loop task."""
    threads: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    components: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        names = stack.split(";")
        named = _THREAD.match(names[0])
        name = named["name"] if named else thread
        threads[name] += count
        frames = [parse_frame(frame) for frame in names[1 if named else 0 :]]
        if name != thread or not frames:
            continue
        leaf_function, leaf_file = frames[-1]
        self_counts[f"{leaf_function} ({leaf_file})"] += count
        components[component(leaf_file)] += count
        for function, file in set(frames):
            inclusive[f"{function} ({file})"] += count
        tasks[_task([function for function, _ in frames])] += count

    def shares(counter: Counter[str], limit: int | None) -> list[dict[str, Any]]:
        # Of the samples, not of the counter's sum: a stack counts once for every function on it.
        total = sum(threads.values()) if counter is threads else threads[thread]
        return [
            {"frame": name, "percent": round(100 * count / total, 1)}
            for name, count in counter.most_common(limit)
        ]

    return {
        "thread": thread,
        "samples": threads[thread],
        "threads": shares(threads, None),
        "tasks": shares(tasks, top),
        "components": shares(components, None),
        # Frames on (nearly) every stack, such as the event loop's own, say nothing.
        "inclusive": [row for row in shares(inclusive, top + 12) if row["percent"] < 99.5][:top],
        "self": shares(self_counts, top),
    }


def _task(functions: list[str]) -> str:
    """`coroutine > callee` under the event loop's `Handle._run`, or the loop's own frame."""
    if "Handle._run" not in functions:
        return f"event loop itself: {functions[-1]}"
    below = functions[functions.index("Handle._run") + 1 :][:2]
    return " > ".join(below) if below else "Handle._run"
