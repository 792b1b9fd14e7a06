"""Wiring of the ingest service: stations, WHIP, sources, the media plane."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from services.common import ice
from services.common.bus import subject
from services.common.credentials import CredentialBook
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.handles import HandleDirectory
from services.common.lifecycle import BaseService, run
from services.common.media_service import MediaService
from services.common.rate_limiter import RateLimiter
from services.common.settings import load_settings, split_addr
from services.common.telemetry import configure_logging
from services.ingest import metrics
from services.ingest.http_limits import RouteRateLimit
from services.ingest.live_claims import LiveClaims
from services.ingest.media_server import SourceFeeds
from services.ingest.reporter import ReporterPage
from services.ingest.rtmp import RtmpServer
from services.ingest.rtmp_limits import RtmpLimits
from services.ingest.settings import IngestSettings
from services.ingest.sources import SourceRegistry
from services.ingest.srt import SrtListeners
from services.ingest.stations import BUCKET as STATIONS_BUCKET
from services.ingest.stations import StationRegistry
from services.ingest.whip import WhipEndpoint

STATION_COMMANDS = subject("ingest", "station", "cmd")


class IngestService(BaseService[IngestSettings]):
    name = "ingest"

    async def setup(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        metrics.ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        ice_policy = ice.configure(s.ice_hosts, s.rtc_port_min, s.rtc_port_max)
        self.stations = StationRegistry(
            await self.bus.kv(STATIONS_BUCKET, ingest_pb2.Station),
            lambda: s.whip_base_url(self.http.port),
        )
        self.claims = LiveClaims(
            self.bus, s.instance, ttl_s=s.live_claim_ttl_s, refresh_s=s.live_claim_refresh_s
        )
        await self.claims.open()
        self.spawn(self.claims.run(), "refresh-live-claims")
        self.sources = SourceRegistry(
            self.bus,
            HandleDirectory(self.bus),
            lambda: f"{s.grpc_endpoint.rpartition(':')[0]}:{self.grpc.port}",
            queue_size=s.subscriber_queue,
            stats_interval_s=s.stats_interval_s,
            claims=self.claims,
        )
        await self.sources.open()
        # Operators' tokens, for the director's talkback microphone over WHIP.
        self.credentials = await CredentialBook.open(
            self.bus, grant_secret=self.settings.media_grant_secret
        )
        self.whip = WhipEndpoint(
            self.stations,
            self.sources,
            max_sessions=s.max_sessions,
            max_sdp_bytes=s.max_sdp_bytes,
            public_ip=s.public_ip,
            ice_policy=ice_policy,
            rate_limiter=RateLimiter(s.whip_rate_per_s, s.whip_rate_burst),
            credentials=self.credentials,
        )
        RouteRateLimit(RateLimiter(s.http_rate_per_s, s.http_rate_burst)).install(self.http.app)
        self.whip.add_routes(self.http.app)
        ReporterPage(self.stations, s.exchange_url, s.exchange_origin).add_routes(self.http.app)
        self.spawn(self.whip.enforce_revocations(), "enforce-revocations")
        self.rtmp = RtmpServer(
            self.stations,
            self.sources,
            addr=s.rtmp_addr,
            max_sessions=s.max_sessions,
            is_busy=lambda station: station in self.sources.live or station in self.whip._pending,
            limits=RtmpLimits.from_settings(s),
        )
        await self.rtmp.start()
        srt_host, srt_port = split_addr(s.srt_addr)
        self.srt = SrtListeners(
            self.stations,
            self.sources,
            host=srt_host,
            first_port=srt_port,
            ports=s.srt_ports,
            secret=s.srt_secret,
            max_sessions=s.max_sessions,
            public_host=lambda: urlsplit(s.whip_base_url(self.http.port)).hostname or srt_host,
            is_busy=lambda station: station in self.sources.live or station in self.whip._pending,
        )
        self.srt.add_routes(self.http.app)
        await self.srt.start()
        self.grpc.add_media(MediaService(SourceFeeds(self.sources).open, metrics.MEDIA_SENT_BYTES))
        await self.bus.serve(
            STATION_COMMANDS, ingest_pb2.StationCommand, self._station_command, queue="ingest"
        )

    async def _station_command(self, command: ingest_pb2.StationCommand) -> ingest_pb2.StationReply:
        reply = await self.stations.handle(command)
        if command.WhichOneof("command") == "revoke":
            await self.sources.stop(command.revoke.id, "station revoked")
        return reply

    async def start(self) -> None:
        await super().start()
        stale = await self.sources.reconcile()
        if stale:
            self.log.info("stale_sources_offline", sources=stale)

    async def before_drain(self) -> None:
        # Sources end while the bus is still up, so their offline state reaches everyone.
        self.whip.accepting = False
        await self.rtmp.close()
        await self.srt.close()
        await self.sources.stop_all("ingest shutting down")

    async def teardown(self) -> None:
        await self.credentials.close()


def main() -> None:
    settings = load_settings(IngestSettings, "ingest")
    configure_logging(settings.log_format, settings.log_level)
    run(IngestService(settings))
