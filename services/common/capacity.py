"""What a replica can still take: its CPU budget against the measured cost of one unit of work.

Like LiveKit egress's `available`: a replica may use `cores` (its CPU limit); one unit (a mixer
production, distribution's outputs of a production, a graphics scene) costs about `unit_cores`,
measured by `make bench` (BENCHMARKS.md, docs/SCALING.md). The process's own CPU use is sampled
(an average over the last `window_s`); what is committed is the larger of that and the cost of
the units held, so a burst of takeovers cannot overbook a replica before its CPU shows them.

    available = floor((cores - max(cpu used, units held × unit_cores)) / unit_cores)

and never more than `max_units - units held` when the service caps its units (the mixer's and
distribution's `max_productions`), so the gauge counts what the replica will really take.

Each service exports it as `baycast_<service>_units_available`, the
signal an operator and the autoscaling watch; a replica with none available takes no new unit,
so another replica (or a new pod) does. The budget is the pod's CPU limit unless
`BAYCAST_CAPACITY_CORES` says otherwise; a process with neither (sharing a machine, as under
`baycast up`) has no budget and only its service's own limits.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path

from prometheus_client import Gauge

_GAUGES: dict[str, Gauge] = {}


def _gauge(service: str) -> Gauge:
    if service not in _GAUGES:
        _GAUGES[service] = Gauge(
            f"baycast_{service}_units_available",
            f"How many more units of work this {service} replica can take by CPU",
        )
    return _GAUGES[service]


def cpu_limit_cores() -> float:
    """The CPU this process may use by its cgroup's quota (a pod's CPU limit); 0 when none is set
    (a process sharing the machine with others, as under `baycast up` or in tests)."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    return 0.0


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuBudget:
    def __init__(
        self,
        service: str,
        cores: float,
        unit_cores: float,
        *,
        max_units: int = 0,
        window_s: float = 10.0,
    ) -> None:
        if cores <= 0 or unit_cores <= 0:
            raise ValueError("cores and unit_cores must be positive")
        self.cores = cores
        self.unit_cores = unit_cores
        self.max_units = max_units  # 0: no cap of the service's own
        self.window_s = window_s
        self.used_cores = 0.0
        self.held = 0
        self._last = (time.monotonic(), process_cpu_seconds())
        self._available = _gauge(service)
        self._publish()

    def sample(self, held: int) -> None:
        """Take a CPU reading (call about once a second) and the number of units held now."""
        now, cpu = time.monotonic(), process_cpu_seconds()
        elapsed = now - self._last[0]
        if elapsed > 0:
            rate = (cpu - self._last[1]) / elapsed
            weight = min(1.0, elapsed / self.window_s)
            self.used_cores += (rate - self.used_cores) * weight
            self._last = (now, cpu)
        self.held = held
        self._publish()

    @property
    def available(self) -> int:
        committed = max(self.used_cores, self.held * self.unit_cores)
        by_cpu = math.floor((self.cores - committed) / self.unit_cores + 1e-9)
        if self.max_units:
            by_cpu = min(by_cpu, self.max_units - self.held)
        return max(0, by_cpu)

    def can_take(self) -> bool:
        return self.available >= 1

    def took(self) -> None:
        """A unit was taken between samples: count it now."""
        self.held += 1
        self._publish()

    def _publish(self) -> None:
        self._available.set(self.available)


def budget(
    service: str, capacity_cores: float, unit_cores: float, max_units: int = 0
) -> CpuBudget | None:
    """The budget of a replica from its settings (capacity 0: its cgroup's CPU limit; max_units 0:
    no cap of its own); None when it has no known CPU of its own or its unit has no measured
    cost: then only the service's own limits apply."""
    cores = capacity_cores or cpu_limit_cores()
    if not (cores and unit_cores):
        return None
    return CpuBudget(service, cores, unit_cores, max_units=max_units)
