"""Two small shows on the multi-host cluster, set up through the operator's commands, as
`tests/cluster/test_show.py` runs them and `make cluster` leaves them running.

Two stations publish over WHIP from a host of their own, one to each ingest replica; show A has
station gz on air (backed up by sz) and the LIVE badge keyed, show B has sz on air (backed up by
gz); each pushes its program over RTMP to nginx-rtmp on the bridge's own address.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import aiohttp

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import (
    control_pb2,
    distribution_pb2,
    graphics_pb2,
    ingest_pb2,
    mixer_pb2,
    operators_pb2,
)
from tests.cluster.harness import Cluster
from tests.support.command_load import retried
from tests.support.rtmp import RtmpServer

WIDTH, HEIGHT = 1280, 720  # the shows' size
STATION_SIZE = (320, 180)
# show -> (the source on air, its backup)
SHOWS = {"show-a": ("gz", "sz"), "show-b": ("sz", "gz")}
STATIONS = {"gz": ("广州台", "ingest-a"), "sz": ("深圳台", "ingest-b")}
DIRECTOR = "cluster-director"
Cmd = mixer_pb2.MixerCommand


class Show:
    """The two productions and what they need, set up through the operator's commands."""

    def __init__(self, cluster: Cluster, bus: Bus, rtmp: RtmpServer) -> None:
        self.cluster = cluster
        self.bus = bus
        self.rtmp = rtmp
        self.token = ""  # the director's, once added

    async def control_answers(self, name: str, path: str = "/api/me") -> bool:
        """Whether control replica `name` answers the director's API call."""
        url = f"{self.cluster.http_url(name)}{path}"
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                url,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=3),
            ) as response,
        ):
            return response.status == 200

    async def mixer(self, prod: str, command: Cmd) -> mixer_pb2.MixerState:
        return await retried(
            lambda: self.bus.request(
                subject("prod", prod, "mixer", "cmd"), command, mixer_pb2.MixerState, timeout=3
            )
        )

    async def owner(self, service: str, unit: str) -> str:
        entry = await (await self.bus.kv(f"{service}-leases", control_pb2.Lease)).get(unit)
        return entry.value.owner if entry is not None else ""

    async def start_stations(self, workdir: Path) -> None:
        plan_stations = []
        for station, (name, ingest) in STATIONS.items():
            add = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station, name=name))
            reply = await retried(
                partial(
                    self.bus.request,
                    subject("ingest", "station", "cmd"),
                    add,
                    ingest_pb2.StationReply,
                )
            )
            whip = f"{self.cluster.http_url(ingest)}/whip/{station}"
            plan_stations.append({"id": station, "name": name, "token": reply.token, "whip": whip})
        host = self.cluster.add_host("stations")
        plan = workdir / "stations.json"
        plan.write_text(
            json.dumps(
                {
                    "stations": plan_stations,
                    "ice_hosts": [host.ip],
                    "size": list(STATION_SIZE),
                    "fps": 25,
                }
            )
        )
        command = f"exec {sys.executable} -m services.up.stations < {plan}"
        self.cluster.spawn("stations", host, ["sh", "-c", command], dict(os.environ))

    async def create(self, prod: str) -> None:
        on_air, backup = SHOWS[prod]
        production = mixer_pb2.Production(id=prod, width=WIDTH, height=HEIGHT, fps=25)
        production.sources.add(id=on_air, backup=backup)
        production.sources.add(id=backup)
        for source in (on_air, backup):
            production.audio.add(source=source, gain_db=-17, afv=True)
        await retried(
            lambda: self.bus.request(
                subject("mixer", "production", "cmd"),
                mixer_pb2.ProductionCommand(create=production),
                mixer_pb2.ProductionReply,
                timeout=10,
            )
        )
        await self.mixer(prod, Cmd(cut=Cmd.Cut(source=on_air)))
        spec = distribution_pb2.OutputSpec(
            id="push",
            kind=distribution_pb2.OUTPUT_KIND_RTMP,
            url=self.rtmp.app_url(),
            stream_key=prod,
            enabled=True,
        )
        await retried(
            lambda: self.bus.request(
                subject("prod", prod, "dist", "cmd"),
                distribution_pb2.DistCommand(add=distribution_pb2.AddOutput(output=spec)),
                distribution_pb2.DistReply,
                timeout=5,
            )
        )

    async def stop_output(self, prod: str) -> None:
        stop = distribution_pb2.DistCommand(stop=distribution_pb2.OutputRef(id="push"))
        await retried(
            lambda: self.bus.request(
                subject("prod", prod, "dist", "cmd"), stop, distribution_pb2.DistReply, timeout=5
            )
        )

    async def key_badge(self, prod: str) -> None:
        show = graphics_pb2.GfxShow(template="live_badge", instance="badge", layer=10, cut=True)
        await retried(
            lambda: self.bus.request(
                subject("prod", prod, "gfx", "cmd"),
                graphics_pb2.GfxCommand(show=show),
                graphics_pb2.GfxReply,
                timeout=5,
            )
        )

    async def operator_token(self) -> str:
        add = operators_pb2.OperatorCommand(
            add=operators_pb2.AddOperator(
                id=DIRECTOR, name="导演", role=operators_pb2.ROLE_DIRECTOR
            )
        )
        reply = await retried(
            lambda: self.bus.request(subject("operator", "cmd"), add, operators_pb2.OperatorReply)
        )
        return reply.token

    async def start(self, workdir: Path) -> None:
        """Stations, both shows, their pushes and show A's badge; a director to log in with."""
        await self.start_stations(workdir)
        for prod in SHOWS:
            await self.create(prod)
        await self.key_badge("show-a")
        self.token = await self.operator_token()
