"""The demo's synthetic stations, all in one process: `python -m services.up.stations < plan.json`.

Each station publishes its test card over WHIP like a real encoder would. The card is encoded once
as a 2 s H.264 loop and its tone as a 2 s Opus loop, both replayed as packets (a few % of a core
per station) instead of being encoded live twelve times, which would not fit on a 2-core machine
next to the platform. The plan (WHIP URLs and tokens) arrives on standard input so that tokens
never show in a process list.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import structlog

from services.common import ice
from services.common.telemetry import configure_logging
from services.station.publisher import PublishRefused, WhipPublisher
from services.station.testcard import TestCard
from services.station.tracks import CardLoop

log = structlog.get_logger("stations")


async def publish_all(plan: dict[str, Any]) -> int:
    ice.configure(tuple(plan.get("ice_hosts", ["127.0.0.1"])))
    fps = int(plan.get("fps", 25))
    width, height = plan.get("size", [640, 360])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    publishers = []
    for station in plan["stations"]:
        card = TestCard(station["id"], station["name"], width, height)
        card_loop = await asyncio.to_thread(CardLoop.encode, card, fps)
        publishers.append(
            WhipPublisher(
                station["whip"],
                station["token"],
                card_loop.tracks,
                h264_only=True,
                ca_file=os.environ.get("BAYCAST_TLS_CA_FILE", ""),
            )
        )
        log.info("station_ready", station=station["id"], name=station["name"])
    results = await asyncio.gather(*(p.run(stop) for p in publishers), return_exceptions=True)
    refused = [r for r in results if isinstance(r, PublishRefused)]
    for exc in refused:
        log.error("station_refused", status=exc.status)
    return 1 if refused else 0


def main() -> None:
    configure_logging(os.environ.get("BAYCAST_LOG_FORMAT", "auto"), "info")
    plan = json.load(sys.stdin)
    sys.exit(asyncio.run(publish_all(plan)))


if __name__ == "__main__":
    main()
