"""The layers of `streams`, as ARCHITECTURE.md draws them: a module imports its own part or the
parts below it, never a part beside or above it. Checked on every import statement, those
under `TYPE_CHECKING` and inside functions too, so that a layer cannot leak in by a side door
(an import circle starts as one such import)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "streams"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("streams.compiled",),
    ("streams", "streams.compile"),
    ("streams.models",),
    ("streams.scoring",),
    ("streams.kafka", "streams.backtest"),
    ("streams.learn",),
    ("streams.worker.runtime",),
    ("streams.worker.plans",),
    ("streams.worker.state",),
    ("streams.worker.settings",),
    ("streams.worker.web",),
    ("streams.worker.flow",),
    ("streams.worker.rescore",),
    ("streams.worker.app",),
)
"""Lowest first. Parts in one row are peers: neither imports the other."""

RANK = {part: rank for rank, row in enumerate(LAYERS) for part in row}


REGISTERS = frozenset({"add_cli", "add_parser", "add_parsers"})
"""What a module defines to add its subcommands to `leadscore`."""


def is_entry_point(module: str) -> bool:
    """A command composes the layers it needs, so it may import from any of them."""
    leaf = module.rsplit(".", 1)[-1]
    if leaf in ("cli", "__main__") or module.startswith("streams.worker.commands."):
        return True
    path = ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")
    return path.exists() and any(
        isinstance(node, ast.FunctionDef) and node.name in REGISTERS
        for node in ast.parse(path.read_text()).body
    )


def part_of(module: str) -> str:
    """The longest part in `LAYERS` that holds the module."""
    candidates = [part for part in RANK if module == part or module.startswith(part + ".")]
    assert candidates, f"{module} belongs to no layer: add its part to LAYERS"
    return max(candidates, key=len)


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def violations(module: str, path: Path) -> list[str]:
    if is_entry_point(module):
        return []
    if module == "streams.worker":
        return []  # the package's docstring only
    own = part_of(module)
    found = []
    for imported in imports(path):
        if not imported.startswith("streams"):
            continue
        other = part_of(imported)
        if other != own and RANK[other] >= RANK[own]:
            found.append(f"{module} ({own}) imports {imported} ({other}), not below it")
    return found


@pytest.mark.parametrize(("module", "path"), [pytest.param(m, p, id=m) for m, p in modules()])
def test_a_module_imports_only_its_own_part_and_the_layers_below(module: str, path: Path) -> None:
    assert violations(module, path) == []


def test_the_check_sees_an_import_from_above(tmp_path: Path) -> None:
    """The rule can fail: a state module importing the flow above it is caught, also when the
    import hides under TYPE_CHECKING."""
    source = tmp_path / "states.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from streams.worker.flow.processor import Processor\n"
    )
    assert violations("streams.worker.state.states", source) == [
        "streams.worker.state.states (streams.worker.state) imports "
        "streams.worker.flow.processor (streams.worker.flow), not below it"
    ]
