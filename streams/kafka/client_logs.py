"""Quiet client logs during an outage: one line per broker and kind of message per interval.

A broker that is down makes every client retry every few hundred milliseconds, and both
librdkafka and aiokafka log each failed attempt: a 27 s outage once wrote about 4,100
`Connection refused` lines, which buried whatever else happened. `RepeatFilter` lets the first
record of a kind through, holds back its repeats for `interval` seconds, and adds their count
to the next one it lets through, so the log still says how long and how often it failed.

librdkafka's clients log through `LIBRDKAFKA` (their `logger` and `error_cb` hooks, set by
`streams.kafka.security.KafkaConnection.librdkafka` for every client the project builds);
aiokafka's loggers get the same filter from `quiet_aiokafka`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError

REPEAT_INTERVAL = 10.0
"""Seconds during which repeats of a logged client message are counted instead of written."""
MAX_KINDS = 512
"""Kinds remembered before expired ones are dropped (bounds memory on odd messages)."""

_BROKER = re.compile(r"[\w.\-\[\]]+:\d+|\('[^']*', \d+\)|node (?:with )?id \d+")
"""How the two libraries name a broker: `host:port` (librdkafka, aiokafka's connections),
`('host', port)` (aiokafka's refused connects), `node id N` (aiokafka's requests)."""
_NUMBER = re.compile(r"\d+")

LIBRDKAFKA = logging.getLogger("streams.kafka.librdkafka")
"""The logger every librdkafka client of the project writes to (its `logger` config)."""


@dataclass(slots=True)
class _Window:
    started: float
    held_back: int = 0


def repeat_kind(record: logging.LogRecord) -> tuple[str, int, str, str]:
    """What makes two records repeats: logger, level, the broker named, and the message with
    its numbers blanked (timings and counters change between retries; ports are in the
    broker part, so two brokers stay apart)."""
    message = record.getMessage()
    broker = _BROKER.search(message)
    return (
        record.name,
        record.levelno,
        broker.group() if broker else "",
        _NUMBER.sub("#", message),
    )


class RepeatFilter(logging.Filter):
    """A logging filter that passes one record of each kind per `interval` seconds.

    The record that opens a new interval carries the count of those held back in the last
    one. The clock is injected so tests move it instead of waiting.
    """

    def __init__(
        self, interval: float = REPEAT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._windows: dict[tuple[str, int, str, str], _Window] = {}
        self._lock = threading.Lock()  # librdkafka logs from the threads that poll it

    def filter(self, record: logging.LogRecord) -> bool:
        kind = repeat_kind(record)
        now = self._clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is not None and now - window.started < self.interval:
                window.held_back += 1
                return False
            if len(self._windows) >= MAX_KINDS:
                self._forget_expired(now)
            self._windows[kind] = _Window(now)
        if window is not None and window.held_back:
            record.msg = (
                f"{record.getMessage()} ({window.held_back} more like this in the last "
                f"{now - window.started:.0f} s)"
            )
            record.args = ()
        return True

    def _forget_expired(self, now: float) -> None:
        for kind, window in list(self._windows.items()):
            if now - window.started >= self.interval:
                del self._windows[kind]


def log_client_error(error: KafkaError) -> None:
    """librdkafka's `error_cb`: retriable errors (a broker down) are warnings, through the
    same filter as its log lines; without this hook librdkafka prints each one to stderr."""
    level = logging.ERROR if error.fatal() else logging.WARNING
    LIBRDKAFKA.log(level, "%s: %s", error.name(), error.str())


def quiet_aiokafka(repeats: RepeatFilter) -> None:
    """Put `repeats` on every aiokafka logger (a filter acts only on its own logger's
    records, not on those propagated from children). Call after Faust's driver is imported,
    which creates them."""
    for name in list(logging.root.manager.loggerDict):
        if name == "aiokafka" or name.startswith("aiokafka."):
            logger = logging.getLogger(name)
            if repeats not in logger.filters:
                logger.addFilter(repeats)


CLIENT_REPEATS = RepeatFilter()
"""The process's one filter for client logs, shared so that each kind is counted once."""
LIBRDKAFKA.addFilter(CLIENT_REPEATS)
