"""`make bench`: run the benchmarks and rewrite BENCHMARKS.md.

python -m bench                 every benchmark
python -m bench media_transport only the named ones
"""

from __future__ import annotations

import datetime
import importlib
import os
import signal
import sys
from pathlib import Path

from bench.harness import RUNS, Result, cpu_probe_ms, machine
from services.common.telemetry import configure_logging

BENCHMARKS = (
    "mixer_cost",
    "whole_path",
    "latency",
    "capacity",
    "fanout",
    "media_transport",
    "exchange",
    "control_room",
)
REPORT = Path("BENCHMARKS.md")


def render(
    results: list[Result],
    load: list[tuple[str, tuple[float, float, float]]],
    probe: list[tuple[str, float]],
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`. Each figure is the median of "
        f"{RUNS} runs (or as many as its notes say) with min and max; the reference is "
        "measured in the same run.",
        "",
        f"Machine: {machine()}  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  ",
        "Load average (1, 5, 15 min) before each benchmark: "
        + "; ".join(f"{name} {a:.1f} {b:.1f} {c:.1f}" for name, (a, b, c) in load)
        + f". Above ~{os.cpu_count() or 2} other work was running on the shared machine and "
        "the absolute figures carry its interference; ratios are measured in the same run.",
        "CPU probe before each benchmark (ms of CPU for a fixed Python loop, best of three; "
        "lower is a faster host, and it moves with the host's other tenants): "
        + "; ".join(f"{name} {ms:.0f}" for name, ms in probe)
        + ".",
        "",
        "| benchmark | target | measured | reference | ratio | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.name} | {r.target} | {r.measured} | {r.reference} | {r.ratio} | {met} |"
        )
    notes = [(r.name, n) for r in results for n in r.notes]
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **{name}**: {note}" for name, note in notes]
    return "\n".join(lines) + "\n"


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    configure_logging(level="info")  # the services' code run in this process logs as they do
    results: list[Result] = []
    load: list[tuple[str, tuple[float, float, float]]] = []
    probe: list[tuple[str, float]] = []
    for name in names or BENCHMARKS:
        load.append((name, os.getloadavg()))
        probe.append((name, cpu_probe_ms()))
        print(
            f"running {name}… (load average {load[-1][1][0]:.1f}, CPU probe {probe[-1][1]:.0f} ms)",
            flush=True,
        )
        results += importlib.import_module(f"bench.{name}").run(RUNS)
    report = render(results, load, probe)
    REPORT.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    # Terminated (e.g. by `timeout`): unwind, so every benchmark stops the processes it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
