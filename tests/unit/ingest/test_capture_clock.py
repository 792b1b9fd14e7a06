from __future__ import annotations

from fractions import Fraction

from services.ingest.capture_clock import CaptureClock

TB = Fraction(1, 90_000)


def test_capture_time_follows_pts_and_keeps_the_earliest_arrival() -> None:
    clock = CaptureClock()
    base = 1_700_000_000_000_000
    assert clock.capture_time_us(0, TB, arrival_us=base + 30_000) == base + 30_000
    # A frame that waited longer (jitter) does not move the mapping ...
    assert clock.capture_time_us(3600, TB, arrival_us=base + 120_000) == base + 70_000
    # ... one that came sooner moves it back for everything after.
    assert clock.capture_time_us(7200, TB, arrival_us=base + 90_000) == base + 90_000
    assert clock.capture_time_us(10800, TB, arrival_us=base + 200_000) == base + 130_000


def test_a_pts_jump_reanchors_and_missing_pts_uses_arrival() -> None:
    clock = CaptureClock()
    clock.capture_time_us(0, TB, arrival_us=1_000_000)
    assert clock.capture_time_us(90_000 * 3600, TB, arrival_us=2_000_000) == 2_000_000
    assert clock.capture_time_us(None, None, arrival_us=5) == 5
