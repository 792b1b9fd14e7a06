"""Run a test scene in a network namespace whose only interface is its own loopback.

A browser or a foreign WebRTC stack gathers candidates on every interface it sees; inside
`unshare -n` it sees only loopback, so no packet can reach another address of the machine. The
host's loopback is not reachable from in there either, so the scene (a module run as
`python -m <module> <out.json>`) starts its own servers inside and writes what it saw to a JSON
file, which the test reads and checks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def unshare_works() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _run(module: str, out: Path, timeout: float) -> tuple[subprocess.CompletedProcess[bytes], Any]:
    done = subprocess.run(
        [
            "unshare",
            "-n",
            "sh",
            "-c",
            f'ip link set lo up && exec "$0" -m {module} "$1"',
            sys.executable,
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        timeout=timeout,
    )
    assert out.exists(), done.stderr.decode(errors="replace")[-3000:]
    return done, json.loads(out.read_text())


async def run_scene(
    module: str, out: Path, timeout: float
) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any]]:
    """Run `module` in its own loopback-only namespace; its exit and what it wrote to `out`."""
    return await asyncio.to_thread(_run, module, out, timeout)


def scene_main(drive: Callable[[dict[str, Any], Path], Awaitable[None]], timeout: float) -> None:
    """A scene's entry point: run `drive(out, result_path)` within `timeout` seconds and write
    `out` to the result file given as the first argument, with the error if there was one."""
    result_path = Path(sys.argv[1])
    out: dict[str, Any] = {}

    async def bounded() -> None:
        await asyncio.wait_for(drive(out, result_path), timeout)

    try:
        asyncio.run(bounded())
    except BaseException as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result_path.write_text(json.dumps(out, ensure_ascii=False))
