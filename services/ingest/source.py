"""The small interface every contribution implements: a producer of decoded frames.

A WHIP session is one (`webrtc_source.WhipSource`); an RTMP or SRT listener plugs in the same
way: decode with PyAV, hand each `av.VideoFrame` / `av.AudioFrame` to the sink, report transport
statistics. Everything after that (renditions, fan-out, measurements, announcements) is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import av


class FrameSink(Protocol):
    """Where a source delivers decoded frames. Both calls return at once (never block)."""

    def offer_video(self, frame: av.VideoFrame) -> None: ...

    def offer_audio(self, frame: av.AudioFrame) -> None: ...


@dataclass
class TransportStats:
    """Cumulative counters since the contribution began (rates are derived by the caller), and
    the jitter and round-trip time now. Loss is what the transport saw missing: RTP's for WHIP,
    SRT's detected losses (most then retransmitted in time), always 0 over TCP (RTMP), where a
    lost segment is retransmitted by TCP and shows as delay (jitter) instead."""

    bytes_received: int = 0
    packets_received: int = 0
    packets_lost: int = 0
    jitter_ms: float = 0.0
    rtt_ms: float = 0.0
    decode_errors: int = 0
    packets_dropped: int = 0  # lost for good: SRT's packets too late to play
    retransmits: int = 0  # SRT: retransmitted packets received; RTMP: TCP segments ingest resent


class Source(ABC):
    """A live contribution. `run` delivers frames until the contribution ends, then returns."""

    protocol: str = ""

    def __init__(self, source_id: str, station: str, name: str) -> None:
        self.source_id = source_id
        self.station = station
        self.name = name
        self.video_codec = ""
        self.audio_codec = ""

    @abstractmethod
    async def run(self, sink: FrameSink) -> str:
        """Deliver frames to `sink` until the contribution ends; return why it ended."""

    @abstractmethod
    async def transport_stats(self) -> TransportStats: ...

    @abstractmethod
    async def close(self) -> None:
        """End the contribution (makes `run` return) and release what it holds."""
