"""The `learn` extra stays out of everything but `plans fit`."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sklearn", "numpy", "scipy")


def _loaded_after(statement: str) -> list[str]:
    """The heavy modules in `sys.modules` after `statement`, in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return done.stdout.split()


def test_the_worker_and_the_other_commands_do_not_import_scikit_learn_or_numpy() -> None:
    statement = "import streams.worker.__main__, streams.worker.app, streams.cli"
    assert _loaded_after(f"{statement}, streams.backtest.evaluate") == []


def test_fit_does() -> None:
    """The check above can fail: importing the model loads them."""
    assert _loaded_after("import streams.learn.model") == list(HEAVY)
