"""The compiled core: the same Python source built with mypyc, used only while it matches.

`MODULES` is the one list of what is compiled. `python -m streams.compile` builds it (`./dev`
does, when a source changed) into `.build/mypyc/` beside the package, git-ignored, with a
manifest of each module's source hash. When `streams` is imported, a finder on
`sys.meta_path` loads those modules from the build, and only if every hash still matches its
source: a build older than its source is never used. The modules then load from the source,
and a warning says why and how to rebuild.

Why a directory of its own and a finder: the import system prefers an extension module to a
`.py` of the same name in the same folder, stale or not, and a checkout with no build (or
`LEADSCORE_PURE_PYTHON=1`) must run the source as it is.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

MODULES: Final = (
    "streams.models.times",
    "streams.models.events",
    "streams.models.matchers",
    "streams.models.plans",
    "streams.models.outputs",
    "streams.models.plan_versions",
    "streams.scoring.state",
    "streams.scoring.engine",
)
"""Compiled together (calls between them are native): the scoring core and the decoder."""

PURE_ENV: Final = "LEADSCORE_PURE_PYTHON"
"""Set to 1 to run the pure-Python source whatever was built."""
ROOT: Final = Path(__file__).resolve().parent.parent
BUILD: Final = ROOT / ".build" / "mypyc"
GROUP: Final = "leadscore_core"
"""mypyc's shared library is the module `leadscore_core__mypyc`, loaded by the finder too."""
MANIFEST: Final = "manifest.json"


def source_path(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_hashes(modules: Sequence[str] = MODULES, root: Path = ROOT) -> dict[str, str]:
    return {
        module: hashlib.sha256(source_path(module, root).read_bytes()).hexdigest()
        for module in modules
    }


def ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX"))


def check(build: Path = BUILD, root: Path = ROOT) -> dict[str, Path] | str:
    """The build's extension file per module if it matches the sources; else why not."""
    try:
        manifest: dict[str, Any] = json.loads((build / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no compiled build in {build}"
    if manifest.get("ext_suffix") != ext_suffix():
        return f"{build} was built for {manifest.get('ext_suffix')}, not {ext_suffix()}"
    built: dict[str, str] = manifest["sources"]
    if sorted(built) != sorted(MODULES):
        return f"{build} compiled other modules than streams.compiled.MODULES lists"
    for module, digest in source_hashes(MODULES, root).items():
        if built[module] != digest:
            return f"{source_path(module, root).relative_to(root)} changed since {build} was built"
    directory = build / manifest["directory"]
    return {module: directory / name for module, name in manifest["files"].items()}


class BuildFinder(importlib.abc.MetaPathFinder):
    """Finds the compiled modules (and mypyc's shared library) in the build directory."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        location = self.files.get(fullname)
        if location is None:
            return None
        return importlib.util.spec_from_file_location(fullname, location)


def install(build: Path = BUILD, root: Path = ROOT) -> bool:
    """Called when `streams` is imported: use a matching build (True), warn about a stale one."""
    if os.environ.get(PURE_ENV, "0") not in ("", "0"):
        return False
    found = check(build, root)
    if isinstance(found, str):
        if (build / MANIFEST).exists():
            warnings.warn(
                f"leadscore: not using the compiled core: {found}; running the pure-Python "
                f"source. Rebuild with `python -m streams.compile` (./dev does it), or set "
                f"{PURE_ENV}=1 to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
        return False
    sys.meta_path.insert(0, BuildFinder(found))
    return True


def loaded() -> list[str]:
    """The modules of `MODULES` this process imported from the compiled build."""
    return [
        name
        for name in MODULES
        if (module := sys.modules.get(name)) is not None
        and str(getattr(module, "__file__", "")).endswith(ext_suffix())
    ]
