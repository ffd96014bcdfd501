"""Finding the operations tools the deploy tests run (Debian's `prometheus`, `docker-compose`).

`.ci/run` installs them on CI; a developer machine without them skips those tests and says
which package to install, instead of failing or passing silently.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RUNBOOK = DEPLOY / "RUNBOOK.md"


def require(tool: str, package: str) -> str:
    """The path of `tool`, or skip the test naming the package that provides it."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package}; .ci/run does on CI)")
    return path


def anchors(document: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped."""
    headings = re.findall(r"^#+ (.+)$", document.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def runbook_anchors() -> set[str]:
    return anchors(RUNBOOK)


def load_yaml_documents(path: Path) -> list[dict[str, object]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
