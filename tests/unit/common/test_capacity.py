"""A replica's CPU budget (services/common/capacity.py): what it can still take."""

from __future__ import annotations

import pytest

from services.common import capacity


class FakeProcess:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        self.cpu = 0.0
        monkeypatch.setattr(capacity.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(capacity, "process_cpu_seconds", lambda: self.cpu)

    def run(self, seconds: float, cores: float) -> None:
        self.now += seconds
        self.cpu += seconds * cores


def test_units_held_count_before_their_cpu_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProcess(monkeypatch)
    budget = capacity.CpuBudget("captest", cores=2.0, unit_cores=0.35)
    assert budget.available == 5  # floor(2 / 0.35)
    for _ in range(5):
        assert budget.can_take()
        budget.took()
    assert budget.available == 0 and not budget.can_take()


def test_measured_cpu_above_the_units_cost_limits_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process = FakeProcess(monkeypatch)
    budget = capacity.CpuBudget("captest2", cores=2.0, unit_cores=0.35, window_s=1.0)
    for _ in range(3):
        process.run(1.0, cores=1.4)  # two units that cost more than measured in the benchmarks
        budget.sample(held=2)
    assert budget.used_cores == pytest.approx(1.4)
    assert budget.available == 1  # floor((2 - 1.4) / 0.35)
    process.run(1.0, cores=0.2)
    budget.sample(held=2)
    assert budget.available == 3  # the units' cost (0.7) is the floor of what is committed


def test_the_gauges_say_it(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProcess(monkeypatch)
    budget = capacity.CpuBudget("captest3", cores=1.0, unit_cores=0.25)
    budget.took()
    assert capacity._gauge("captest3")._value.get() == 3


def test_no_cpu_of_its_own_means_no_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "cpu_limit_cores", lambda: 0.0)
    assert capacity.budget("captest4", 0.0, 0.35) is None
    assert capacity.budget("captest4", 1.5, 0.35) is not None


def test_the_service_s_own_cap_bounds_what_is_available(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five units by CPU, four by the service's MAX_PRODUCTIONS: a replica holding four shows
    none, so an autoscaler following the gauge sees it full."""
    FakeProcess(monkeypatch)
    budget = capacity.CpuBudget("captest5", cores=2.0, unit_cores=0.35, max_units=4)
    assert budget.available == 4
    for _ in range(4):
        budget.took()
    assert budget.available == 0 and capacity._gauge("captest5")._value.get() == 0
