"""The published JSON Schemas (`schemas/` at the top of the repository).

They are the contract for producers and consumers; the code validates plans against them so the
published file and the behaviour cannot drift apart.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson

_PACKAGED = Path(__file__).resolve().parent.parent / "_schemas"
_REPOSITORY = Path(__file__).resolve().parent.parent.parent / "schemas"


def schema_dir() -> Path:
    """`streams/_schemas` in an installed wheel, the repository's `schemas/` in a checkout."""
    return _PACKAGED if _PACKAGED.is_dir() else _REPOSITORY


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by file stem, e.g. `plans` for `plans.schema.json`."""
    loaded: dict[str, Any] = orjson.loads((schema_dir() / f"{name}.schema.json").read_bytes())
    return loaded
