"""What a service process holds, read from /proc and its /metrics endpoint."""

from __future__ import annotations

import os
import urllib.request

from tests.support.services import ServiceProcess


def _pid(proc: ServiceProcess) -> int:
    assert proc.proc is not None
    return proc.proc.pid


def rss_bytes(proc: ServiceProcess) -> int:
    with open(f"/proc/{_pid(proc)}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(proc: ServiceProcess) -> int:
    return len(os.listdir(f"/proc/{_pid(proc)}/fd"))


def threads(proc: ServiceProcess) -> int:
    return len(os.listdir(f"/proc/{_pid(proc)}/task"))


def metric_value(http: str, name: str, label_value: str = "") -> float:
    """The value of metric `name` (the series whose labels contain `label_value`); 0 if absent."""
    with urllib.request.urlopen(http + "/metrics", timeout=2) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric = series.split("{", 1)[0]
        if metric == name and (not label_value or f'"{label_value}"' in series):
            total += float(value)
    return total
