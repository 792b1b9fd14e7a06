"""The soak's skip windows: the CPU the host and each process used in them."""

from __future__ import annotations

import os
import time

import pytest

from bench.soak import Window, host_busy_s, host_summary


def test_the_hosts_busy_seconds_count_this_process_spinning() -> None:
    busy0, wall0 = host_busy_s(), time.monotonic()
    cpu0 = time.process_time()
    while time.process_time() - cpu0 < 0.3:  # bounded: 0.3 s of this process's CPU
        pass
    busy, wall = host_busy_s() - busy0, time.monotonic() - wall0
    assert busy >= 0.25  # at least this process's spin (clock ticks are 10 ms)
    assert busy <= wall * (os.cpu_count() or 1) + 0.02  # no more than every core the whole time


def test_the_summary_counts_windows_with_every_core_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert host_summary([1.5, 1.97, 2.0, 1.2]) == (
        "median 1.73, highest 2.00, 2 of 4 windows with every core busy"
    )
    assert host_summary([]) == "not sampled"


def test_a_window_names_the_host_and_its_three_busiest_processes() -> None:
    window = Window(
        2103.0, 50, 98, 1.996, {"ingest": 0.81, "mixer": 0.3, "nats": 0.02, "distribution": 0.41}
    )
    assert window.describe() == (
        "2103 s: 50, 98 (host 2.00 cores; ingest 0.81, distribution 0.41, mixer 0.30)"
    )
