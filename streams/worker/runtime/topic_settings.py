"""Configs of the topics the worker creates: how long they keep data, and for how long the
changelog may still hold what an erased contact's state said.

An erased contact's state becomes a record that holds only its id and erasure time (see
`streams.scoring.engine`), under the same changelog key as the records before it, which held
its attributes and activity. Compaction removes those older records, but Kafka only compacts
segments that are no longer active and only when the cleaner picks the log. Three settings
bound that:

- `segment.ms`: the active segment rolls at the first write after it is this old, so the
  erasure record leaves the active segment (the cleaner never touches that one);
- `max.compaction.lag.ms`: a rolled segment is compacted once its first record is this old,
  however small the dirty part of the log is;
- `min.cleanable.dirty.ratio`: the trigger for compaction below that lag; Kafka's default,
  set explicitly so that a broker-wide change of it does not move the bound.

Each of the first two gets half of the bound, which leaves the other half for the cleaner's
own schedule (`log.cleaner.backoff.ms`, 15 s by default) and the cleaning itself.
"""

from __future__ import annotations

COMPACTED = "compact"
DIRTY_RATIO = "0.5"


def _ms(seconds: float) -> str:
    return str(max(int(seconds * 1000), 1))


def changelog_config(erasure_bound: float) -> dict[str, str]:
    """The changelog's config: compacted, with an erased contact's older records gone within
    `erasure_bound` seconds of the erasure (while the partition keeps receiving writes)."""
    half = _ms(erasure_bound / 2)
    return {
        "cleanup.policy": COMPACTED,
        "segment.ms": half,
        "max.compaction.lag.ms": half,
        "min.cleanable.dirty.ratio": DIRTY_RATIO,
    }


def retention_config(seconds: float) -> dict[str, str]:
    """A topic that deletes its messages `seconds` after they were written."""
    return {"cleanup.policy": "delete", "retention.ms": _ms(seconds)}
