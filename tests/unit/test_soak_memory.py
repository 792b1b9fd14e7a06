"""The soak's memory growth: medians of samples at each end, not one sample at each end."""

from __future__ import annotations

import pytest

from bench.capacity import ShowRun
from bench.soak import MEMORY_WINDOW, Soak, ends


def test_a_heap_that_rises_and_falls_does_not_read_as_growth() -> None:
    sawtooth = [160.0, 215.0, 125.0, 190.0, 150.0] * 20  # distribution's encoder buffers
    soak = Soak(ShowRun(12, 3000), rss={"distribution": sawtooth})
    assert ends(sawtooth) == (160.0, 160.0)
    assert soak.growth("distribution") == 0.0
    # One sample at each end could have read anything from -42 % to +72 %.
    assert min(sawtooth) / max(sawtooth) - 1 == pytest.approx(-0.42, abs=0.01)
    assert max(sawtooth) / min(sawtooth) - 1 == pytest.approx(0.72, abs=0.01)


def test_steady_growth_is_measured_between_the_two_windows() -> None:
    rising = [300.0 + 3.0 * n for n in range(90)]  # 6 MiB a minute, a sample every 30 s
    soak = Soak(ShowRun(12, 3000), rss={"mixer": rising})
    first, last = ends(rising)
    assert (first, last) == (306.0, 561.0)  # the middle of each five
    assert soak.growth("mixer") == pytest.approx(255 / 306)


def test_a_short_run_compares_halves() -> None:
    assert MEMORY_WINDOW == 5
    assert ends([100.0, 110.0, 130.0]) == (100.0, 130.0)
    assert ends([100.0]) == (100.0, 100.0)
    assert ends([]) == (0.0, 0.0)
