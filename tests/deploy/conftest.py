"""The worker fixtures, for the dashboard test that scrapes a real worker."""

from tests.worker.conftest import start_worker

__all__ = ["start_worker"]
