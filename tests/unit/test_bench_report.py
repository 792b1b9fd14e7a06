"""`python -m bench <names>` lays the named benchmarks' rows over the last report."""

from __future__ import annotations

from bench.__main__ import merge, render
from bench.harness import Result


def report(rows: list[tuple[str, str]], load: dict[str, float]) -> str:
    results = [
        Result(name, "t", measured, "r", "x", True, [f"note of {measured}"])
        for name, measured in rows
    ]
    return render(
        results,
        [(n, (a, a, a)) for n, a in load.items()],
        [(n, 50.0) for n in load],
    )


def test_a_partial_run_replaces_its_rows_and_keeps_the_rest() -> None:
    full = report(
        [
            ("Mixer cost", "old mixer"),
            ("Exchange: returns", "old returns"),
            ("Control room", "old cr"),
        ],
        {"mixer_cost": 1.0, "exchange": 2.0, "control_room": 3.0},
    )
    partial = report(
        [("Exchange: returns", "new returns"), ("Exchange: more", "new more")], {"exchange": 4.0}
    )
    merged = merge(full, partial, ["exchange"])
    rows = [
        line for line in merged.splitlines() if line.startswith("| ") and "benchmark" not in line
    ]
    assert [r.split(" | ")[2] for r in rows] == ["old mixer", "new returns", "new more", "old cr"]
    notes = [line for line in merged.splitlines() if line.startswith("- **")]
    assert [n.rsplit("note of ", 1)[1] for n in notes] == [
        "old mixer",
        "new returns",
        "new more",
        "old cr",
    ]
    load = next(line for line in merged.splitlines() if line.startswith("Load average"))
    assert "mixer_cost 1.0 1.0 1.0; exchange 4.0 4.0 4.0; control_room 3.0 3.0 3.0." in load
    assert merge(merged, partial, ["exchange"]) == merged  # the same run again changes nothing
    later = report([("Control room", "new cr")], {"control_room": 5.0})
    twice = merge(merged, later.replace("Date: 20", "Date: 30"), ["control_room"])
    (date,) = [line for line in twice.splitlines() if line.startswith("Date: ")]
    assert date.startswith("Date: 30")
    assert " for control_room; 20" in date and " for exchange; the other rows as of 20" in date
    assert date.endswith(" UTC  ") and date.count(" UTC") == 3


def test_rows_of_several_benchmarks_stay_in_their_places_and_the_hosts_are_named() -> None:
    full = report(
        [("Mixer cost", "old mixer"), ("Exchange: returns", "old returns"), ("Clips", "old clip")],
        {"mixer_cost": 1.0, "exchange": 2.0, "clip_playout": 3.0},
    ).replace("Machine: ", "Machine: host A, 2 cores")
    partial = report(
        [("Clips", "new clip"), ("Exchange: returns", "new returns")],
        {"exchange": 4.0, "clip_playout": 5.0},
    ).replace("Machine: ", "Machine: host B, 2 cores")
    merged = merge(full, partial, ["clip_playout", "exchange"])
    rows = [
        line for line in merged.splitlines() if line.startswith("| ") and "benchmark" not in line
    ]
    assert [r.split(" | ")[2] for r in rows] == ["old mixer", "new returns", "new clip"]
    (machine,) = [line for line in merged.splitlines() if line.startswith("Machine: ")]
    assert machine.startswith("Machine: host B, 2 cores")
    assert " for exchange, clip_playout; the other rows on host A, 2 cores" in machine
    again = merge(merged, partial, ["clip_playout", "exchange"])
    assert again == merged
    mixer = report([("Mixer cost", "m")], {"mixer_cost": 1.0})
    later = merge(merged, mixer.replace("Machine: ", "Machine: host B, 2 cores"), ["mixer_cost"])
    (machine,) = [line for line in later.splitlines() if line.startswith("Machine: ")]
    assert " for mixer_cost, exchange, clip_playout; the other rows on host A" in machine
    back = merge(later, mixer.replace("Machine: ", "Machine: host A, 2 cores"), ["mixer_cost"])
    (machine,) = [line for line in back.splitlines() if line.startswith("Machine: ")]
    host = machine.removeprefix("Machine: host A, 2 cores").split(" for ", 1)[0]
    a, b = f"host A, 2 cores{host}", f"host B, 2 cores{host}"
    assert machine == (
        f"Machine: {a} for mixer_cost; {b} for exchange, clip_playout; the other rows on {a}  "
    )


def test_all_the_notes_of_a_benchmark_run_again_replace_all_its_old_ones() -> None:
    def run(measured: str, notes: list[str], load: dict[str, float]) -> str:
        results = [
            Result("Mixer cost", "t", "m", "r", "x", True, ["mixer note"]),
            Result("Capacity", "t", measured, "r", "x", True, notes),
        ]
        if len(load) == 1:
            results = results[1:]
        return render(results, [(n, (a, a, a)) for n, a in load.items()], [(n, 50.0) for n in load])

    full = run("old", ["old runs", "old usage", "old words"], {"mixer_cost": 1.0, "capacity": 2.0})
    again = run("new", ["new runs", "new usage", "new words"], {"capacity": 3.0})
    merged = merge(full, again, ["capacity"])
    notes = [line.split("**: ", 1)[1] for line in merged.splitlines() if line.startswith("- **")]
    assert notes == ["mixer note", "new runs", "new usage", "new words"]
