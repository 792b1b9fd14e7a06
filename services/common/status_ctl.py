"""`baycast ctl status`: which service instances are alive, from their heartbeats."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from services.common.bus import PREFIX
from services.common.ctl import Ctl, print_table, run_verb
from services.common.gen.baycast.v1 import control_pb2
from services.common.lifecycle import HEARTBEAT_INTERVAL_S


async def collect_heartbeats(ctl: Ctl, wait_s: float) -> list[control_pb2.Heartbeat]:
    seen: dict[str, control_pb2.Heartbeat] = {}

    async def on_beat(beat: control_pb2.Heartbeat, _subject: str) -> None:
        seen[f"{beat.service}/{beat.instance}"] = beat

    sub = await ctl.bus.subscribe(PREFIX + "svc.*.*.heartbeat", control_pb2.Heartbeat, on_beat)
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    return sorted(seen.values(), key=lambda b: (b.service, b.instance))


async def _status(ctl: Ctl, args: argparse.Namespace) -> int:
    beats = await collect_heartbeats(ctl, args.wait)
    now = time.time()
    rows: list[dict[str, Any]] = [
        {
            "service": b.service,
            "instance": b.instance,
            "ready": "yes" if b.ready else "NO",
            "up": f"{now - b.started_at_us / 1e6:.0f}s",
            "cpu": f"{b.cpu_seconds:.1f}s",
            "rss": f"{b.rss_bytes / 2**20:.0f}MiB",
            "http": b.http_address,
            "grpc": b.grpc_address,
        }
        for b in beats
    ]
    print_table(rows, ["service", "instance", "ready", "up", "cpu", "rss", "http", "grpc"])
    return 0 if beats else 1


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("status", help="list live service instances from their heartbeats")
    p.add_argument(
        "--wait", type=float, default=HEARTBEAT_INTERVAL_S + 0.5, help="seconds to listen"
    )
    p.set_defaults(run=lambda args: run_verb(args, _status))
