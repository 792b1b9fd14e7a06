"""The seed's show's run against issue targets (bench/capacity.py's `targets`)."""

from __future__ import annotations

from bench.capacity import ShowRun, targets

CPU = {"ingest": 0.72, "mixer": 0.27, "graphics": 0.12, "distribution": 0.37, "stations": 0.1}


def test_ingest_per_contribution_and_the_platform_leave_the_stations_out() -> None:
    ingest, platform = targets(ShowRun(12, 60.0, program_frames=1500, cpu=CPU))
    assert ingest.measured.startswith("0.060 core (0.72 core for 12 contributions over 60 s)")
    assert ingest.ratio == "1.50 of the target" and ingest.met is False
    assert platform.measured == "1.48 cores, 0 skipped or dropped over 60 s"
    assert "0.10 core" in platform.reference and platform.met is False


def test_the_show_meets_the_two_core_target_only_without_a_drop() -> None:
    light = {"ingest": 0.4, "mixer": 0.2, "distribution": 0.3, "stations": 0.5}
    held = targets(ShowRun(12, 60.0, cpu=light))
    assert [r.met for r in held] == [True, True]
    skipped = targets(ShowRun(12, 60.0, dist_skipped=3, cpu=light))
    assert skipped[1].met is False and "3 skipped or dropped" in skipped[1].measured


def test_a_failed_run_has_no_target_rows() -> None:
    assert targets(ShowRun(12, 60.0, error="only 3 of 12 stations came online")) == []
