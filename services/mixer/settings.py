"""Mixer settings (environment: BAYCAST_MIXER_<FIELD>, then BAYCAST_<FIELD>)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.gen.baycast.v1 import media_pb2
from services.common.settings import ServiceSettings, SettingsError

DEFAULT_LEASE_SECONDS = 3.0
DEFAULT_LEASE_RENEW_SECONDS = 1.0
DEFAULT_MAX_PRODUCTIONS = 4
DEFAULT_SUBSCRIBER_QUEUE = 8
DEFAULT_FEED_IDLE_SECONDS = 5.0


@dataclass(frozen=True)
class MixerSettings(ServiceSettings):
    # A production's lease lives this long unless its owner renews it (docs/adr/0004).
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # How often an instance renews its leases and looks for productions nobody runs.
    lease_renew_seconds: float = DEFAULT_LEASE_RENEW_SECONDS
    # How many productions one instance runs at most.
    max_productions: int = DEFAULT_MAX_PRODUCTIONS
    # Frames queued per media subscriber before the oldest is dropped.
    subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    # A source rendition nobody has shown for this long is unsubscribed.
    feed_idle_seconds: float = DEFAULT_FEED_IDLE_SECONDS
    # One production's CPU (a 1080p25 city wall of ten sources with graphics: 0.27-0.31 core
    # in BENCHMARKS.md), for the replica's budget (services/common/capacity.py).
    unit_cores: float = 0.35
    # Where clips and stills fetched from the media library are kept (default: the temporary
    # directory's baycast-media); a file is fetched again only when the library's copy changed.
    media_cache_dir: str = ""
    # How the mixer asks a source on another host (another pod) for its boxes' pictures: "raw"
    # I420 (a 1536x864 box at 25 fps is 398 Mbit/s, a 384x216 tile 25) or "h264", which ingest
    # encodes once per box size and rate for every mixer that asks (a few Mbit/s a box, for
    # ingest's CPU: ADR 0025). On ingest's host pictures come from shared memory either way.
    source_link: str = "raw"

    def source_compression(self) -> media_pb2.Compression | None:
        """What the mixer asks of a source on another host for its pictures."""
        if self.source_link == "raw":
            return None
        return media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264)

    def validate(self) -> None:
        super().validate()
        if self.source_link not in ("raw", "h264"):
            raise SettingsError("BAYCAST_MIXER_SOURCE_LINK must be raw or h264")
        if not 0 < self.lease_renew_seconds < self.lease_seconds:
            raise SettingsError(
                "BAYCAST_MIXER_LEASE_RENEW_SECONDS must be positive and below LEASE_SECONDS"
            )
        if self.max_productions < 1:
            raise SettingsError("BAYCAST_MIXER_MAX_PRODUCTIONS must be at least 1")
        if self.subscriber_queue < 1:
            raise SettingsError("BAYCAST_MIXER_SUBSCRIBER_QUEUE must be at least 1")
