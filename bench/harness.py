"""What every benchmark shares: machine facts, CPU accounting, repeated runs, the report row."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

RUNS = int(os.environ.get("BAYCAST_BENCH_RUNS", "3"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {model}, {mem_gib:.0f} GiB, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def cpu_probe_ms() -> float:
    """CPU milliseconds a fixed pure-Python loop takes (best of three): the host's speed now.

    On a shared host it moves with the neighbours' load even when this machine is idle (by more
    than half between two minutes here), which the load average does not show.
    """
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return best * 1000


def self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Stat:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, unit: str = "", digits: int = 2) -> str:
        d = digits
        return f"{self.median:.{d}f}{unit} (min {self.low:.{d}f}, max {self.high:.{d}f})"


@dataclass
class Result:
    name: str
    target: str
    measured: str
    reference: str
    ratio: str
    met: bool | None
    notes: list[str] = field(default_factory=list)


def repeat(fn: Callable[[], float], runs: int = RUNS) -> Stat:
    return Stat.of([fn() for _ in range(runs)])


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.cpu_start = self_cpu_s()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.wall = time.perf_counter() - self.start
        self.cpu = self_cpu_s() - self.cpu_start


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
