"""ARCHITECTURE.md is the map of `streams/`: every module is on it, and nothing else is.

A module added without a line on the map, or a line left behind by a move, fails here, so an
engineer can trust the map to say which module to open.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "ARCHITECTURE.md"
NAMED = re.compile(r"`(streams/(?:[\w/]*?(?:\.py|/))?)`")
"""A module (`streams/worker/flow/processor.py`) or a package (`streams/worker/flow/`)."""


def _named() -> set[str]:
    return set(NAMED.findall(MAP.read_text()))


def _modules() -> set[str]:
    """Every module and package under streams/; `__init__.py` is named by its package."""
    found = set()
    for path in (REPO / "streams").rglob("*.py"):
        relative = path.relative_to(REPO)
        if "__pycache__" in relative.parts:
            continue
        found.add(f"{relative.parent}/" if path.name == "__init__.py" else str(relative))
    return found


def test_every_module_under_streams_is_on_the_map() -> None:
    missing = sorted(_modules() - _named())
    assert not missing, (
        f"not named in ARCHITECTURE.md: {missing}; add a row with its role to the table of "
        "its package (and the package to the layer tables if it is new)"
    )


def test_every_module_on_the_map_exists() -> None:
    stale = sorted(name for name in _named() if not (REPO / name).exists())
    assert not stale, f"ARCHITECTURE.md names what no longer exists: {stale}; fix or drop the rows"
