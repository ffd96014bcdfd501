"""Fixtures shared by the whole test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.kafka.broker import broker_from_env


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap address of a real Kafka broker, one per session.

    A broker takes seconds to start, so integration tests share it (each uses its own topics
    and groups). `$LEADSCORE_KAFKA_BOOTSTRAP` points the suite at an existing broker instead.
    """
    with broker_from_env() as bootstrap:
        yield bootstrap
