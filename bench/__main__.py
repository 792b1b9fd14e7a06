"""`make bench`: run the benchmarks and rewrite BENCHMARKS.md.

python -m bench                 every benchmark
python -m bench media_transport only the named ones
"""

from __future__ import annotations

import datetime
import importlib
import sys
from pathlib import Path

from bench.harness import RUNS, Result, machine

BENCHMARKS = ("media_transport",)
REPORT = Path("BENCHMARKS.md")


def render(results: list[Result]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`. Each figure is the median of "
        f"{RUNS} runs with min and max; the reference is measured in the same run.",
        "",
        f"Machine: {machine()}  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
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
    results: list[Result] = []
    for name in names or BENCHMARKS:
        print(f"running {name}…", flush=True)
        results += importlib.import_module(f"bench.{name}").run(RUNS)
    REPORT.write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
