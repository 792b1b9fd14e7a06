"""`make bench`: run the benchmarks and rewrite BENCHMARKS.md.

python -m bench                 every benchmark but those run only on request (the soak)
python -m bench media_transport only the named ones
Their rows, notes, load and probe figures replace those of the same names in the report; the
rest stay.
"""

from __future__ import annotations

import datetime
import importlib
import os
import re
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
    "program_loudness",
    "clip_playout",
    "soak",
)
ON_REQUEST = ("soak",)  # 50 minutes: `make soak`
REPORT = Path("BENCHMARKS.md")
ROW = re.compile(r"^\| (?P<name>.+?) \| ")
NOTE = re.compile(r"^- \*\*(?P<name>.+?)\*\*: ")
MACHINE = "Machine: "
OTHER_HOST = "the other rows on "
DATE = "Date: "
OTHER_ROWS = "the other rows as of "
LOAD = "Load average (1, 5, 15 min) before each benchmark: "
PROBE = "CPU probe before each benchmark"


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
        f"{MACHINE}{machine()}  ",
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


def _entries(line: str) -> dict[str, str]:
    """`name figures; name figures.` after the line's colon, by benchmark name."""
    listed = line.split(": ", 1)[1].split(". ", 1)[0].rstrip(".")
    return {e.split(" ", 1)[0]: e for e in listed.split("; ") if " " in e}


def _merge_entries(old_line: str, new_line: str) -> str:
    """`new_line` with the entries of `old_line` it lacks, in the benchmarks' order."""
    entries = {**_entries(old_line), **_entries(new_line)}
    head, rest = new_line.split(": ", 1)
    tail = rest.split(". ", 1)[1] if ". " in rest else ""
    ordered = [entries[n] for n in BENCHMARKS if n in entries]
    return f"{head}: {'; '.join(ordered)}." + (f" {tail}" if tail else "")


def _replace_named(old: list[str], new: list[str], pattern: re.Pattern[str]) -> list[str]:
    """The lines of `old` (rows or notes, by the bold or first-cell name) with those named in
    `new` replaced in place by `new`'s; a line of `new` that `old` lacks follows the line of
    `new` before it (else the first one replaced, else the end)."""

    def name(line: str) -> str | None:
        m = pattern.match(line)
        return m.group("name") if m else None

    old_names = {n for line in old if (n := name(line))}
    groups: dict[str, list[str]] = {}
    anchor: str | None = None
    leading: list[str] = []
    for line in new:
        n = name(line)
        if n in old_names:
            anchor = n
            groups.setdefault(n, []).append(line)  # a benchmark may have several notes
        elif anchor is None:
            leading.append(line)
        else:
            groups[anchor].append(line)
    if not groups:
        return old + new
    groups[next(iter(groups))][:0] = leading
    replaced = {n for line in new if (n := name(line))}
    out: list[str] = []
    for line in old:
        n = name(line)
        if n in groups:
            out += groups.pop(n)
        elif n not in replaced:
            out.append(line)
    return out


def _merge_dates(old_line: str, new_line: str, names: list[str]) -> str:
    """`Date: <when> for <names>; <when> for <names>; the other rows as of <when>`: the run of
    `names` first, then the earlier runs of the benchmarks it did not run."""
    now = new_line.removeprefix(DATE).rstrip()
    runs: list[str] = [f"{now} for {', '.join(names)}"]
    rest = ""
    for entry in old_line.removeprefix(DATE).rstrip().split("; "):
        when, _, ran = entry.partition(" for ")
        if entry.startswith(OTHER_ROWS):
            rest = entry
        elif not ran:
            rest = OTHER_ROWS + entry  # a full report's one date
        elif left := [n for n in ran.split(", ") if n not in names]:
            runs.append(f"{when} for {', '.join(left)}")
    return DATE + "; ".join([*runs, rest] if rest else runs) + "  "


def _merge_machines(old_line: str, new_line: str, names: list[str]) -> str:
    """`Machine: <machine> for <names>; the other rows on <machine>`: which host ran which
    rows (one `Machine: <machine>` when it is one host)."""
    now = new_line.removeprefix(MACHINE).rstrip()
    hosts: dict[str, list[str]] = {now: list(names)}
    rest = ""
    for entry in old_line.removeprefix(MACHINE).rstrip().split("; "):
        host, _, ran = entry.partition(" for ")
        if entry.startswith(OTHER_HOST):
            rest = entry.removeprefix(OTHER_HOST)
        elif not ran:
            rest = entry  # a full report's one machine
        elif left := [n for n in ran.split(", ") if n not in names]:
            hosts.setdefault(host, []).extend(left)
    ran_on = {host: ran for host, ran in hosts.items() if ran}
    if len(set(ran_on) | ({rest} if rest else set())) <= 1:
        return MACHINE + (rest or now) + "  "
    order = {n: i for i, n in enumerate(BENCHMARKS)}
    runs = [
        f"{host} for {', '.join(sorted(ran, key=lambda n: order.get(n, len(order))))}"
        for host, ran in ran_on.items()
    ]
    return MACHINE + "; ".join([*runs, OTHER_HOST + rest] if rest else runs) + "  "


def merge(previous: str, partial: str, names: list[str]) -> str:
    """The report of the benchmarks `names` (`partial`) laid over the `previous` full report."""
    old, new = previous.splitlines(), partial.splitlines()

    def find(lines: list[str], prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    def rows(lines: list[str]) -> list[str]:
        return [line for line in lines if ROW.match(line) and not line.startswith("| benchmark")]

    def notes(lines: list[str]) -> list[str]:
        return [line for line in lines if NOTE.match(line)]

    header = new[: find(new, MACHINE)]
    machine = _merge_machines(old[find(old, MACHINE)], new[find(new, MACHINE)], names)
    date = _merge_dates(old[find(old, DATE)], new[find(new, DATE)], names)
    load = _merge_entries(old[find(old, LOAD)], new[find(new, LOAD)])
    probe = _merge_entries(old[find(old, PROBE)], new[find(new, PROBE)])
    table = rows(new)
    merged_rows = _replace_named(rows(old), table, ROW)
    merged_notes = _replace_named(notes(old), notes(new), NOTE)
    lines = [*header, machine, date, load, probe, "", *new[find(new, "| benchmark") :][:2]]
    lines += merged_rows
    if merged_notes:
        lines += ["", "## Notes", "", *merged_notes]
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
    names = [n for n in BENCHMARKS if n in names]  # the report's order, however they were named
    names = names or [n for n in BENCHMARKS if n not in ON_REQUEST]
    for name in names:
        load.append((name, os.getloadavg()))
        probe.append((name, cpu_probe_ms()))
        print(
            f"running {name}… (load average {load[-1][1][0]:.1f}, CPU probe {probe[-1][1]:.0f} ms)",
            flush=True,
        )
        results += importlib.import_module(f"bench.{name}").run(RUNS)
    report = render(results, load, probe)
    if REPORT.exists() and set(names) != set(BENCHMARKS):
        report = merge(REPORT.read_text(), report, names)
    REPORT.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    # Terminated (e.g. by `timeout`): unwind, so every benchmark stops the processes it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main(sys.argv[1:]))
