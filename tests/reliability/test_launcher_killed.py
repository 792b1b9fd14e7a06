"""Fault: the launcher (`make run`, `baycast up`, a benchmark's platform) killed outright.

Its children run in sessions of their own, so Ctrl-C reaches the launcher only and it stops them
in order. Killed by SIGKILL or the OOM killer it cannot: each child must then end by itself (the
kernel's parent-death signal, SIGTERM) rather than go on serving, holding its ports and CPU,
beside the next run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.up.launcher import SERVICES
from tests.support.processes import alive

REPO = Path(__file__).resolve().parents[2]
# That they end, not how fast: each drains on the SIGTERM, every step of its stop bounded by its
# drain settings (10 s a step by default).
END_TIMEOUT_S = 60.0

LAUNCH = """
import asyncio, sys
from pathlib import Path
from services.up.launcher import Console, Launcher

async def main():
    state = Path(sys.argv[1])
    launcher = Launcher(state, "127.0.0.1", Console())
    await launcher.start_nats(None)
    await launcher.start_services({
        "ingest": {"BAYCAST_INGEST_ICE_HOSTS": "127.0.0.1"},
        "distribution": {"BAYCAST_DISTRIBUTION_DATA_DIR": str(state / "data")},
        "graphics": {"BAYCAST_GRAPHICS_BINDING_DATA_DIR": str(state / "data" / "graphics")},
    })
    pids = " ".join(f"{c.name}={c.proc.pid}" for c in launcher.children)
    print("CHILDREN", pids, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _children(log: Path, launcher: subprocess.Popen[bytes]) -> dict[str, int]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("CHILDREN "):
                return {k: int(v) for k, v in (w.split("=") for w in line.split()[1:])}
        assert launcher.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    raise AssertionError("the platform did not start: " + log.read_text(errors="replace")[-3000:])


def test_children_end_when_the_launcher_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "launcher.log"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, str(tmp_path / "state")],
            cwd=REPO,  # as `make run`: the control room finds its front-end modules under build/
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    children: dict[str, int] = {}
    try:
        children = _children(log, launcher)
        assert sorted(children) == sorted(["nats", *SERVICES])
        assert all(alive(pid) for pid in children.values())

        launcher.send_signal(signal.SIGKILL)
        assert launcher.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + END_TIMEOUT_S
        while time.monotonic() < deadline and any(alive(p) for p in children.values()):
            time.sleep(0.1)
        left = [name for name, pid in children.items() if alive(pid)]
        assert left == [], f"still running after the launcher was killed: {left}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        for pid in children.values():
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
