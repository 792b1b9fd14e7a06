"""`baycast up` as a child of a test: its children, and stopping all of them after a failure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def stop_all(proc: subprocess.Popen[bytes]) -> None:
    """After a failure: `baycast up` stops its children in order on SIGINT; whatever is left
    after that (each child is a session of its own, out of reach of a group kill) is killed, so
    a failed run leaves no service behind to disturb the tests after it."""
    if proc.poll() is not None:
        return
    children = children_of(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in children:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
