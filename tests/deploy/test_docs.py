"""The documents link only to files and sections that exist, and name only paths that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.tools import DEPLOY, REPO, RUNBOOK, anchors

DOCUMENTS = (
    REPO / "README.md",
    REPO / "ARCHITECTURE.md",
    REPO / "CONTRIBUTING.md",
    *sorted((REPO / "docs").glob("*.md")),
    DEPLOY / "README.md",
    RUNBOOK,
)
LINKING = (*DOCUMENTS, REPO / "bench" / "README.md")
"""bench/README.md records past runs, with the paths of their day: its links are checked, not
the paths it names."""
NAMED_PATH = re.compile(r"`((?:streams|tests|bench|deploy|schemas|docs)/[\w./-]*)`")
"""A repository path in backticks, such as `streams/worker/flow/processor.py`."""


def _id(document: Path) -> str:
    return str(document.relative_to(REPO))


@pytest.mark.parametrize("document", LINKING, ids=_id)
def test_relative_links_resolve(document: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", document.read_text()):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{document.name}: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{document.name}: {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_id)
def test_named_paths_exist(document: Path) -> None:
    """A module moved or renamed leaves no stale path in prose (paths are from the top)."""
    missing = [
        path for path in NAMED_PATH.findall(document.read_text()) if not (REPO / path).exists()
    ]
    assert not missing, f"{_id(document)} names paths that do not exist: {missing}"
