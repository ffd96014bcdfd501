"""Build the compiled core (`streams.compiled.MODULES`) with mypyc, when its sources changed.

    python -m streams.compile     # ./dev run, test and bench do it; quiet when up to date

A module of its own, apart from `streams.compiled`, which `streams` imports first: running
that one as `__main__` would load it twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import mypy.version

from streams.compiled import (
    BUILD,
    GROUP,
    MANIFEST,
    MODULES,
    ROOT,
    check,
    ext_suffix,
    source_hashes,
    source_path,
)


def stale() -> str | None:
    """Why the build must be made again (its sources, Python or mypy changed), or None."""
    found = check()
    if isinstance(found, str):
        return found
    manifest: dict[str, Any] = json.loads((BUILD / MANIFEST).read_text())
    if manifest["mypy"] != mypy.version.__version__:
        return f"built with mypy {manifest['mypy']}, the venv has {mypy.version.__version__}"
    return None


def build() -> None:
    """Compile into a directory of its own, then replace the manifest: a process starting
    meanwhile loads the old build or the new one, never half of one, and processes already
    running keep the files they loaded."""
    sources = source_hashes()
    key = hashlib.sha256(
        json.dumps([sources, ext_suffix(), mypy.version.__version__]).encode()
    ).hexdigest()[:16]
    work = BUILD / f"tmp-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    _compile(work)
    files = {
        module: str(Path(*module.split(".")[:-1], module.split(".")[-1] + ext_suffix()))
        for module in (*MODULES, f"{GROUP}__mypyc")
    }
    missing = [name for name in files.values() if not (work / "lib" / name).is_file()]
    if missing:
        raise RuntimeError(f"mypyc built no {', '.join(missing)} in {work / 'lib'}")
    directory = BUILD / key
    shutil.rmtree(directory, ignore_errors=True)
    (work / "lib").rename(directory)
    (work / "c").rename(directory / "c")  # mypyc's C, for reading profiles
    manifest = {
        "directory": key,
        "ext_suffix": ext_suffix(),
        "mypy": mypy.version.__version__,
        "sources": sources,
        "files": files,
    }
    staged = BUILD / f"{MANIFEST}.{os.getpid()}"
    staged.write_text(json.dumps(manifest, indent=2) + "\n")
    staged.replace(BUILD / MANIFEST)
    shutil.rmtree(work, ignore_errors=True)
    for old in BUILD.iterdir():
        if old.is_dir() and old.name != key and not old.name.startswith("tmp-"):
            shutil.rmtree(old, ignore_errors=True)


def _compile(work: Path) -> None:
    """mypyc through setuptools' build_ext, run from the checkout's root (mypy reads its
    settings from pyproject.toml there); everything it writes goes inside `work`."""
    from mypyc.build import mypycify  # noqa: PLC0415  (imports setuptools: only when building)
    from setuptools import setup  # noqa: PLC0415

    paths = [str(source_path(module).relative_to(ROOT)) for module in MODULES]
    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        setup(
            name="leadscore-compiled-core",
            packages=[],
            py_modules=[],
            ext_modules=mypycify(
                paths, opt_level="3", group_name=GROUP, target_dir=str(work / "c")
            ),
            script_args=[
                "--quiet",
                "build_ext",
                "--build-lib",
                str(work / "lib"),
                "--build-temp",
                str(work / "obj"),
            ],
        )
    finally:
        os.chdir(cwd)


def main() -> int:
    reason = stale()
    if reason is None:
        return 0
    print(f"leadscore: building the compiled core with mypyc ({reason})", file=sys.stderr)
    build()
    print(f"leadscore: compiled core built in {BUILD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
