"""What the window for late events (`--lateness`) costs the core: state size and speed.

    .venv/bin/python bench/lateness.py [--contacts 2000] [--events 40000] [--rounds 5]

Over the simulated population with the example plans, in time order (as most of a stream is):
- the encoded state's size per contact (median, p90, p99, largest) for each lateness;
- events per second of the core as the worker drives it, each event's contact decoded before
  and encoded after (`codec`), and of the core alone, without a window and with one of a day,
  in alternated rounds in this process; medians and their ratio.
Runs with the compiled core when it is built (see docs/compiled-core.md). Results go to
bench/results/lateness.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from streams import compiled
from streams.backtest.simulate import generate
from streams.models.events import TrackingEvent
from streams.scoring import (
    ContactState,
    PlanSet,
    decode_state,
    encode_state,
    load_plans,
    score_event,
)

HERE = Path(__file__).resolve().parent
PLANS = HERE.parent / "schemas" / "examples" / "plans.yaml"
DAY = 86_400.0
SIZES = {"0": 0.0, "1h": 3_600.0, "1d": DAY, "7d": 7 * DAY}


def sizes(plans: PlanSet, events: list[TrackingEvent], lateness: float) -> dict[str, int]:
    states: dict[str, ContactState] = {}
    for event in events:
        states[event.subject] = score_event(states.get(event.subject), event, plans, lateness).state
    encoded = sorted(len(encode_state(state)) for state in states.values())

    def at(share: float) -> int:
        return encoded[int(share * (len(encoded) - 1))]

    return {"median": at(0.5), "p90": at(0.9), "p99": at(0.99), "largest": encoded[-1]}


def speed(plans: PlanSet, events: list[TrackingEvent], lateness: float, codec: bool) -> float:
    """Events per second; with `codec`, every event's contact is decoded and encoded."""
    decoded: dict[str, ContactState] = {}
    encoded: dict[str, bytes] = {}
    started = time.perf_counter()
    for event in events:
        if codec:
            raw = encoded.get(event.subject)
            state = score_event(None if raw is None else decode_state(raw), event, plans, lateness)
            encoded[event.subject] = encode_state(state.state)
        else:
            step = score_event(decoded.get(event.subject), event, plans, lateness)
            decoded[event.subject] = step.state
    return len(events) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2_000)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    plans = load_plans(PLANS)
    events = list(generate(args.contacts, args.events, seed=7))
    result: dict[str, object] = {
        "contacts": args.contacts,
        "events": args.events,
        "compiled": f"{len(compiled.loaded())} of {len(compiled.MODULES)} modules",
        "state_bytes": {name: sizes(plans, events, value) for name, value in SIZES.items()},
    }
    for codec in (True, False):
        runs: dict[str, list[float]] = {"0": [], "1d": []}
        for _ in range(args.rounds):
            for name, speeds in runs.items():
                speeds.append(speed(plans, events, SIZES[name], codec))
        off, on = statistics.median(runs["0"]), statistics.median(runs["1d"])
        result["with_codec" if codec else "core_alone"] = {
            "events_per_second": {"lateness 0": round(off), "lateness 1d": round(on)},
            "ratio": round(on / off, 2),
            "runs": runs,
        }
    out = HERE / "results" / "lateness.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
