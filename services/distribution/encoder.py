"""One encode per production: the program (or the slate) on the service's own clock.

The program arrives over the media plane with the producer's timestamps, which jump when the
mixer restarts or a source switches. The encoder never uses them: a clock ticks at the output
frame rate, and tick `n` is video pts `n` (time base 1/fps) and audio samples `n * 48000/fps`.
So timestamps only ever increase and audio and video stay in step by construction. Each tick
takes the newest program picture (held if none came; on the mixer's host read from the program's
ring at the tick, with no message per picture) and one tick of program audio from a small
FIFO (padded with silence when late, trimmed when it piles up); when the program has been silent
for `slate_after_s`, the slate and silence take its place and every output stays connected.

Encoding runs in a worker thread (PyAV releases the GIL); the packets go to `fan_out`, which hands
them to every output's own queue without ever waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
import structlog
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from services.common.frame_clock import FrameClock
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import PulledVideo, Scaler, proto_to_av_i420, proto_to_pcm
from services.common.sound_ring import PulledSound
from services.distribution import metrics
from services.distribution.packet_queue import EncodedPacket
from services.distribution.settings import FALLBACK_HEIGHT, FALLBACK_WIDTH, DistributionSettings
from services.distribution.slate import slate_i420

SAMPLE_RATE = 48_000
CHANNELS = 2
# Program audio waiting beyond this many ticks is trimmed back to AUDIO_TARGET_TICKS (latency cap).
AUDIO_MAX_TICKS = 10
AUDIO_TARGET_TICKS = 3
# Program audio arrives with jitter: hold this much before playing it (again after running dry),
# so a late chunk does not punch a hole of silence into the tone.
AUDIO_PRIME_TICKS = 3
# The encoder thread is this far behind the clock: later ticks encode audio only (pictures
# skipped, counted). On a busy machine x264 falls behind in bursts (a cut to busier pictures, a
# moment without the CPU) and catches up within a second: a second of backlog rides those out,
# the outputs' latency grows for that while, and the pictures stay whole.
MAX_ENCODER_BACKLOG_S = 1.0
# ... and past this many ticks (10 s at 25 fps) it is stuck: ticks are not even queued.
MAX_QUEUED_TICKS = 250
# The clock itself (the event loop) woke this late: its tick encodes audio only (past a second,
# the frame clock skips ticks: services/common/frame_clock.py).
MAX_CLOCK_LATE_S = 0.5
MIN_RUNG_KBPS = 200

log = structlog.get_logger("distribution.encoder")

FrameSource = Callable[[media_pb2.Rendition], AsyncIterator[media_pb2.MediaFrame]]


class _Discard(io.RawIOBase):
    """Where the template container writes: only its streams' codec parameters are wanted."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


class ProgramFeed:
    """The newest program picture and a FIFO of program audio, as the subscription fills them."""

    def __init__(self, samples_per_tick: int) -> None:
        self.samples_per_tick = samples_per_tick
        self.video: av.VideoFrame | None = None  # the newest program picture, yuv420p
        # On the mixer's host the pictures are pulled from the program's ring at every tick,
        # and the sound from its sound ring (every chunk since the tick before, ADR 0029).
        self.ring = PulledVideo()
        self.sound = PulledSound()
        self.first_picture = asyncio.Event()
        self.last_frame_at = -1e9
        self._audio: deque[np.ndarray] = deque()
        self._audio_samples = 0
        self._primed = False

    def push(self, frame: media_pb2.MediaFrame, now: float) -> None:
        body = frame.WhichOneof("body")
        if body == "ring":
            self.ring.follow(frame.ring.segment)
            self.pull(now)  # its first picture is there already
        elif body == "video":
            self.ring.follow("")  # pictures by message: the mixer is elsewhere
            self._hold(frame.video, now)
        elif body == "sound_ring":
            self.sound.follow(frame.sound_ring.segment, frame.sound_ring.first)
        elif body == "audio":
            self.sound.follow("")  # sound by message: the mixer is elsewhere
            self._add_sound(proto_to_pcm(frame.audio), frame.audio.sample_rate, now)

    def pull(self, now: float) -> None:
        """On the mixer's host: take the program's sound written since the last tick and its
        newest picture, if new, from their rings."""
        for chunk in self.sound.chunks():
            self._add_sound(chunk.samples, chunk.sample_rate, now)
        try:
            video = self.ring.take()
        except ValueError:  # its slot is being rewritten, or the ring ended: the last holds
            return
        if video is not None:
            self._hold(video, now)

    def _add_sound(self, pcm: np.ndarray, sample_rate: int, now: float) -> None:
        if sample_rate != SAMPLE_RATE or pcm.shape[1] != CHANNELS:
            return  # we asked for 48 kHz stereo; anything else is not ours to guess
        self._audio.append(pcm)
        self._audio_samples += pcm.shape[0]
        self.last_frame_at = now
        self._trim()

    def _hold(self, video: media_pb2.VideoFrame, now: float) -> None:
        try:
            # Read now (a shared-memory frame's slot is reused a few frames later), straight
            # into the frame the encoder takes; x264 copies its input, so the frame is
            # encoded again as it is while the program repeats it.
            self.video = proto_to_av_i420(video)
        except ValueError:  # malformed, or lost to a reused slot: the last picture holds
            return
        self.first_picture.set()
        self.last_frame_at = now

    def present(self, now: float, slate_after_s: float) -> bool:
        return now - self.last_frame_at < slate_after_s

    def clear(self) -> None:
        self.video = None
        self._audio.clear()
        self._audio_samples = 0
        self._primed = False

    def _trim(self) -> None:
        if self._audio_samples <= AUDIO_MAX_TICKS * self.samples_per_tick:
            return
        excess = self._audio_samples - AUDIO_TARGET_TICKS * self.samples_per_tick
        while excess > 0 and self._audio:
            head = self._audio[0]
            if head.shape[0] <= excess:
                self._audio.popleft()
                self._audio_samples -= head.shape[0]
                excess -= head.shape[0]
            else:
                self._audio[0] = head[excess:]
                self._audio_samples -= excess
                excess = 0

    def take_audio(self) -> tuple[np.ndarray, int]:
        """One tick of audio, shape (samples, 2) int16, and how many samples were silence."""
        out = np.zeros((self.samples_per_tick, CHANNELS), dtype=np.int16)
        if not self._primed:
            if self._audio_samples < AUDIO_PRIME_TICKS * self.samples_per_tick:
                return out, self.samples_per_tick
            self._primed = True
        filled = 0
        while filled < self.samples_per_tick and self._audio:
            head = self._audio[0]
            n = min(head.shape[0], self.samples_per_tick - filled)
            out[filled : filled + n] = head[:n]
            filled += n
            if n == head.shape[0]:
                self._audio.popleft()
            else:
                self._audio[0] = head[n:]
            self._audio_samples -= n
        if filled < self.samples_per_tick:
            self._primed = False
        return out, self.samples_per_tick - filled


@dataclass(frozen=True)
class Templates:
    """The encoder's streams, whose codec parameters every output copies."""

    video: VideoStream
    audio: AudioStream
    rungs: Mapping[int, VideoStream]  # HLS ladder renditions by height


@dataclass
class Rung:
    """One extra rendition of an HLS ladder: the same pictures, scaled, encoded again."""

    height: int
    width: int
    container: av.container.OutputContainer
    stream: VideoStream
    scaler: Scaler = field(default_factory=Scaler)


@dataclass(slots=True)
class Tick:
    index: int
    picture: av.VideoFrame | None  # None: the slate
    audio: np.ndarray
    encode_video: bool = True


class ProgramEncoder:
    """Subscribes a production's program and encodes it, on its own clock, for every output."""

    def __init__(
        self,
        production: str,
        settings: DistributionSettings,
        frames: FrameSource,
        fan_out: Callable[[EncodedPacket], None],
        ladder: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self.production = production
        self.settings = settings
        self.fps = settings.fps
        self.samples_per_tick = SAMPLE_RATE // settings.fps
        self.feed = ProgramFeed(self.samples_per_tick)
        self._frames = frames
        self._fan_out = fan_out
        self._ladder = ladder
        self.rungs: dict[int, Rung] = {}
        self.width = settings.width
        self.height = settings.height
        self._scaler = Scaler()  # pictures of another size (the encoder thread's only)
        self.video_stream: VideoStream | None = None
        self.audio_stream: AudioStream | None = None
        self.ready = threading.Event()  # set once the template streams exist
        self.ticks = 0
        self.frames_encoded = 0
        self.slate_frames = 0
        self._jobs: queue.Queue[Tick | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._template: av.container.OutputContainer | None = None
        self._labels = (production,)

    def templates(self) -> Templates | None:
        """The streams to copy, once the encoder is open (None before)."""
        if not self.ready.is_set():
            return None
        assert self.video_stream is not None and self.audio_stream is not None
        rungs = {height: rung.stream for height, rung in list(self.rungs.items())}
        return Templates(self.video_stream, self.audio_stream, rungs)

    # -- the asyncio side -------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe, open the encoder, tick until cancelled."""
        subscription = asyncio.create_task(self._subscribe(), name=f"program-{self.production}")
        try:
            await self._wait_for_size()
            self._open()
            self._thread = threading.Thread(
                target=self._encode_loop, name=f"encoder-{self.production}", daemon=True
            )
            self._thread.start()
            await self._clock()
        finally:
            subscription.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await subscription
            self._jobs.put(None)
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 5.0)
            metrics.PROGRAM_PRESENT.labels(*self._labels).set(0)

    async def _subscribe(self) -> None:
        rendition = media_pb2.Rendition(
            width=self.settings.width,
            height=self.settings.height,
            pixel_format=media_pb2.PIXEL_FORMAT_I420,
            fps=self.fps,
            audio_sample_rate=SAMPLE_RATE,
            audio_channels=CHANNELS,
        )
        loop = asyncio.get_running_loop()
        async for frame in self._frames(rendition):
            self.feed.push(frame, loop.time())

    def _skipped_ticks(self, ticks: int) -> None:
        """The clock fell more than a second behind (ADR 0023): those ticks are gone, pictures
        and sound; the outputs' timestamps jump over them."""
        metrics.SKIPPED_FRAMES.labels(*self._labels).inc(ticks)
        log.warning("clock_behind_ticks_skipped", production=self.production, skipped=ticks)

    async def _wait_for_size(self) -> None:
        """Give the program `slate_after_s` to show up, so a new encoder starts on it; its
        first picture also sets the size when the settings leave it open."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.feed.first_picture.wait(), self.settings.slate_after_s)
        if self.width and self.height:
            return
        if self.feed.video is not None:
            self.width, self.height = self.feed.video.width, self.feed.video.height
        else:
            self.width, self.height = FALLBACK_WIDTH, FALLBACK_HEIGHT

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        present_gauge = metrics.PROGRAM_PRESENT.labels(*self._labels)
        was_present: bool | None = None
        skipping = False
        max_backlog = round(MAX_ENCODER_BACKLOG_S * self.fps)
        clock = FrameClock(self.fps, on_skip=self._skipped_ticks, start_index=self.ticks)
        async for clock_tick in clock.ticks():
            now = loop.time()
            self.feed.pull(now)
            present = self.feed.present(now, self.settings.slate_after_s)
            if present != was_present:
                log.info(
                    "program_present" if present else "program_missing_slate_on",
                    production=self.production,
                )
                present_gauge.set(1 if present else 0)
                if not present:
                    self.feed.clear()
                was_present = present
            if present:
                audio, silent = self.feed.take_audio()
                if silent:
                    metrics.AUDIO_UNDERRUN_SAMPLES.labels(*self._labels).inc(silent)
                picture = self.feed.video
            else:
                audio = np.zeros((self.samples_per_tick, CHANNELS), dtype=np.int16)
                picture = None
            tick = Tick(clock_tick.index, picture, audio)
            self.ticks = clock.index
            backlog = self._jobs.qsize()
            late = clock_tick.late_s
            if backlog > max_backlog or late > MAX_CLOCK_LATE_S:
                # Behind the clock: keep the sound whole, let pictures go (counted).
                tick.encode_video = False
                metrics.SKIPPED_FRAMES.labels(*self._labels).inc()
                if not skipping:
                    log.warning(
                        "encoder_behind_skipping_pictures",
                        production=self.production,
                        backlog_ticks=backlog,
                        clock_late_ms=round(late * 1000),
                    )
                skipping = True
            elif skipping:
                log.info("encoder_caught_up", production=self.production)
                skipping = False
            if backlog > MAX_QUEUED_TICKS:
                continue  # the encoder is stuck: memory stays bounded, the gap is its own
            self._jobs.put(tick)

    # -- the encoder thread -------------------------------------------------------------------

    def _open(self) -> None:
        s = self.settings
        # An FLV container makes libx264 and AAC put their headers in extradata (global header),
        # which every output copies through add_stream_from_template.
        container = av.open(_Discard(), "w", format="flv")
        video = self._add_x264(container, self.width, self.height, s.video_bitrate_kbps)
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        audio.bit_rate = s.audio_bitrate_kbps * 1000
        container.start_encoding()
        self._template = container
        self.video_stream = video
        self.audio_stream = audio
        self.ready.set()
        log.info(
            "encoder_open",
            production=self.production,
            width=self.width,
            height=self.height,
            fps=self.fps,
            video_kbps=s.video_bitrate_kbps,
        )

    def _add_x264(
        self, container: av.container.OutputContainer, width: int, height: int, kbps: int
    ) -> VideoStream:
        s = self.settings
        gop = str(s.keyframe_interval_frames)
        # A fixed GOP without scene cuts: keyframes every keyframe_interval_s, at the same ticks
        # in every rendition, so HLS segments of a ladder line up.
        video = container.add_stream(
            "libx264",
            rate=self.fps,
            options={
                "preset": s.x264_preset,
                "tune": s.x264_tune,
                "g": gop,
                "keyint_min": gop,
                "sc_threshold": "0",
                "bf": "0",
            },
        )
        video.width = width
        video.height = height
        video.pix_fmt = "yuv420p"
        video.bit_rate = kbps * 1000
        video.codec_context.time_base = Fraction(1, self.fps)
        return video

    def _sync_rungs(self) -> None:
        """Open the ladder renditions asked for (smaller than the program), close the others."""
        wanted = {h for h in self._ladder() if h < self.height}
        rungs = dict(self.rungs)
        for height in set(rungs) - wanted:
            with contextlib.suppress(Exception):
                rungs.pop(height).container.close()
        for height in sorted(wanted - set(rungs)):
            width = max(2, round(height * self.width / self.height / 2) * 2)
            kbps = max(
                MIN_RUNG_KBPS, round(self.settings.video_bitrate_kbps * (height / self.height) ** 2)
            )
            container = av.open(_Discard(), "w", format="flv")
            stream = self._add_x264(container, width, height, kbps)
            container.start_encoding()
            rungs[height] = Rung(height, width, container, stream)
            log.info("ladder_rung_open", production=self.production, height=height, kbps=kbps)
        self.rungs = rungs  # replaced whole: output threads read it without a lock

    def _picture(self, tick: Tick) -> av.VideoFrame:
        frame = tick.picture
        if frame is None:
            image = slate_i420(self.width, self.height, self.settings.slate_text)
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            self.slate_frames += 1
            metrics.SLATE_FRAMES.labels(*self._labels).inc()
        if frame.width != self.width or frame.height != self.height:
            frame = self._scaler(frame, self.width, self.height)
        frame.pts = tick.index
        frame.time_base = Fraction(1, self.fps)
        return frame

    def _encode_loop(self) -> None:
        assert self.video_stream is not None and self.audio_stream is not None
        video, audio = self.video_stream, self.audio_stream
        encoded = metrics.ENCODED_FRAMES.labels(*self._labels)
        while True:
            tick = self._jobs.get()
            if tick is None:
                break
            try:
                self._sync_rungs()
                if tick.encode_video:
                    picture = self._picture(tick)
                    for packet in video.encode(picture):
                        self._emit(packet, True)
                    for rung in self.rungs.values():
                        scaled = rung.scaler(picture, rung.width, rung.height)
                        scaled.pts, scaled.time_base = picture.pts, picture.time_base
                        for packet in rung.stream.encode(scaled):
                            self._emit(packet, True, rung.height)
                    self.frames_encoded += 1
                    encoded.inc()
                sound = av.AudioFrame.from_ndarray(
                    tick.audio.reshape(1, -1), format="s16", layout="stereo"
                )
                sound.sample_rate = SAMPLE_RATE
                sound.pts = tick.index * self.samples_per_tick
                sound.time_base = Fraction(1, SAMPLE_RATE)
                for packet in audio.encode(sound):
                    self._emit(packet, False)
            except Exception:
                log.exception("encode_failed", production=self.production, tick=tick.index)
        for container in [self._template, *(r.container for r in self.rungs.values())]:
            if container is not None:
                with contextlib.suppress(Exception):
                    container.close()

    def _emit(self, packet: av.Packet, is_video: bool, rung: int = 0) -> None:
        if packet.pts is None or packet.time_base is None:
            return
        self._fan_out(
            EncodedPacket(
                video=is_video,
                data=bytes(packet),
                pts=packet.pts,
                dts=packet.dts if packet.dts is not None else packet.pts,
                keyframe=packet.is_keyframe,
                time_base=packet.time_base,
                rung=rung,
            )
        )
