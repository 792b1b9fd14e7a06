"""Capture time of contributed frames, on the wall clock.

A frame's `pts` is on the sender's media clock (for WebRTC, the RTP timestamp rebased to 0 by
aiortc), which says how far apart frames were captured but not when. aiortc keeps the RTCP sender
reports' NTP time only inside its statistics, without the RTP timestamp they pair with, so the
exact mapping is not available. The clock therefore anchors pts to the arrival wall time and
keeps the anchor at the *earliest* arrival seen: `capture = anchor + pts`, where `anchor` only
moves back when a frame arrives sooner than the mapping predicts. Network jitter and decode
queueing then do not leak into capture times, and the result is the capture time minus the
smallest transit delay observed (milliseconds on a LAN or loopback). See docs/adr/0003.
"""

from __future__ import annotations

from fractions import Fraction

from services.common import media
from services.common.media import now_us

# A jump in pts larger than this (stream restart, wrap) re-anchors instead of trusting it.
MAX_PTS_JUMP_US = 10_000_000


class CaptureClock:
    def __init__(self) -> None:
        self._anchor_us: int | None = None
        self._last_pts_us: int | None = None

    def capture_time_us(
        self, pts: int | None, time_base: Fraction | None, *, arrival_us: int = 0
    ) -> int:
        if pts is None or time_base is None:
            return arrival_us or now_us()
        return self.capture_time_of_us(media.pts_us(pts, time_base), arrival_us=arrival_us)

    def capture_time_of_us(self, pts_us: int, *, arrival_us: int = 0) -> int:
        """As `capture_time_us` for a timestamp already in microseconds."""
        arrival = arrival_us or now_us()
        if (
            self._anchor_us is None
            or self._last_pts_us is None
            or abs(pts_us - self._last_pts_us) > MAX_PTS_JUMP_US
        ):
            self._anchor_us = arrival - pts_us
        self._last_pts_us = pts_us
        self._anchor_us = min(self._anchor_us, arrival - pts_us)
        return self._anchor_us + pts_us
