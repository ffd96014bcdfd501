"""Durations as marketers write them (`90s`, `15m`, `12h`, `30d`, `2w`)."""

from __future__ import annotations

import re

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_PATTERN = r"^[1-9][0-9]*(s|m|h|d|w)$"
_DURATION = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> float:
    """Seconds in a duration; raises ValueError naming the accepted forms."""
    if not isinstance(text, str) or not _DURATION.match(text):
        raise ValueError(f"expected a duration like 90s, 15m, 12h, 30d or 2w, got {text!r}")
    return float(int(text[:-1]) * UNIT_SECONDS[text[-1]])
