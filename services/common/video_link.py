"""Compressed video between hosts (ADR 0025): a rendition encoded once for every subscriber on
another host, and decoded back to raw frames by the consumer's client.

On one host pictures go through shared memory (ADR 0010, 0024). Between hosts a raw 1080p25
program is 622 Mbit/s; a consumer that asks for `SubscribeRequest.compression` gets the same
pictures as H.264 `VideoPacket`s instead, at a few Mbit/s.

- `LinkEncoder` (producer): one per compressed rendition. The caller hands it each picture (a
  frame it will not change again); a thread encodes with libx264 (no B-frames, no lookahead: a
  picture's packet comes out of its own encode call) and hands each packet to `deliver` in that
  thread. Keyframes every second, and at the next picture when a
  subscriber joins (`keyframe()`); SPS and PPS ride before every keyframe, so any keyframe starts
  a decoder. A picture that finds the encoder still busy with two others replaces the older
  waiting one (counted in `skipped`): the encoder never holds the caller up.
- `LinkDecoder` (consumer): packets in, yuv420p pictures out (`media.decoded` gives them the
  packet's timestamps). After a gap in the packets' sequence (the subscriber's queue dropped some)
  or a damaged packet it decodes nothing until the next keyframe: pictures hold, never smear.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import structlog
from av.video.frame import PictureType

from services.common.gen.baycast.v1 import media_pb2

H264 = media_pb2.VIDEO_CODEC_H264
# The encoder's target for a 1080p picture; other sizes scale by their pixels.
DEFAULT_1080P_KBPS = 8_000
MIN_KBPS, MAX_KBPS = 300, 50_000
KEYFRAME_INTERVAL_S = 1.0
# Pictures waiting for the encoder: the newest replaces the oldest past this.
MAX_WAITING = 2
# The rate control's buffer, in seconds of the target rate: short, so no second carries much more
# than the target (the link's bandwidth is what this is for).
VBV_BUFFER_S = 0.5

log = structlog.get_logger("video_link")


def compression_problem(c: media_pb2.Compression) -> str:
    """Why `c` cannot be served, or '' if it can."""
    if c.codec != H264:
        return "the only compression served is VIDEO_CODEC_H264"
    if c.bitrate_kbps and not MIN_KBPS <= c.bitrate_kbps <= MAX_KBPS:
        return f"bitrate_kbps must be between {MIN_KBPS} and {MAX_KBPS}"
    return ""


def link_kbps(c: media_pb2.Compression, width: int, height: int) -> int:
    """The encoder's target for a picture of `width`x`height`: asked for, or the default."""
    if c.bitrate_kbps:
        return int(c.bitrate_kbps)
    scaled = round(DEFAULT_1080P_KBPS * width * height / (1920 * 1080))
    return max(MIN_KBPS, min(MAX_KBPS, scaled))


@dataclass(slots=True)
class _Picture:
    frame: av.VideoFrame
    pts_us: int
    capture_time_us: int


class LinkEncoder:
    """One compressed rendition (`width`x`height` at `fps`, `kbps`), encoded in its own thread."""

    def __init__(
        self,
        width: int,
        height: int,
        fps: int,
        kbps: int,
        deliver: Callable[[media_pb2.VideoPacket], None],
        name: str = "",
    ) -> None:
        self.width, self.height, self.fps, self.kbps = width, height, fps, kbps
        self.skipped = 0  # pictures replaced while waiting for the encoder
        self._deliver = deliver
        self._name = name
        self._waiting: deque[_Picture] = deque()
        self._wake = threading.Condition()
        self._keyframe = True
        self._closed = False
        self._codec = self._open()
        self._thread = threading.Thread(target=self._run, name=f"link-{name}", daemon=True)
        self._thread.start()

    def _open(self) -> av.VideoCodecContext:
        gop = str(max(1, round(self.fps * KEYFRAME_INTERVAL_S)))
        codec = av.CodecContext.create("libx264", "w")
        assert isinstance(codec, av.VideoCodecContext)
        codec.width, codec.height, codec.pix_fmt = self.width, self.height, "yuv420p"
        codec.time_base = Fraction(1, 1_000_000)
        codec.framerate = Fraction(self.fps)
        codec.bit_rate = self.kbps * 1000
        codec.thread_count = min(4, os.cpu_count() or 1)
        vbv = f"vbv-maxrate={self.kbps}:vbv-bufsize={round(self.kbps * VBV_BUFFER_S)}"
        codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "g": gop,
            "keyint_min": gop,
            "sc_threshold": "0",
            "bf": "0",
            "x264-params": f"repeat-headers=1:{vbv}",
        }
        codec.open()
        return codec

    def submit(self, frame: av.VideoFrame, pts_us: int, capture_time_us: int) -> None:
        """Queue a yuv420p picture of the rendition's size: the encoder reads it later, so its
        memory must not be reused (`media.copy_i420` first where it is)."""
        with self._wake:
            if self._closed:
                return
            if len(self._waiting) >= MAX_WAITING:
                self._waiting.popleft()
                self.skipped += 1
            self._waiting.append(_Picture(frame, pts_us, capture_time_us))
            self._wake.notify()

    def keyframe(self) -> None:
        """Make the next picture a keyframe (a subscriber joined)."""
        with self._wake:
            self._keyframe = True

    def close(self) -> None:
        """Stop: the picture being encoded is the last (its packet may still be delivered)."""
        with self._wake:
            self._closed = True
            self._waiting.clear()
            self._wake.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _next(self) -> tuple[_Picture, bool] | None:
        with self._wake:
            while not self._waiting and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            keyframe, self._keyframe = self._keyframe, False
            return self._waiting.popleft(), keyframe

    def _run(self) -> None:
        last_pts = -1
        while (job := self._next()) is not None:
            picture, keyframe = job
            frame = picture.frame
            # x264 needs rising timestamps: a producer that restarts its clock goes on from here.
            frame.pts = max(picture.pts_us, last_pts + 1)
            last_pts = frame.pts
            frame.time_base = Fraction(1, 1_000_000)
            if keyframe:
                frame.pict_type = PictureType.I
            try:
                packets = self._codec.encode(frame)
            except av.error.FFmpegError:
                log.exception("link_encode_failed", rendition=self._name)
                continue
            for packet in packets:
                self._deliver(
                    media_pb2.VideoPacket(
                        codec=H264,
                        data=bytes(packet),
                        keyframe=packet.is_keyframe,
                        width=self.width,
                        height=self.height,
                        pts_us=picture.pts_us,
                        capture_time_us=picture.capture_time_us,
                    )
                )


class LinkDecoder:
    """A subscription's compressed pictures back to raw frames. One thread at a time."""

    def __init__(self) -> None:
        self._codec: av.VideoCodecContext | None = None
        self._next_sequence: int | None = None
        self._synced = False
        self.discarded = 0  # packets left undecoded after a gap, until a keyframe

    def reset(self) -> None:
        """A new subscription: its sequence starts again, and its first keyframe starts it."""
        self._next_sequence = None
        self._synced = False

    def decode(self, packet: media_pb2.VideoPacket) -> list[av.VideoFrame]:
        """The yuv420p pictures `packet` completes (at most one)."""
        if self._next_sequence is not None and packet.sequence != self._next_sequence:
            self._synced = False
        self._next_sequence = packet.sequence + 1
        if packet.codec != H264:
            self._synced = False
            self.discarded += 1
            return []
        if not self._synced and not packet.keyframe:
            self.discarded += 1
            return []
        if self._codec is None:
            codec = av.CodecContext.create("h264", "r")
            assert isinstance(codec, av.VideoCodecContext)
            codec.thread_count = 1  # pictures come out of the call that completes them
            self._codec = codec
        unit = av.Packet(packet.data)
        unit.pts = unit.dts = packet.pts_us
        try:
            frames = self._codec.decode(unit)
        except av.error.FFmpegError:
            self._synced = False
            self.discarded += 1
            return []
        self._synced = True
        return [f if f.format.name == "yuv420p" else f.reformat(format="yuv420p") for f in frames]
