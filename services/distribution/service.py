"""The distribution service: wiring only (see distributor.py, encoder.py, outputs.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from services.common import ice
from services.common.bus import PREFIX
from services.common.credentials import CredentialBook
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.kv_mirror import KvMirror
from services.common.lifecycle import BaseService, run
from services.common.settings import load_settings
from services.common.telemetry import configure_logging
from services.distribution.audience import Audience, HlsServer
from services.distribution.distributor import Distributor
from services.distribution.live_encoding import LiveEncodings
from services.distribution.settings import DistributionSettings

# Commands for every production: the production is named in the command and the subject.
COMMAND_SUBJECT = PREFIX + "prod.*.dist.cmd"
AUDIENCE_INTERVAL_S = 5.0
PRODUCTIONS_BUCKET = "mixer-productions"


class DistributionService(BaseService[DistributionSettings]):
    name = "distribution"

    async def setup(self) -> None:
        s = self.settings
        self.directory = HandleDirectory(self.bus)
        # The exchange (docs/adr/0012): who may read what, and the encodings viewers share.
        self.ice_policy = ice.configure(s.ice_hosts, s.rtc_port_min, s.rtc_port_max)
        self.credentials = await CredentialBook.open(self.bus)
        self.productions = await KvMirror.open(self.bus, PRODUCTIONS_BUCKET, mixer_pb2.Production)
        self.encodings = LiveEncodings(
            self._handle_frames,
            video_kbps=s.exchange_video_kbps,
            audio_kbps=s.exchange_audio_kbps,
            keyframe_interval_s=s.keyframe_interval_s,
        )
        self.distributor = Distributor(self.settings, self.bus, self._program_frames)
        self.audience = Audience(self.settings.viewer_window_s)
        HlsServer(Path(self.settings.data_dir) / "hls", self.audience).add_routes(self.http.app)
        await self.distributor.start()
        await self.bus.serve_each(COMMAND_SUBJECT, dist.DistCommand, self.distributor.handle)
        self.spawn(self._audience_loop(), "audience")

    async def teardown(self) -> None:
        await self.distributor.stop()
        await self.encodings.close()
        await self.productions.close()
        await self.credentials.close()

    def base_url(self) -> str:
        """Where stations and players reach this service (WHEP, station events)."""
        return self.settings.base_url(self.http.port)

    def _handle_frames(
        self, handle: str, rendition: media_pb2.Rendition
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        return self.directory.frames(
            self.channels,
            handle,
            rendition,
            subscriber=f"distribution-{self.settings.instance}/exchange",
        )

    def _program_frames(
        self, production: str, rendition: media_pb2.Rendition
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        return self.directory.frames(
            self.channels,
            f"prod/{production}/program",
            rendition,
            subscriber=f"distribution-{self.settings.instance}/{production}",
        )

    async def _audience_loop(self) -> None:
        while True:
            await asyncio.sleep(AUDIENCE_INTERVAL_S)
            self.audience.refresh_metrics()


def main() -> None:
    settings = load_settings(DistributionSettings, "distribution")
    configure_logging(settings.log_format, settings.log_level)
    run(DistributionService(settings))
