"""Worker fixtures: real worker processes on the session's broker, always stopped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faust
import pytest

from streams.worker.state.store import ContactStore, ContactTable
from tests.worker.harness import WorkerProcess, new_prefix

StartWorker = Callable[..., WorkerProcess]


def _starter(bootstrap: str, directory: Path, started: list[WorkerProcess]) -> StartWorker:
    def start(
        name: str = "worker", prefix: str | None = None, wait_ready: bool = True, **options: Any
    ) -> WorkerProcess:
        worker = WorkerProcess(
            bootstrap,
            prefix or new_prefix(),
            directory / f"{name}-data",
            directory / f"{name}.log",
            **options,
        )
        started.append(worker)
        return worker.start(wait_ready=wait_ready)

    return start


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ContactStore]:
    """A contact table of two partitions in `tmp_path`, without a broker: Faust's RocksDB
    store only needs an app configuration to open its databases."""
    app = faust.App("store-test", store="rocksdb://", datadir=str(tmp_path))
    table = ContactTable(app, name="contacts", partitions=2, key_type=bytes, value_type=bytes)
    yield table.store
    table.store.close()


@pytest.fixture
def start_worker(kafka_bootstrap: str, tmp_path: Path) -> Iterator[StartWorker]:
    """Start workers (each with its own topic prefix unless given); all are killed at the end."""
    started: list[WorkerProcess] = []
    yield _starter(kafka_bootstrap, tmp_path, started)
    for worker in started:
        worker.ensure_stopped()


@pytest.fixture(scope="module")
def shared_worker(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker for the tests that only add contacts of their own (saves a start each)."""
    started: list[WorkerProcess] = []
    worker = _starter(kafka_bootstrap, tmp_path_factory.mktemp("shared"), started)()
    yield worker
    for each in started:
        each.ensure_stopped()
