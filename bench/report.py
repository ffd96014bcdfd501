"""The worker benchmark's results as a markdown table (bench/results/worker.md).

Only medians and ratios go into the table, each with what it was measured on; every run's
numbers stay in the JSON next to it.
"""

from __future__ import annotations

from typing import Any


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _us(value: float) -> str:
    return f"{value:,.0f} µs"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def render_markdown(results: dict[str, Any]) -> str:
    """Headline table, then latency, state, recovery, timers and the profile's top frames."""
    sizes, machine, cpu = results["sizes"], results["machine"], results["cpu_us_per_event"]
    runs = results["settings"]["runs"]
    lines = [
        "# Worker benchmark",
        "",
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"{machine['python']}; Kafka {machine['kafka']} ({machine['broker']} broker, same "
        f"machine). Started {results['started']}, {results['minutes']} min; load average "
        f"{results['load_average_before'][0]:.2f} before, {results['load_average_after'][0]:.2f}"
        " after.",
        f"Medians of {runs} runs. Main topic: {_count(sizes['events'])} events of "
        f"{_count(sizes['contacts'])} contacts, {results['settings']['partitions']} partitions. "
        f"Worker: {results['settings']['worker']}.",
        "",
        "| measurement | events/s | ratio | CPU per event |",
        "|---|---:|---:|---:|",
        f"| baseline: confluent-kafka consumer + orjson | "
        f"{_rate(results['baseline_events_per_second'])} | 1 | {_us(cpu['baseline'])} |",
        f"| worker, 1 process | {_rate(results['worker_events_per_second'])} | "
        f"{results['worker_to_baseline']:.3f} of baseline | {_us(cpu['worker'])} |",
        f"| worker, 2 processes (one group) | "
        f"{_rate(results['two_workers_events_per_second'])} | "
        f"{results['two_workers_to_one']:.2f} x 1 process | {_us(cpu['two_workers'])} |",
        f"| worker, 1 process, {_count(sizes['large_contacts'])} contacts "
        f"({_count(sizes['large_events'])} events, 1 run) | "
        f"{_rate(results['large_worker_events_per_second'])} | | {_us(cpu['large'])} |",
        "",
        f"The worker kept {results['worker_cores_busy']:.2f} cores busy (CPU time / wall time).",
        "",
        "## Latency: event produced -> its score update readable on `score-updates`",
        "",
        "| rate | p50 | p99 | max (median / worst) | events with an output |",
        "|---:|---:|---:|---:|---:|",
    ]
    for rate, row in results["latency"].items():
        lines.append(
            f"| {_count(float(rate))}/s | {row['p50_ms']:.0f} ms | {row['p99_ms']:.0f} ms | "
            f"{row['max_ms']:.0f} / {row['worst_max_ms']:.0f} ms | {row['with_output']:.0%} |"
        )
    lines += [
        "",
        "## State",
        "",
        "| contacts | events | worker RSS at the end | peak RSS | disk per contact |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in results["state"]:
        lines.append(
            f"| {_count(row['contacts'])} | {_count(row['events'])} | {row['rss_mib']:.0f} MiB | "
            f"{row['peak_rss_mib']:.0f} MiB | {row['disk_bytes_per_contact']:.0f} B |"
        )
    lines += [
        "",
        "## Recovery: fresh worker, empty data dir, spawn -> `/readyz` 200",
        "",
        "| contacts | changelog messages | ready after | cold start, nothing to recover |",
        "|---:|---:|---:|---:|",
    ]
    for row in results["recovery"]:
        lines.append(
            f"| {_count(row['contacts'])} | {_count(row['changelog_messages'])} | "
            f"{row['seconds']:.1f} s | {row['cold_start_seconds']:.1f} s |"
        )
    timers = results["timers"]
    lines += [
        "",
        f"## Timer pass over {_count(timers['contacts'])} contacts (in-process)",
        "",
        "| due | pass |",
        "|---:|---:|",
    ]
    for row in timers["passes"]:
        lines.append(
            f"| {_count(row['due'])} ({row['due_fraction']:.1%}) | {row['median_ms']:.2f} ms |"
        )
    lines.append(f"\n1% due costs {timers['one_percent_to_tenth']:.1f} x 0.1% due.")
    lines += _profile(results.get("profile"), "a worker under full load", full=True)
    lines += _profile(results.get("recovery_profile"), "a worker recovering", full=False)
    return "\n".join(lines) + "\n"


def _profile(profile: dict[str, Any] | None, what: str, *, full: bool) -> list[str]:
    """Thread shares, then the event-loop thread by task and layer (and by function)."""
    if not profile:
        return []
    lines = [
        "",
        f"## Profile of {what} (py-spy, {profile['seconds']:.0f} s)",
        "",
        "Threads, share of samples: "
        + ", ".join(f"{row['frame']} {row['percent']}%" for row in profile["threads"])
        + f". Below: the {profile['thread']} ({_count(profile['samples'])} samples).",
    ]
    sections = [("tasks", "event-loop task"), ("components", "layer (leaf frame)")]
    if full:
        sections += [("inclusive", "function, inclusive"), ("self", "function, self")]
    for key, title in sections:
        lines += ["", f"| {title} | % |", "|---|---:|"]
        lines += [f"| `{row['frame']}` | {row['percent']} |" for row in profile[key]]
    return lines
