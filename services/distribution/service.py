"""The distribution service: wiring only (see owned_productions.py, distributor.py, encoder.py,
outputs.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from services.common import ice
from services.common.bus import PRODUCTIONS_BUCKET
from services.common.credentials import CredentialBook
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.kv_mirror import KvMirror
from services.common.lifecycle import BaseService, run
from services.common.rate_limiter import RateLimiter
from services.common.settings import load_settings
from services.common.telemetry import configure_logging
from services.distribution.audience import Audience, HlsServer
from services.distribution.distributor import Distributor
from services.distribution.exchange_desk import ExchangeDesk
from services.distribution.live_encoding import LiveEncodings
from services.distribution.owned_productions import OwnedProductions
from services.distribution.settings import DistributionSettings
from services.distribution.srt_return import Returns
from services.distribution.tally_duty import TallyDuty
from services.distribution.viewers import ViewerRegistry
from services.distribution.whep import WhepEndpoint

AUDIENCE_INTERVAL_S = 5.0
REAP_INTERVAL_S = 1.0


class DistributionService(BaseService[DistributionSettings]):
    name = "distribution"

    async def setup(self) -> None:
        s = self.settings
        self.directory = HandleDirectory(self.bus)
        # The exchange (docs/adr/0012): who may read what, and the encodings viewers share.
        self.ice_policy = ice.configure(s.ice_hosts, s.rtc_port_min, s.rtc_port_max)
        self.credentials = await CredentialBook.open(
            self.bus, grant_secret=self.settings.media_grant_secret
        )
        self.productions = await KvMirror.open(self.bus, PRODUCTIONS_BUCKET, mixer_pb2.Production)
        self.encodings = LiveEncodings(
            self._handle_frames,
            video_kbps=s.exchange_video_kbps,
            audio_kbps=s.exchange_audio_kbps,
            keyframe_interval_s=s.keyframe_interval_s,
        )
        self.whep_viewers = ViewerRegistry(
            self.encodings, max_viewers=s.max_viewers, public_ip=s.public_ip
        )
        self.whep = WhepEndpoint(
            self.whep_viewers,
            self.credentials,
            self.productions,
            max_sdp_bytes=s.max_sdp_bytes,
            default_height=s.exchange_height,
            return_height=s.return_height,
            rate_limiter=RateLimiter(s.whep_rate_per_s, s.whep_rate_burst),
            ice_policy=self.ice_policy,
        )
        self.whep.add_routes(self.http.app)
        # SRT returns to stations' decoders, on the same encodings as WHEP's (docs/adr/0012).
        self.returns = Returns(self.encodings, self.credentials.stations, self.productions, s)
        self.distributor = Distributor(
            self.settings, self.bus, self._program_frames, returns=self.returns
        )
        self.audience = Audience(self.settings.viewer_window_s)
        HlsServer(Path(self.settings.data_dir) / "hls", self.audience).add_routes(self.http.app)
        await self.distributor.start()
        # One replica runs each production's outputs and applies its commands (docs/adr/0015).
        self.owned = OwnedProductions(self.distributor, self.bus, s)
        await self.owned.open()
        # A deleted production's outputs stop and go (every replica hears of it).
        self.productions.on_change(self._production_changed)
        # Tally, cues and the station event streams (docs/adr/0012).
        self.exchange = await ExchangeDesk.open(
            self.bus,
            self.credentials,
            self.productions,
            self.base_url,
            lambda production: self.whep_viewers.viewers(production),
            s.instance,
        )
        self.exchange.add_routes(self.http.app)
        await self.exchange.start()
        # One replica sends the stations' tally (services/distribution/tally_duty.py).
        self.tally_duty = TallyDuty(self.bus, s, self.exchange.tally_out)
        await self.tally_duty.open()
        self.spawn(self._audience_loop(), "audience")
        self.spawn(self.whep.enforce_access(), "whep-access")
        self.spawn(self.whep_viewers.measure_forever(), "whep-stats")
        self.spawn(self._reap_loop(), "live-encodings-reap")

    async def before_drain(self) -> None:
        # While the bus is up: the productions' leases are released, other replicas take them.
        await self.owned.close()
        await self.tally_duty.close()
        await self.whep_viewers.close_all("distribution is draining")

    async def teardown(self) -> None:
        await self.whep_viewers.close_all("distribution stopped")
        await self.distributor.stop()
        await self.returns.close()
        await self.encodings.close()
        await self.exchange.close()
        await self.productions.close()
        await self.credentials.close()

    def _production_changed(self, production: str, value: mixer_pb2.Production | None) -> None:
        if value is None:
            self.owned.production_deleted(production, self._production_exists)

    async def _production_exists(self, production: str) -> bool:
        return await self.productions.bucket.get(production) is not None

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
            pull=True,
            pull_sound=True,
            # A mixer's pictures compressed; a source's as ingest sends them (ingest would
            # re-encode them for us: its CPU, its choice in ADR 0025).
            compression=self.settings.mixer_compression() if handle.startswith("prod/") else None,
        )

    def _program_frames(
        self, production: str, rendition: media_pb2.Rendition
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        return self.directory.frames(
            self.channels,
            f"prod/{production}/program",
            rendition,
            subscriber=f"distribution-{self.settings.instance}/{production}",
            pull=True,
            pull_sound=True,
            compression=self.settings.mixer_compression(program=True),
        )

    async def _audience_loop(self) -> None:
        while True:
            await asyncio.sleep(AUDIENCE_INTERVAL_S)
            self.audience.refresh_metrics()

    async def _reap_loop(self) -> None:
        # Encodings nobody watches stop after their linger time.
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            await self.encodings.reap()


def main() -> None:
    settings = load_settings(DistributionSettings, "distribution")
    configure_logging(settings.log_format, settings.log_level)
    run(DistributionService(settings))
