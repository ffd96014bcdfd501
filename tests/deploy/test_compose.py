"""docker-compose.yml and deploy/worker/: what a stack that survives `down`/`up` needs.

`docker-compose config` (Debian's docker-compose, no engine needed) validates the file and
prints it resolved; the assertions read that resolved form, so they check what compose would
run rather than how the file happens to be spelled.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, REPO, require

DOCKERFILE = DEPLOY / "worker" / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    tool = require("docker-compose", "docker-compose")
    result = subprocess.run(
        [tool, "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},  # no COMPOSE_* or LEADSCORE_* from the developer's shell
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (source, mode) as `config` prints them (`source:target:mode`);
    the source of an anonymous volume is ""."""
    mounts = {}
    for volume in service.get("volumes", []):
        parts = volume.split(":")
        if len(parts) == 1:
            mounts[parts[0]] = ("", "rw")
        else:
            mounts[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return mounts


def test_kafka_keeps_its_log_dir_in_a_named_volume(compose: dict[str, Any]) -> None:
    """Without it, `down` then `up` gave an empty broker under the worker's persisted state
    (Faust's ConsistencyError at every start)."""
    kafka = compose["services"]["kafka"]
    log_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    volume, mode = _mounts(kafka)[log_dir]
    assert volume in compose["volumes"] and mode == "rw"


def test_every_service_restarts_unless_stopped(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name


def test_workers_can_be_scaled(compose: dict[str, Any]) -> None:
    """No fixed host port, no shared data dir, no fixed advertised URL: each replica gets
    its own port, its own RocksDB and (from the entrypoint) its own address."""
    worker = compose["services"]["worker"]
    for port in worker["ports"]:
        published = port.get("published") if isinstance(port, dict) else None
        assert published in (None, ""), f"fixed host port {published}: --scale would clash"
    assert _mounts(worker)["/data"] == ("", "rw")
    assert "LEADSCORE_ADVERTISED_URL" not in worker["environment"]
    assert "entrypoint" not in worker  # the image's: test_the_entrypoint_advertises_...


def _entrypoint(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    """Run the image's entrypoint with a stand-in `python` that resolves the container's
    address to 10.1.2.3 and prints what the worker would be started with."""
    fake = tmp_path / "python"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = -c ] && { echo 10.1.2.3; exit 0; }\n'
        'echo "$LEADSCORE_ADVERTISED_URL $*"\n'
    )
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(DEPLOY / "worker" / "entrypoint.sh"), *args],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_the_entrypoint_advertises_the_containers_address(tmp_path: Path) -> None:
    assert _entrypoint(tmp_path, {}, "--reset-state") == (
        "http://10.1.2.3:6066 -m streams.worker --reset-state"
    )
    assert _entrypoint(tmp_path, {"LEADSCORE_WEB_PORT": "7000"}).startswith("http://10.1.2.3:7000 ")
    given = {"LEADSCORE_ADVERTISED_URL": "http://leadscore-0.leadscore-workers.ns.svc:6066"}
    assert _entrypoint(tmp_path, given) == f"{given['LEADSCORE_ADVERTISED_URL']} -m streams.worker"


def test_plans_come_from_the_host_read_only(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    directory, _, name = worker["environment"]["LEADSCORE_PLANS"].rpartition("/")
    source, mode = _mounts(worker)[directory]
    assert (REPO / source / name).is_file() and mode == "ro"


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule for one path: the last matching pattern wins, `!` keeps."""
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        cleaned = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatch(path, cleaned) or path.startswith(cleaned + "/"):
            ignored = not keep
    return ignored


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    for sources in copied:
        for source in sources.split():
            assert not _ignored(source.rstrip("/"), patterns), source
    for heavy in (".venv", ".cache", ".git", "tests", "bench", "data"):
        assert _ignored(heavy, patterns), heavy
