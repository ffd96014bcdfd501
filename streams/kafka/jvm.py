"""Owning a JVM child (the embedded broker, a Connect worker): fetch its jars, start, stop.

Why one module: every JVM the tests start must be fetched the same way (Maven into a locked,
marked cache) and must never outlive its owner. It runs in its own process group, which
`stop_group` signals as a whole; and if this process dies without stopping it (SIGKILL,
`os._exit`), the kernel kills the JVM (`PR_SET_PDEATHSIG`). The owners stop their JVMs on
leaving a `with` block and at interpreter exit; `catch_stop_signals` turns SIGTERM/SIGHUP into
KeyboardInterrupt so that those paths run then too.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

MAVEN_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 40
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


class JvmError(RuntimeError):
    """A JVM or its jars could not be fetched, started or reached; the message says why."""


# --- fetching jars -----------------------------------------------------------------------------


def fetch_jars(pom: Path, home: Path, jar_glob: str, what: str) -> Path:
    """Return `home/libs` holding `pom`'s runtime classpath, running Maven only when incomplete.

    The marker file holds the pom's hash and is written only after Maven succeeded, so a copy
    Maven did not finish, or one made from an older pom, is fetched again. The file lock makes
    parallel sessions on one machine (pytest-xdist, CI jobs) fetch once instead of racing.
    `jar_glob` names a jar that must be there afterwards; `what` names the download in errors.
    """
    libs = home / "libs"
    marker = home / "libs.complete"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text().strip() == digest:
            return libs
        marker.unlink(missing_ok=True)
        shutil.rmtree(libs, ignore_errors=True)
        run_maven(pom, libs, jar_glob, what)
        marker.write_text(digest + "\n")
    return libs


def run_maven(pom: Path, libs: Path, jar_glob: str, what: str) -> None:
    """Copy `pom`'s runtime classpath into `libs` (batch mode: CI has no stdin)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JvmError(f"Maven (mvn) is not on PATH; it fetches {what} from Maven Central")
    command = [
        mvn,
        "-q",
        "-B",
        "-Dstyle.color=never",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-Dkafka.libs.dir={libs}",
    ]
    done = run_tool(command, MAVEN_TIMEOUT_S, "Maven")
    if done.returncode != 0 or not any(libs.glob(jar_glob)):
        output = tail_text(done.stdout + done.stderr)
        raise JvmError(f"Maven could not fetch {what} (exit {done.returncode}):\n{output}")


def run_tool(command: list[str], timeout: float, name: str) -> subprocess.CompletedProcess[str]:
    """Run a setup tool (Maven, the StorageTool) to its end, its output kept for the error.

    No stdin (CI has none) and a deadline, so a tool that hangs fails the start with an error
    naming it instead of hanging it.
    """
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise JvmError(f"{name} did not finish within {timeout:.0f} s") from exc


# --- process ownership -------------------------------------------------------------------------


class OwnedJvm(ABC):
    """A JVM child this process owns: a `with` block stops it, and so does interpreter exit
    (also after Ctrl-C) for one still running. `start` calls `_owned` before launching it,
    `stop` calls `_released`."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None:
        """Stop the JVM (each owner has its own deadline for that); safe to call more than
        once."""

    def _owned(self) -> None:
        _live.add(self)

    def _released(self) -> None:
        _live.discard(self)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_live: set[OwnedJvm] = set()


@atexit.register
def _stop_all() -> None:
    """Stop every JVM still running when the interpreter exits."""
    for jvm in list(_live):
        jvm.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so they unwind like Ctrl-C.

    Their default action ends Python at once, skipping `with` blocks, pytest's fixture teardown
    and `atexit`, which would leave the JVM running.
    """
    raise KeyboardInterrupt(signal.Signals(signum).name)


def catch_stop_signals(*, always: bool = False) -> None:
    """Install `_interrupt` for signals nobody handles yet; only the main thread may do so.

    A handler someone else installed (a Faust worker's, say) is left alone unless `always`: its
    owner shuts down, and `atexit` stops the JVM after that. Ours stays installed after the JVM
    stops; it only ends the process the orderly way instead of the abrupt one.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        if always or signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _interrupt)


def _die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` asking Linux to SIGKILL the child when this process dies.

    The kernel acts when the *thread* that forked exits, so it is used only from the main
    thread, whose end is the process's end.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))

    return set_death_signal


def launch(
    command: list[str], console: Path, cwd: Path, user: str | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` in a process group of its own, its output appended to `console`.

    It dies with this process (`PR_SET_PDEATHSIG`, set after the switch to `user`, which
    would clear it) and `stop_group` ends it with everything it started. `user`: run as this
    user (a server that refuses root, such as PostgreSQL's).
    """
    with console.open("ab") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            user=user,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - only calls prctl(2)
        )


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    """Signal the JVM's whole process group (its pgid is its pid: `start_new_session`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def stop_group(
    process: subprocess.Popen[bytes], timeout: float, signum: signal.Signals = signal.SIGTERM
) -> None:
    """Signal the process group for a clean shutdown (SIGTERM, or the server's own choice),
    SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    _signal_group(process, signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def java() -> str:
    """`$JAVA_HOME/bin/java` when JAVA_HOME is set (as Kafka's own scripts do), else PATH's."""
    home = os.environ.get("JAVA_HOME")
    path = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if path is None or not Path(path).is_file():
        raise JvmError("Java not found (set JAVA_HOME or put java on PATH); Kafka needs 17+")
    return path


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tail_file(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The end of a log without Java stack frames, which would crowd out the causes."""
    if not path.is_file():
        return f"(no {path.name})"
    kept = [
        line
        for line in path.read_text(errors="replace").splitlines()
        if not line.startswith(("\tat ", "\t... "))
    ]
    return "\n".join(kept[-lines:])
