"""The OBS-style WHIP test's inside: run it in a network namespace that has only loopback.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.obs_whip_scene OUT.json'

The libdatachannel publisher (`tests/support/obs_whip.py`, what OBS Studio 30+ does, run by the
Python of build/obs-venv) goes live on a station; what was seen (see
tests/support/foreign_whip_scene.py) is written to OUT.json for the test outside to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.ingest.service import IngestService
from tests.support.foreign_whip_scene import HEIGHT, WIDTH, watch, with_ingest
from tests.support.loopback_scene import REPO, scene_main
from tests.support.station import add_station, whip_url

OBS_PYTHON = REPO / "build" / "obs-venv" / "bin" / "python"
CLIENT = Path(__file__).with_name("obs_whip.py")
STATION = "obs"
TONE_HZ = 550.0


async def drive(out: dict[str, Any]) -> None:
    async def scene(ingest: IngestService) -> None:
        token = await add_station(ingest, STATION, "OBS 推流")
        argv = [
            str(OBS_PYTHON),
            str(CLIENT),
            whip_url(ingest, STATION),
            "--seconds",
            "40",
            "--size",
            f"{WIDTH}x{HEIGHT}",
            "--tone-hz",
            str(TONE_HZ),
            "--ice-host",
            "127.0.0.1",
        ]
        events = await watch(ingest, STATION, argv, token, out)
        out["connected"] = events["connected"]
        out["sent"] = events["sent"]

    await with_ingest(scene)


if __name__ == "__main__":
    scene_main(lambda out, _path: drive(out), 90)
