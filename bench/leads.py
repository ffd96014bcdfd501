"""What `lead-scores` and the leads index cost, and how fast `GET /leads` answers.

    .venv/bin/python bench/leads.py [--events 2000000 --contacts 1000000] [--rounds 2]

On the embedded broker (or `$LEADSCORE_KAFKA_BOOTSTRAP`), 6 partitions, the example plans:

1. throughput: one worker process over a preloaded topic (`--small-events` of
   `--small-contacts`), with the topic and index on, then off (`bench/leads_off_worker.py`),
   alternated `--rounds` times: events/s from the first event consumed until every offset is
   committed, and CPU µs per event;
2. `GET /leads?plan=lead-score&limit=100` against `--contacts` contacts (`--events` events,
   scored by one worker, then a second one joins) on two workers, asked of one of them (which
   asks the other): p50/p99 over `--queries` requests, for the first page,
   `threshold=warm`, the tenth page (cursors), and `GET /leads/counts`;
3. index bytes per contact: the keys and values of the index and histogram, and the leads
   blocks in the records, read from the two workers' RocksDB after they stop;
4. recovery: a fresh worker with an empty data dir recovers that changelog, spawn to
   `/readyz` 200, and (unless `--no-off-recovery`) the same for a changelog written without
   leads blocks (the large topic scored again by a worker with them off), `--rounds` times.

A worker that exits while it is measured (fenced when two start at once: it stops for its
orchestrator to restart it) is started again, as an orchestrator would; `restarts` counts them.

Prints JSON and writes it to bench/results/leads.json; worker logs go to bench/.data/logs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    GroupProgress,
    WorkerProcess,
    contact_table,
    cpu_seconds,
    create_input_topics,
    delete_topics,
    disk_usage,
    http_get,
    load_events,
    metric_sum,
    running,
    wait_for,
)
from streams.backtest.simulate import generate
from streams.kafka.broker import broker_from_env
from streams.worker.state.lead_index import ENTRY, HISTOGRAM
from streams.worker.state.store import CONTACT, record_leads

HERE = Path(__file__).resolve().parent
LOGS = HERE / ".data" / "logs"
RESULTS = HERE / "results" / "leads.json"
PARTITIONS = 6
PLAN = "lead-score"
CONSUMED = "leadscore_events_consumed_total"


@dataclass
class _Worker(WorkerProcess):
    """The benchmark's worker, with the leads on or off."""

    leads: bool = True

    def command(self) -> list[str]:
        command = super().command()
        if not self.leads:
            command[command.index("streams.worker")] = "bench.leads_off_worker"
        return command


def _worker(bootstrap: str, prefix: str, app_id: str, work: Path, leads: bool = True) -> _Worker:
    name = f"{app_id}-{uuid.uuid4().hex[:4]}"
    return _Worker(
        bootstrap, prefix, app_id, work / name, LOGS / f"{name}.log", PARTITIONS, leads=leads
    )


RESTARTS: list[str] = []


def _revived(workers: Sequence[_Worker]) -> bool:
    """Start again any worker that exited (what its orchestrator would do); always True."""
    for worker in workers:
        if worker.process is not None and worker.process.poll() is not None:
            RESTARTS.append(f"{worker.log_path.name}: exit {worker.process.returncode}")
            print(f"restarting {RESTARTS[-1]}", flush=True)
            worker.start()
    return True


def _through(worker: _Worker, bootstrap: str, topic: str) -> dict[str, float]:
    """Events/s and CPU µs/event from the first event consumed until all is committed."""
    progress = GroupProgress(bootstrap, worker.group, topic)
    ends = progress.end_offsets()
    try:
        worker.wait_serving()
        wait_for(lambda: metric_sum(worker.metrics(), CONSUMED) > 0, 300, "an event", 0.02)
        began, cpu, pid = time.monotonic(), cpu_seconds(worker.pid), worker.pid
        wait_for(lambda: progress.caught_up(ends), 3600, "every offset committed", 0.2)
        seconds = time.monotonic() - began
        if worker.pid != pid:
            raise RuntimeError(f"worker {pid} exited while measured")
        cpu = cpu_seconds(worker.pid) - cpu
    finally:
        progress.close()
    total = sum(ends.values())
    return {"events_per_second": total / seconds, "cpu_us_per_event": cpu / total * 1e6}


def throughput(bootstrap: str, work: Path, events: int, contacts: int, rounds: int) -> Any:
    prefix = f"benchleads{uuid.uuid4().hex[:6]}."
    topics = create_input_topics(bootstrap, prefix, PARTITIONS)
    try:
        load_events(bootstrap, topics.events, generate(contacts, events, seed=11))
        runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for round_ in range(rounds):
            for mode in ("on", "off"):
                worker = _worker(bootstrap, prefix, f"{mode}{round_}", work, mode == "on")
                with running([worker]):
                    runs[mode].append(_through(worker, bootstrap, topics.events))
                print(f"throughput {mode} round {round_}: {runs[mode][-1]}", flush=True)
    finally:
        delete_topics(bootstrap, prefix)
    result: dict[str, Any] = {"events": events, "contacts": contacts}
    for mode, samples in runs.items():
        result[mode] = {
            key: round(statistics.median(s[key] for s in samples), 1) for key in samples[0]
        } | {"each": samples}
    result["ratio_on_to_off"] = round(
        result["on"]["events_per_second"] / result["off"]["events_per_second"], 3
    )
    return result


def _timed(url: str, count: int) -> dict[str, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, body = http_get(url, timeout=10)
        times.append(time.perf_counter() - started)
        assert status == 200, (url, status, body[:200])
        assert not json.loads(body).get("partial"), body[:300]
    times.sort()
    return {
        "p50_ms": round(1000 * statistics.median(times), 1),
        "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 1),
        "requests": count,
    }


def queries(worker: WorkerProcess, count: int) -> dict[str, Any]:
    base = f"{worker.url}/leads?"
    first = base + urllib.parse.urlencode({"plan": PLAN, "limit": 100})
    cursor = None
    for _ in range(9):  # the tenth page's cursor
        params = {"plan": PLAN, "limit": "100", **({"cursor": cursor} if cursor else {})}
        cursor = json.loads(http_get(base + urllib.parse.urlencode(params))[1])["next"]
    return {
        "first_page": _timed(first, count),
        "threshold_warm": _timed(first + "&threshold=warm", count),
        "tenth_page": _timed(
            base + urllib.parse.urlencode({"plan": PLAN, "limit": 100, "cursor": cursor}), count
        ),
        "counts": _timed(f"{worker.url}/leads/counts?plan={PLAN}", max(count // 10, 10)),
        "one_worker_share": _timed(f"{worker.url}/leads/partitions?plan={PLAN}&limit=100", count),
    }


def index_bytes(workers: Sequence[WorkerProcess]) -> dict[str, float]:
    """Bytes of the index, the histogram and the leads blocks, per contact, over the
    partitions each worker kept on disk (each partition counted once)."""
    sizes = {"entries": 0, "histogram": 0, "blocks": 0}
    contacts = 0
    seen: set[int] = set()
    for worker in workers:
        table = contact_table(str(worker.data_dir), worker.group, PARTITIONS)
        store = table.store
        try:
            for partition in range(PARTITIONS):
                if partition in seen or store.contact_count(partition) == 0:
                    continue
                seen.add(partition)
                iterator = store._db(partition).iter()
                iterator.seek_to_first()
                while iterator.valid():
                    key: bytes = iterator.key()
                    if key.startswith(ENTRY):
                        sizes["entries"] += len(key) + len(iterator.value())
                    elif key.startswith(HISTOGRAM):
                        sizes["histogram"] += len(key) + len(iterator.value())
                    elif key.startswith(CONTACT):
                        sizes["blocks"] += len(record_leads(iterator.value()))
                        contacts += 1
                    iterator.next()
        finally:
            store.close()
    per = {f"{kind}_bytes_per_contact": v / max(contacts, 1) for kind, v in sizes.items()}
    total = sum(sizes.values()) / max(contacts, 1)
    return {k: round(v, 1) for k, v in per.items()} | {
        "total_bytes_per_contact": round(total, 1),
        "contacts": contacts,
    }


def recovery(bootstrap: str, prefix: str, app_id: str, work: Path) -> dict[str, float]:
    worker = _worker(bootstrap, prefix, app_id, work)
    with running([worker]):
        seconds = worker.wait_ready()
        contacts = metric_sum(worker.metrics(), "leadscore_contacts")
    return {"seconds": round(seconds, 1), "contacts": contacts}


def _owned(worker: WorkerProcess) -> bool:
    status, body = http_get(worker.url + "/readyz")
    return status == 200 and bool(json.loads(body)["partitions"])


def large(
    bootstrap: str,
    work: Path,
    events: int,
    contacts: int,
    rounds: int,
    count: int,
    off_recovery: bool,
) -> dict[str, Any]:
    prefix = f"benchleadsL{uuid.uuid4().hex[:6]}."
    topics = create_input_topics(bootstrap, prefix, PARTITIONS)
    result: dict[str, Any] = {"events": events, "contacts_simulated": contacts}
    try:
        loaded = load_events(bootstrap, topics.events, generate(contacts, events, seed=7))
        print(f"loaded {events:,} events in {loaded.seconds:.0f} s", flush=True)
        pair = [_worker(bootstrap, prefix, "on", work) for _ in range(2)]
        with running(pair[:1]):
            result["throughput"] = _through(pair[0], bootstrap, topics.events)
            print(f"scored: {result['throughput']}", flush=True)
            with running(pair[1:]):
                wait_for(
                    lambda: _revived(pair) and all(w.ready() and _owned(w) for w in pair),
                    600,
                    "both workers ready with partitions",
                    0.5,
                )
                result["contacts"] = sum(
                    metric_sum(w.metrics(), "leadscore_contacts") for w in pair
                )
                result["queries"] = queries(pair[0], count)
                print(f"queries: {result['queries']}", flush=True)
        result["index"] = index_bytes(pair)
        result["data_dir_bytes_per_contact"] = round(
            sum(disk_usage(w.data_dir) for w in pair) / max(result["contacts"], 1), 1
        )
        modes = ["on"]
        if off_recovery:
            modes.append("off")
            off = _worker(bootstrap, prefix, "off", work, leads=False)
            with running([off]):
                result["off_throughput"] = _through(off, bootstrap, topics.events)
        recoveries: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for app_id in modes:
                recoveries[app_id].append(recovery(bootstrap, prefix, app_id, work))
                print(f"recovery {app_id}: {recoveries[app_id][-1]}", flush=True)
        result["recovery_seconds"] = {
            mode: statistics.median(r["seconds"] for r in runs) for mode, runs in recoveries.items()
        } | {"each": recoveries}
    finally:
        delete_topics(bootstrap, prefix)
    return result | {"restarts": list(RESTARTS)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--small-events", type=int, default=200_000)
    parser.add_argument("--small-contacts", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--no-off-recovery", action="store_true")
    args = parser.parse_args(argv)
    LOGS.mkdir(parents=True, exist_ok=True)
    phases: list[tuple[str, Callable[[str, Path], Any]]] = []
    if not args.skip_throughput:
        phases.append(
            (
                "throughput",
                lambda b, w: throughput(b, w, args.small_events, args.small_contacts, args.rounds),
            )
        )
    if not args.skip_large:
        phases.append(
            (
                "large",
                lambda b, w: large(
                    b,
                    w,
                    args.events,
                    args.contacts,
                    args.rounds,
                    args.queries,
                    not args.no_off_recovery,
                ),
            )
        )
    result: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with broker_from_env() as bootstrap, tempfile.TemporaryDirectory(dir=HERE / ".data") as tmp:
        for name, phase in phases:
            result[name] = phase(bootstrap, Path(tmp))
            RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
