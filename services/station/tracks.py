"""Media tracks a station publishes: the live test card, its tone, and the cheap packet loops.

`CardVideoTrack` renders each frame (cheap) and aiortc encodes it (not cheap: 40-65 % of a core
for 720p H.264 on the reference box). `PacketLoopTrack` encodes a loop of the card to H.264 once
and replays the packets: aiortc's sender takes an `av.Packet` from `recv()` and only packetizes
it (`H264Encoder.pack`), so a dozen stations fit on one small machine. The burnt-in clock then
repeats with the loop. `ToneLoopTrack` does the same for the tone: making, measuring and
Opus-encoding fifty 20 ms frames a second took half of the demo stations' process.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.station.testcard import SAMPLE_RATE, TestCard

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
AUDIO_TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
AUDIO_FRAME_SAMPLES = 960  # 20 ms
LOOP_SECONDS = 2.0
LOOP_BITRATE = 1_500_000
TONE_BITRATE = 64_000


class _Paced(MediaStreamTrack):
    """Frames due at start + n * interval on the monotonic clock; late frames are not skipped."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._interval = interval
        self._start: float | None = None
        self._count = 0

    async def _next(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * self._interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        self._count += 1
        return self._count - 1


class CardVideoTrack(_Paced):
    kind = "video"

    def __init__(self, card: TestCard, fps: int, first_frame: int = 0) -> None:
        super().__init__(1.0 / fps)
        self.card = card
        self.fps = fps
        self.first_frame = first_frame

    async def recv(self) -> av.VideoFrame:
        n = await self._next()
        frame = self.card.video_frame(self.first_frame + n, time.time())
        frame.pts = n * 90_000 // self.fps
        frame.time_base = VIDEO_TIME_BASE
        return frame


class ToneAudioTrack(_Paced):
    kind = "audio"

    def __init__(self, card: TestCard) -> None:
        super().__init__(AUDIO_FRAME_SAMPLES / SAMPLE_RATE)
        self.card = card

    async def recv(self) -> av.AudioFrame:
        n = await self._next()
        samples = self.card.tone(n * AUDIO_FRAME_SAMPLES, AUDIO_FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = n * AUDIO_FRAME_SAMPLES
        frame.time_base = AUDIO_TIME_BASE
        return frame


def encode_loop(card: TestCard, fps: int, seconds: float = LOOP_SECONDS) -> list[bytes]:
    """The card encoded once as Annex-B H.264 access units, a keyframe every second."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = card.width, card.height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = LOOP_BITRATE
    codec.framerate = fractions.Fraction(fps, 1)
    codec.time_base = fractions.Fraction(1, fps)
    codec.profile = "Baseline"
    # Baseline, no B-frames, SPS/PPS in-band before every keyframe: what WebRTC receivers expect.
    codec.options = {"tune": "zerolatency", "preset": "veryfast", "g": str(fps), "level": "31"}
    units: list[bytes] = []
    start = time.time()
    count = int(seconds * fps)
    for n in range(count):
        frame = card.video_frame(n, start + n / fps)
        frame.pts = n
        units.extend(bytes(p) for p in codec.encode(frame))
    units.extend(bytes(p) for p in codec.encode(None))
    return units


def encode_tone_loop(card: TestCard, seconds: float = LOOP_SECONDS) -> list[bytes]:
    """The card's tone encoded once as 20 ms Opus packets (stereo, as aiortc's encoder sends).

    The tone repeats exactly every loop (whole cycles: its frequency is a multiple of 50 Hz), so
    the encoder runs through the loop twice and the second pass is kept: its first packet was
    encoded after the loop's own end, and replaying the packets splices without a click.
    """
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = TONE_BITRATE
    codec.format = "s16"
    codec.layout = "stereo"
    codec.sample_rate = SAMPLE_RATE
    codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
    count = int(seconds * SAMPLE_RATE) // AUDIO_FRAME_SAMPLES
    packets: list[bytes] = []
    for n in range(2 * count):
        mono = card.tone((n % count) * AUDIO_FRAME_SAMPLES, AUDIO_FRAME_SAMPLES)
        stereo = np.repeat(mono, 2).reshape(1, -1)  # packed: left, right, left, ...
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = n * AUDIO_FRAME_SAMPLES
        packets.extend(bytes(p) for p in codec.encode(frame))
    return packets[-count:]


class ToneLoopTrack(_Paced):
    """Replays pre-encoded 20 ms Opus packets as `av.Packet`s."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__(AUDIO_FRAME_SAMPLES / SAMPLE_RATE)
        if not packets:
            raise ValueError("nothing to replay")
        self.packets = packets

    async def recv(self) -> av.Packet:
        n = await self._next()
        packet = av.Packet(self.packets[n % len(self.packets)])
        packet.pts = n * AUDIO_FRAME_SAMPLES
        packet.time_base = AUDIO_TIME_BASE
        return packet


class PacketLoopTrack(_Paced):
    """Replays pre-encoded H.264 access units as `av.Packet`s (negotiate H.264 only)."""

    kind = "video"

    def __init__(self, units: list[bytes], fps: int) -> None:
        super().__init__(1.0 / fps)
        if not units:
            raise ValueError("nothing to replay")
        self.units = units
        self.fps = fps

    async def recv(self) -> av.Packet:
        n = await self._next()
        packet = av.Packet(self.units[n % len(self.units)])
        packet.pts = n * 90_000 // self.fps
        packet.time_base = VIDEO_TIME_BASE
        return packet


@dataclass(frozen=True)
class CardLoop:
    """A card's picture and tone encoded once; `tracks()` makes a fresh pair replaying them."""

    units: list[bytes]
    tone: list[bytes]
    fps: int

    @classmethod
    def encode(cls, card: TestCard, fps: int) -> CardLoop:
        return cls(encode_loop(card, fps), encode_tone_loop(card), fps)

    def tracks(self) -> list[MediaStreamTrack]:
        return [PacketLoopTrack(self.units, self.fps), ToneLoopTrack(self.tone)]
