"""The GStreamer WHIP test's inside: run it in a network namespace that has only loopback.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.gst_whip_scene OUT.json'

The GStreamer publisher (`tests/support/gst_whip.py`, webrtcbin, run by the system Python for
its GObject bindings) goes live once per codec on a station of its own; what was seen (see
tests/support/foreign_whip_scene.py) is written to OUT.json for the test outside to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.ingest.service import IngestService
from tests.support.foreign_whip_scene import HEIGHT, WIDTH, key_type, watch, with_ingest
from tests.support.loopback_scene import scene_main
from tests.support.station import add_station, whip_url

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT = Path(__file__).with_name("gst_whip.py")
CODECS = ("vp8", "h264")
TONE_HZ = {"vp8": 660.0, "h264": 880.0}


async def drive(out: dict[str, Any]) -> None:
    async def scene(ingest: IngestService) -> None:
        for codec in CODECS:
            station = f"gst-{codec}"
            token = await add_station(ingest, station, f"GStreamer {codec}")
            argv = [
                SYSTEM_PYTHON,
                str(CLIENT),
                whip_url(ingest, station),
                "--codec",
                codec,
                "--seconds",
                "40",
                "--size",
                f"{WIDTH}x{HEIGHT}",
                "--tone-hz",
                str(TONE_HZ[codec]),
                "--ice-host",
                "127.0.0.1",
            ]
            seen: dict[str, Any] = {}
            out[codec] = seen
            events = await watch(ingest, station, argv, token, seen)
            seen["certificate"] = key_type(events["connected"]["certificate"])
            seen["sent"] = events["sent"]["streams"]

    await with_ingest(scene)


if __name__ == "__main__":
    scene_main(lambda out, _path: drive(out), 150)
