"""Benchmark 8: the control room — a command from its API to the program, and how far the
multiview a director watches in the page is behind the program (`bench/control_room_scene.py`,
run in a loopback-only network namespace with headless Chromium)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np

from bench.harness import Result, Stat
from tests.support.loopback_scene import run_scene, unshare_works

FRAME_MS = 1000 / 25
SCENE_TIMEOUT_S = 300.0


def run(runs: int) -> list[Result]:
    del runs  # the scene repeats its cuts itself
    if not unshare_works():
        reason = "needs `unshare -n` (root or user namespaces) for a loopback-only browser"
        return [
            Result("Control room", "—", f"not measured: {reason}", "—", "—", None),
        ]
    with tempfile.TemporaryDirectory(prefix="baycast-bench-room-") as folder:
        done, out = asyncio.run(
            run_scene("bench.control_room_scene", Path(folder) / "out.json", SCENE_TIMEOUT_S)
        )
    if "error" in out or not out.get("behind_ms"):
        why = out.get("error") or done.stderr.decode(errors="replace")[-500:]
        return [Result("Control room", "—", f"not measured: {why}", "—", "—", None)]
    api, bus, behind = Stat.of(out["api_ms"]), Stat.of(out["bus_ms"]), Stat.of(out["behind_ms"])
    behind95 = float(np.percentile(out["behind_ms"], 95))
    target = FRAME_MS + 30
    return [
        Result(
            name="Control room: API request → switched program frame",
            target=f"≤ one frame + 30 ms ({target:.0f} ms)",
            measured=api.fmt(" ms", 0),
            reference=f"the same cut over NATS (`baycast ctl`'s way): {bus.fmt(' ms', 0)}",
            ratio=f"{api.median / target:.2f} of the target",
            met=api.median <= target,
            notes=[
                f"{len(out['api_ms'])} cuts sent as `POST /api/productions/<p>/mixer` with a "
                "director's bearer token, alternating with as many over NATS; timed from sending "
                "to the first program frame with the new source at a media-plane subscriber. The "
                "control service checks the token and the role, writes the as-run entry after "
                "the reply, and bridges to the mixer's NATS command."
            ],
        ),
        Result(
            name="Control room: the page's multiview behind the program",
            target="≤ 500 ms",
            measured=f"p95 {behind95:.0f} ms; {behind.fmt(' ms', 0)}",
            reference="the program frame's arrival at a media-plane subscriber",
            ratio=f"p95 = {behind95 / 500:.2f} of the target",
            met=behind95 <= 500,
            notes=[
                f"{len(out['behind_ms'])} cuts; headless Chromium (a director's page at "
                "1366×768) plays the multiview over WHEP (distribution encodes it once, H.264 "
                "960×540); every picture the page presents is read off the `<video>` with "
                "`requestVideoFrameCallback`: the first showing the new source in the "
                "multiview's program quarter is compared with the program frame's arrival. The "
                "mixer draws the multiview from the same tick as the program."
            ],
        ),
    ]
