"""Live encodings for the exchange: each distinct picture and each distinct sound encoded once.

A WHEP viewer or an SRT return asks for a picture (a handle such as `prod/qihang/program` at a
size) and a sound (`prod/qihang/mixminus/gz`, say). `LiveEncodings` keeps one `VideoEncoding`
per (handle, size, rate) and one `AudioEncoding` per (handle, codec), each subscribed once on
the media plane, and each fans its packets out to every receiver: twelve returns of one program
cost one H.264 encode and twelve Opus encodes. An encoding nobody receives for `linger_s` stops.

Video is H.264 Constrained Baseline (what every WebRTC browser decodes), no B-frames, a keyframe
every `keyframe_interval_s` and on request (a new viewer, a viewer's PLI/FIR, a viewer that
overflowed), at most one requested keyframe per `MIN_KEYFRAME_GAP_S`: a request within the gap
waits for its end rather than being dropped, since the viewer who asked has nothing to show
until a keyframe comes, and any keyframe (requested or not) answers every request made before
it. x264 runs in a thread of its own (PyAV releases the GIL); the newest picture wins when it
falls behind. On the producer's host an encoding is told the picture's ring once and takes the
newest picture at each tick of its rate (ADR 0024); from elsewhere pictures come by message.
Opus and AAC are encoded on the event loop: a 20 ms Opus frame costs tens of microseconds. On
the producer's host the sound comes through its ring, every encoding's read by one look of the
process every `SOUND_LOOK_S` (ADR 0029); from elsewhere by message.

Timestamps follow the producer's clock, rebased so they only increase: a producer that restarts
(its clock jumps) continues where the last frame left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import structlog

from services.common.frame_clock import FrameClock
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import PulledVideo, proto_to_av_i420, proto_to_pcm
from services.common.sound_ring import PulledSound, SoundChunk
from services.common.tasks import cancel_and_wait
from services.distribution.packet_fanout import Fanout

VIDEO_TIME_BASE = Fraction(1, 90_000)
SAMPLE_RATE = 48_000
CHANNELS = 2
MIN_KEYFRAME_GAP_S = 0.5
MAX_PTS_JUMP_US = 2_000_000
DEFAULT_LINGER_S = 5.0
MIN_VIDEO_KBPS = 300
# 40 ms Opus frames: the mixer mixes 40 ms at each tick of a 25 fps show, so a 20 ms frame would
# wait for its second half anyway; one encode and one packet per tick halves the encoder's and
# every viewer's per-packet work, for no added delay (a 30 fps tick's 33 ms waits ~7 ms more).
OPUS_FRAME_SAMPLES = 1920
# libopus's complexity: 5 costs ~20 % less than its default 10, inaudibly for programme sound
# and speech at 64 kbit/s.
OPUS_COMPLEXITY = 5
AAC_FRAME_SAMPLES = 1024
# How often the live sound encodings' rings are looked at (ADR 0029): the most a return's sound
# waits on the mixer's host.
SOUND_LOOK_S = 0.01

log = structlog.get_logger("distribution.live_encoding")

FrameSource = Callable[[str, media_pb2.Rendition], AsyncIterator[media_pb2.MediaFrame]]


@dataclass(frozen=True)
class VideoKey:
    handle: str  # prod/<prod>/program|clean|multiview, source/<id>
    width: int
    height: int
    fps: int

    def describe(self) -> str:
        return f"{self.width}x{self.height}@{self.fps} h264"


@dataclass(frozen=True)
class AudioKey:
    handle: str  # prod/<prod>/program, prod/<prod>/mixminus/<station>, source/<id>
    codec: str  # "opus" or "aac"
    channels: int = CHANNELS  # 1 for a station's return (foldback is mono), else 2


class PtsRebaser:
    """The producer's microsecond timestamps as strictly increasing ticks of `time_base`."""

    def __init__(self, time_base: Fraction, step_us: int) -> None:
        self.ticks_per_us = 1 / (time_base * 1_000_000)
        self.step_us = step_us
        self._offset_us: int | None = None
        self._last_us = 0

    def __call__(self, pts_us: int) -> int:
        if self._offset_us is None:
            self._offset_us = -pts_us  # the first timestamp is 0
        local = pts_us + self._offset_us
        if self._last_us and not 0 < local - self._last_us <= MAX_PTS_JUMP_US:
            # The producer's clock went back or leapt (a restart, another source): carry on
            # one step after the last timestamp.
            self._offset_us = self._last_us + self.step_us - pts_us
            local = self._last_us + self.step_us
        self._last_us = local
        return int(local * self.ticks_per_us)


class VideoEncoding:
    """One picture handle at one size, encoded once for every receiver."""

    def __init__(
        self,
        key: VideoKey,
        frames: FrameSource,
        *,
        kbps: int,
        keyframe_interval_s: float,
        preset: str = "veryfast",
    ) -> None:
        self.key = key
        self.fanout = Fanout()
        self.kbps = kbps
        self.keyframe_interval_s = keyframe_interval_s
        self.preset = preset
        self.frames_encoded = 0
        self.keyframes_requested = 0  # calls of request_keyframe
        self.keyframes_forced = 0  # keyframes made because of them
        self.keyframes_encoded = 0  # every keyframe, the regular ones too
        self.idle_since = time.monotonic()
        self._frames = frames
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._pending: tuple[av.VideoFrame, int] | None = None  # newest picture, its pts
        self._stop = False
        self._want_keyframe = False
        self._last_forced_keyframe = -MIN_KEYFRAME_GAP_S
        self._rebase = PtsRebaser(VIDEO_TIME_BASE, 1_000_000 // key.fps)
        self._ring = PulledVideo()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._encode_loop, name=f"live-{self.key.handle}", daemon=True
        )
        self._thread.start()
        self._task = asyncio.create_task(self._subscribe(), name=f"live-{self.key.handle}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
        self.fanout.close()

    def request_keyframe(self) -> None:
        """A keyframe soon: the next picture, or the first one `MIN_KEYFRAME_GAP_S` after the
        last forced keyframe."""
        self.keyframes_requested += 1
        with self._cond:
            self._want_keyframe = True

    async def _subscribe(self) -> None:
        rendition = media_pb2.Rendition(
            width=self.key.width,
            height=self.key.height,
            pixel_format=media_pb2.PIXEL_FORMAT_I420,
            fps=self.key.fps,
            no_audio=True,
        )
        puller = asyncio.create_task(self._pull(), name=f"pull-{self.key.handle}")
        try:
            async for message in self._frames(self.key.handle, rendition):
                body = message.WhichOneof("body")
                if body == "ring":
                    self._ring.follow(message.ring.segment)
                elif body == "video":
                    self._ring.follow("")  # pictures by message: the producer is elsewhere
                    self._take(message.video)
        finally:
            await cancel_and_wait([puller])

    async def _pull(self) -> None:
        """On the producer's host: the newest picture of its ring at each tick of the
        encoding's rate (ADR 0024), none while pictures come by message."""
        async for _tick in FrameClock(self.key.fps).ticks():
            try:
                video = self._ring.take()
            except ValueError:  # its slot is being rewritten, or the ring ended
                continue
            if video is not None:
                self._take(video)

    def _take(self, video: media_pb2.VideoFrame) -> None:
        if (video.width, video.height) != (self.key.width, self.key.height):
            return
        try:
            # Read now (a shared slot is reused soon), straight into the encoder's frame.
            picture = proto_to_av_i420(video)
        except ValueError:  # malformed, or its shared slot already reused: skip it
            return
        with self._cond:
            self._pending = (picture, video.pts_us)
            self._cond.notify()

    def _open_encoder(self) -> av.VideoCodecContext:
        gop = max(1, round(self.keyframe_interval_s * self.key.fps))
        codec = av.CodecContext.create("libx264", "w")
        assert isinstance(codec, av.VideoCodecContext)
        codec.width, codec.height = self.key.width, self.key.height
        codec.pix_fmt = "yuv420p"
        codec.time_base = VIDEO_TIME_BASE
        codec.framerate = Fraction(self.key.fps, 1)
        codec.bit_rate = self.kbps * 1000
        codec.options = {
            "preset": self.preset,
            "tune": "zerolatency",
            "profile": "baseline",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
            "maxrate": f"{self.kbps}k",
            "bufsize": f"{self.kbps}k",
            # A requested I picture becomes an IDR, so a new viewer can start on it.
            "forced-idr": "1",
        }
        codec.thread_count = 1
        codec.open()
        return codec

    def _encode_loop(self) -> None:
        codec = self._open_encoder()
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                assert self._pending is not None
                frame, pts_us = self._pending
                self._pending = None
                now = time.monotonic()
                keyframe = (
                    self._want_keyframe and now - self._last_forced_keyframe >= MIN_KEYFRAME_GAP_S
                )
                if keyframe:
                    self._last_forced_keyframe = now
                    self.keyframes_forced += 1
            frame.pts = self._rebase(pts_us)
            frame.time_base = VIDEO_TIME_BASE
            if keyframe:
                frame.pict_type = av.video.frame.PictureType.I
            try:
                packets = codec.encode(frame)
            except av.FFmpegError:
                log.exception("live_encode_failed", handle=self.key.handle)
                continue
            self.frames_encoded += 1
            for packet in packets:
                packet.time_base = VIDEO_TIME_BASE
                if packet.is_keyframe:
                    self.keyframes_encoded += 1
                    # Handed over after this, so it reaches everyone who asked before now.
                    with self._cond:
                        self._want_keyframe = False
                self._hand_over(packet)

    def _hand_over(self, packet: av.Packet) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self.fanout.publish, packet)


def open_audio_encoder(codec_name: str, layout: str, kbps: int) -> tuple[av.AudioCodecContext, int]:
    """An open encoder of "opus" or "aac" sound as every live encoding makes it, and the
    samples of each of its frames."""
    name, samples = (
        ("libopus", OPUS_FRAME_SAMPLES) if codec_name == "opus" else ("aac", AAC_FRAME_SAMPLES)
    )
    codec = av.CodecContext.create(name, "w")
    assert isinstance(codec, av.AudioCodecContext)
    codec.sample_rate = SAMPLE_RATE
    codec.layout = layout
    codec.format = "s16" if name == "libopus" else "fltp"
    codec.bit_rate = kbps * 1000
    codec.time_base = Fraction(1, SAMPLE_RATE)
    if name == "libopus":
        codec.options = {
            "application": "lowdelay",
            "frame_duration": str(OPUS_FRAME_SAMPLES * 1000 // SAMPLE_RATE),
            "compression_level": str(OPUS_COMPLEXITY),
        }
    codec.open()
    return codec, samples


class SoundLooks:
    """The process's one look at the sound rings of the live sound encodings (ADR 0029): every
    `interval_s`, each ring's chunks written since the look before go to their encoding. A
    return's sound waits at most `interval_s` for it (messages arrived at once; a look per
    encoding at the show's rate would delay a two-way conversation by up to a tick), for one
    wake-up for all of them instead of a message per 40 ms per return."""

    def __init__(self, interval_s: float = SOUND_LOOK_S) -> None:
        self.interval_s = interval_s
        self._readers: dict[PulledSound, Callable[[SoundChunk], None]] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._readers)

    def add(self, sound: PulledSound, deliver: Callable[[SoundChunk], None]) -> None:
        self._readers[sound] = deliver
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="sound-looks")

    def remove(self, sound: PulledSound) -> None:
        """Look no more at `sound` (the task ends with the last one)."""
        self._readers.pop(sound, None)

    async def close(self) -> None:
        self._readers.clear()
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _run(self) -> None:
        while self._readers:
            await asyncio.sleep(self.interval_s)
            for sound, deliver in list(self._readers.items()):
                chunks = sound.chunks()
                try:
                    for chunk in chunks:
                        deliver(chunk)
                except Exception:  # one encoding's failure must not silence the others
                    log.exception("live_sound_failed", segment=sound.segment)


class AudioEncoding:
    """One sound handle, encoded once (Opus for WebRTC, AAC for MPEG-TS) for every receiver."""

    def __init__(
        self, key: AudioKey, frames: FrameSource, *, kbps: int, looks: SoundLooks | None = None
    ) -> None:
        self.key = key
        self.fanout = Fanout()
        self.kbps = kbps
        self.idle_since = time.monotonic()
        self._frames = frames
        self._looks = looks if looks is not None else SoundLooks()
        self._task: asyncio.Task[None] | None = None
        self._samples = 0  # pts of the next encoded frame, in samples
        self.layout = "mono" if key.channels == 1 else "stereo"
        self._codec, self._frame_samples = open_audio_encoder(key.codec, self.layout, kbps)
        self._fifo = av.AudioFifo()
        self._resampler = (
            None
            if self._codec.format.name == "s16"
            else av.AudioResampler("fltp", self.layout, SAMPLE_RATE)
        )

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._run(), name=f"live-{self.key.handle}-{self.key.codec}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])
        self.fanout.close()

    async def _run(self) -> None:
        rendition = media_pb2.Rendition(
            no_video=True, audio_sample_rate=SAMPLE_RATE, audio_channels=self.key.channels
        )
        # On the mixer's host the sound is pulled from its ring (the look above), else messages.
        sound = PulledSound()
        try:
            async for message in self._frames(self.key.handle, rendition):
                body = message.WhichOneof("body")
                if body == "sound_ring":
                    sound.follow(message.sound_ring.segment, message.sound_ring.first)
                    self._looks.add(sound, self._take)
                elif body == "audio":
                    self._looks.remove(sound)
                    sound.follow("")
                    audio = message.audio
                    self._encode(proto_to_pcm(audio), audio.sample_rate)
        finally:
            self._looks.remove(sound)

    def _take(self, chunk: SoundChunk) -> None:
        self._encode(chunk.samples, chunk.sample_rate)

    def _encode(self, pcm: np.ndarray, sample_rate: int) -> None:
        if sample_rate != SAMPLE_RATE or pcm.shape[1] != self.key.channels:
            return
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout=self.layout)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = None
        self._fifo.write(frame)
        while self._fifo.samples >= self._frame_samples:
            chunk = self._fifo.read(self._frame_samples)
            if chunk is None:
                break
            chunk.pts = self._samples
            chunk.time_base = Fraction(1, SAMPLE_RATE)
            self._samples += self._frame_samples
            inputs = self._resampler.resample(chunk) if self._resampler is not None else [chunk]
            for item in inputs:
                for packet in self._codec.encode(item):
                    packet.time_base = Fraction(1, SAMPLE_RATE)
                    self.fanout.publish(packet)


class LiveEncodings:
    """The exchange's encodings, made on first use and stopped `linger_s` after their last
    receiver left (a viewer that reconnects finds its encoding still warm)."""

    def __init__(
        self,
        frames: FrameSource,
        *,
        video_kbps: int,
        audio_kbps: int,
        keyframe_interval_s: float,
        preset: str = "veryfast",
        linger_s: float = DEFAULT_LINGER_S,
    ) -> None:
        self._frames = frames
        self.video_kbps = video_kbps
        self.audio_kbps = audio_kbps
        self.keyframe_interval_s = keyframe_interval_s
        self.preset = preset
        self.linger_s = linger_s
        self.videos: dict[VideoKey, VideoEncoding] = {}
        self.audios: dict[AudioKey, AudioEncoding] = {}
        self.looks = SoundLooks()

    def kbps_for(self, key: VideoKey) -> int:
        """`video_kbps` is for 960×540: other sizes get it scaled by their area."""
        return max(MIN_VIDEO_KBPS, round(self.video_kbps * key.width * key.height / (960 * 540)))

    def video(self, key: VideoKey) -> VideoEncoding:
        encoding = self.videos.get(key)
        if encoding is None:
            encoding = VideoEncoding(
                key,
                self._frames,
                kbps=self.kbps_for(key),
                keyframe_interval_s=self.keyframe_interval_s,
                preset=self.preset,
            )
            encoding.start()
            self.videos[key] = encoding
            log.info("live_video_encoding_started", handle=key.handle, rendition=key.describe())
        return encoding

    def audio(self, key: AudioKey) -> AudioEncoding:
        encoding = self.audios.get(key)
        if encoding is None:
            encoding = AudioEncoding(key, self._frames, kbps=self.audio_kbps, looks=self.looks)
            encoding.start()
            self.audios[key] = encoding
            log.info(
                "live_audio_encoding_started",
                handle=key.handle,
                codec=key.codec,
                channels=key.channels,
            )
        return encoding

    async def reap(self) -> None:
        """Stop the encodings nobody has received for `linger_s`."""
        now = time.monotonic()
        idle: list[VideoEncoding | AudioEncoding] = []
        for video_key, video in list(self.videos.items()):
            if self._idle(video, now):
                idle.append(self.videos.pop(video_key))
        for audio_key, audio in list(self.audios.items()):
            if self._idle(audio, now):
                idle.append(self.audios.pop(audio_key))
        for encoding in idle:
            await encoding.stop()
            log.info("live_encoding_stopped", handle=encoding.key.handle)

    def _idle(self, encoding: VideoEncoding | AudioEncoding, now: float) -> bool:
        if len(encoding.fanout):
            encoding.idle_since = now
            return False
        return now - encoding.idle_since >= self.linger_s

    async def close(self) -> None:
        encodings: list[VideoEncoding | AudioEncoding] = [
            *self.videos.values(),
            *self.audios.values(),
        ]
        self.videos.clear()
        self.audios.clear()
        for encoding in encodings:
            await encoding.stop()
        await self.looks.close()
