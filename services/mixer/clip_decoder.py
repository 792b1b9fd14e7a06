"""A clip decoded ahead of the frame clock: one thread, a bounded queue, seeks to the exact frame.

The thread reads the file with PyAV and leaves in the queue pictures already at the production's
size (libswscale) and sound already at the production's rate and layout (libswresample); the
frame clock only takes from the queue. Times are on the decoder's *timeline*: seconds from the
position of the last seek, laps adding up, so a clip that starts again at its end is one
uninterrupted run of frames with a `LapEnd` between its laps. The thread always decodes on into
the next lap: a loop costs no stall, and a clip played again after its end starts from what is
already decoded.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
import structlog
from av.video.reformatter import ColorRange

from services.common.media import i420_views
from services.mixer.pictures import BLACK_YUV, Picture, blit

# Sound may run this far ahead of the queued pictures (files interleave their streams loosely);
# while no picture is queued, up to SOUND_CAP times as much, past which the oldest is dropped.
SOUND_SLACK_S = 2.0
SOUND_CAP = 4
# Read errors in a row after which the rest of a file is taken as missing.
MAX_READ_ERRORS = 25
# Seeks that land after their target are retried from this much earlier, a few times.
SEEK_BACKOFF_S = 2
SEEK_RETRIES = 3
LAYOUTS = {1: "mono", 2: "stereo"}
# A full queue is filled again once this many pictures fit (see `ClipDecoder._wait`).
REFILL_FRAMES = 8
# One thread a clip: a second of frames ahead leaves it time enough, and FFmpeg's own threads
# (one a core) would take the cores from the frame clock's thread at every frame (measured: the
# clock's wake-ups late by 4 ms in the 99th percentile on two cores, under 1 ms with one thread).
DECODER_THREADS = 1
# Streams without an index, whose seeks by time land near their target but may land after it:
# their start is found exactly at the first byte.
BYTE_SEEK_TO_START = frozenset({"mpegts", "mpeg"})

log = structlog.get_logger("mixer.clip_decoder")


class Framer:
    """Turns decoded frames into I420 pictures of one size, letterboxed to keep their aspect."""

    def __init__(self, width: int, height: int, sample_aspect: Fraction | None = None) -> None:
        self.width, self.height = width, height
        self.sample_aspect = sample_aspect or Fraction(1)
        self._box: tuple[int, int, int, int] | None = None

    def picture(self, frame: av.VideoFrame) -> Picture:
        x, y0, width, height = self._box or self._fit(frame)
        # RGB (a PNG) and full-range YUV (a JPEG) are converted to what the chain assumes; other
        # YUV is only scaled, as its matrix is unknown as often as not
        convert = (
            frame.format.is_rgb
            or frame.format.name.startswith("yuvj")
            or frame.color_range == ColorRange.JPEG
        )
        out = frame.reformat(
            width=width,
            height=height,
            format="yuv420p",
            dst_colorspace="ITU709" if convert else None,
            dst_color_range="MPEG" if convert else None,
            threads=1,
        )
        # views of the frame's own planes (which they keep alive): no copy of a full picture
        y, u, v = i420_views(out)
        fitted = Picture.from_planes(width, height, y, u, v)
        if (width, height) == (self.width, self.height):
            return fitted
        picture = Picture.solid(self.width, self.height, BLACK_YUV)
        blit(picture, fitted, x, y0, width, height)
        return picture

    def _fit(self, frame: av.VideoFrame) -> tuple[int, int, int, int]:
        """The even-aligned box of the largest picture of the frame's aspect that fits."""
        aspect = Fraction(frame.width, frame.height) * self.sample_aspect
        target = Fraction(self.width, self.height)
        width, height = self.width, self.height
        if abs(aspect / target - 1) > Fraction(1, 100):  # a closer match is filled, not boxed
            if aspect > target:
                height = max(2, round(self.width / aspect / 2) * 2)
            else:
                width = max(2, round(self.height * aspect / 2) * 2)
        self._box = ((self.width - width) // 4 * 2, (self.height - height) // 4 * 2, width, height)
        return self._box


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    time: Fraction  # on the decoder's timeline, seconds
    end: Fraction  # when the next frame is due
    picture: Picture


@dataclass(frozen=True, slots=True)
class LapEnd:
    time: Fraction


@dataclass(frozen=True, slots=True)
class Step:
    """What the queue holds at a time: the newest frame due (None: none new since the last
    step), the end of the current lap if it is known, and whether nothing later is decoded."""

    frame: DecodedFrame | None
    lap_end: Fraction | None
    starved: bool


class ClipDecoder:
    """Decodes one opened clip in a thread; the frame clock takes from it without waiting."""

    def __init__(
        self,
        container: av.container.InputContainer,
        framer: Framer,
        fps: int,
        sample_rate: int,
        channels: int,
        ahead_s: float,
    ) -> None:
        if channels not in LAYOUTS:
            raise ValueError(f"clips play in mono or stereo, not {channels} channels")
        self._container = container
        self._video = container.streams.video[0] if container.streams.video else None
        self._audio = container.streams.audio[0] if container.streams.audio else None
        main = self._video or self._audio
        if main is None:
            raise ValueError("no video or audio stream")
        if self._video is not None:
            self._video.codec_context.thread_count = DECODER_THREADS
        self._main = main
        self.sample_rate, self.channels = sample_rate, channels
        self._clock = _LapClock(
            framer=framer,
            origin=_seconds(main.start_time or 0, main.time_base),
            frame_length=1 / self._video.average_rate
            if self._video is not None and self._video.average_rate
            else Fraction(1, fps),
            sample_rate=sample_rate,
            layout=LAYOUTS[channels],
            sound_only=self._video is None,
        )
        self._max_frames = max(2, round(ahead_s * fps))
        self._max_samples = round((ahead_s + SOUND_SLACK_S) * sample_rate)
        self._cond = threading.Condition()
        self._frames: deque[DecodedFrame | LapEnd] = deque()
        self._lap_ends: deque[Fraction] = deque()  # the times of the LapEnds in `_frames`
        self._sound: deque[tuple[int, np.ndarray]] = deque()  # (first sample, samples)
        self._sound_samples = 0
        self._generation = 0
        self._seek_to: Fraction | None = Fraction(0)
        self._settled = False
        self._closing = False
        self._fresh = True  # nothing read yet: no need to seek to the start
        self._room = 1  # pictures the thread waits to have room for (more while it rests)
        self.error = ""
        self.lap_length: Fraction | None = None  # exact once a whole lap is decoded
        self._thread = threading.Thread(target=self._run, name="clip-decoder", daemon=True)

    # -- the frame clock's side ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stops the thread and closes the file (blocks up to one frame's decoding)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        self._container.close()

    @property
    def settled(self) -> bool:
        """Whether the first frame since the last seek is decoded (or the thread gave up)."""
        return self._settled or bool(self.error)

    @property
    def primed(self) -> bool:
        """Whether the decoder is as far ahead as it goes (resting, its queue full but for less
        than a refill) or stopped."""
        with self._cond:
            if self.error or not self._thread.is_alive():
                return True
            return self._settled and self._full(self._room)

    def seek(self, position: Fraction) -> None:
        """Drops what is queued and decodes from `position`, which becomes time `position`."""
        with self._cond:
            self._reset(position)

    def step(self, time: Fraction) -> Step:
        """Takes the frames due at `time`, stopping at the end of the lap."""
        newest: DecodedFrame | None = None
        with self._cond:
            frames = self._frames
            while frames and isinstance(head := frames[0], DecodedFrame) and head.time <= time:
                newest = head
                frames.popleft()
            lap_end = self._lap_ends[0] if self._lap_ends else None
            if newest is not None:
                self._cond.notify_all()
            if not self._clock.sound_only:
                return Step(newest, lap_end, not frames)
            sound = self._sound  # without pictures, the decoder is behind when its sound is
            decoded = sound[-1][0] + len(sound[-1][1]) if sound else 0
            return Step(None, lap_end, decoded <= time * self.sample_rate)

    def next_lap(self) -> Fraction | None:
        """Passes the end of the lap at the head of the queue: the time the next lap starts."""
        with self._cond:
            if not self._frames or not isinstance(self._frames[0], LapEnd):
                return None
            self._frames.popleft()
            return self._lap_ends.popleft()

    def sound(self, start: int, stop: int, limit: int | None = None) -> np.ndarray:
        """Samples `start` to `stop` of the timeline, silent where nothing is decoded and from
        `limit` on; the samples before `stop` are used up."""
        out = np.zeros((stop - start, self.channels), dtype=np.int16)
        end = stop if limit is None else max(start, min(stop, limit))
        with self._cond:
            chunks = self._sound
            for first, samples in chunks:
                if first >= end:
                    break
                a, b = max(first, start), min(first + len(samples), end)
                if a < b:
                    out[a - start : b - start] = samples[a - first : b - first]
            while chunks and chunks[0][0] + len(chunks[0][1]) <= stop:
                self._sound_samples -= len(chunks.popleft()[1])
            self._cond.notify_all()
        return out

    # -- the thread --------------------------------------------------------------------------

    def _reset(self, position: Fraction) -> None:
        self._generation += 1
        self._frames.clear()
        self._lap_ends.clear()
        self._sound.clear()
        self._sound_samples = 0
        self._seek_to = position
        self._settled = False
        self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._decode()
        except Exception as exc:  # a clip that breaks its decoder fails alone, and says so
            log.exception("clip_decoder_failed", file=self._container.name)
            with self._cond:
                self.error = f"decoding failed: {exc}"

    def _wait(self) -> tuple[Fraction | None, int] | None:
        """Waits for room in the queue or for a seek: (the seek's target or None, generation);
        None when closing."""
        with self._cond:
            # once full, decode again only when a batch of frames fits: frames decoded back to
            # back find the decoder's code and tables still in the caches
            if self._full():
                self._room = max(1, min(REFILL_FRAMES, self._max_frames // 2))
            while not self._closing and self._seek_to is None and self._full(self._room):
                self._cond.wait()
            self._room = 1
            if self._closing:
                return None
            target, self._seek_to = self._seek_to, None
            return target, self._generation

    def _full(self, room: int = 1) -> bool:
        """No room for `room` more pictures, or the sound as far ahead as it goes."""
        frames = len(self._frames) - len(self._lap_ends)
        if frames > self._max_frames - room:
            return True
        # sound waits only once there are pictures: a file that stores its sound far ahead of
        # its pictures must not stop the decoder short of the picture the clock waits for
        return self._sound_samples >= self._max_samples and (frames > 0 or self._clock.sound_only)

    def _decode(self) -> None:
        lap: _Lap | None = None
        packets: Iterator[av.Packet] = iter(())
        read_errors = retries = 0
        while (waited := self._wait()) is not None:
            target, generation = waited
            if target is not None:  # a seek: a new timeline, at `target`
                retries = retries + 1 if lap is not None and lap.retry_of == generation else 0
                self._rewind(max(Fraction(0), target - retries * SEEK_BACKOFF_S))
                lap = _Lap(self._clock, generation, Fraction(0), target)
                packets = self._demux()
                continue
            if lap is None or lap.generation != generation:
                continue
            try:
                packet = next(packets, None)
                read_errors = 0
            except av.FFmpegError as exc:  # a damaged stretch of file: read on past it
                read_errors += 1
                log.warning("clip_read_error", error=str(exc))
                packets = iter(()) if read_errors > MAX_READ_ERRORS else self._demux()
                continue
            if packet is not None:
                for item in lap.feed(packet):
                    self._push(generation, item)
            else:  # the end of the file
                for item in lap.finish():
                    self._push(generation, item)
                if lap.end == lap.start and lap.target and retries < SEEK_RETRIES:
                    lap.landed_late = True  # the seek landed after the last keyframe
                elif not self._end_lap(lap):
                    return
                else:
                    self._rewind(Fraction(0))
                    lap = _Lap(self._clock, generation, lap.end, None)
                    packets = self._demux()
                    continue
            if lap.landed_late and lap.target is not None and retries < SEEK_RETRIES:
                with self._cond:  # the seek landed after its target: again, from earlier
                    if self._generation == generation and self._seek_to is None:
                        self._reset(lap.target)
                        lap.retry_of = self._generation

    def _demux(self) -> Iterator[av.Packet]:
        return self._container.demux(*[s for s in (self._video, self._audio) if s is not None])

    def _rewind(self, position: Fraction) -> None:
        if self._fresh and position == 0:
            return
        self._fresh = False
        if position == 0 and self._container.format.name in BYTE_SEEK_TO_START:
            self._container.seek(0, unsupported_byte_offset=True)
            return
        offset = (self._clock.origin + position) / (self._main.time_base or 1)
        self._container.seek(math.floor(offset), stream=self._main)

    def _end_lap(self, lap: _Lap) -> bool:
        """Closes a lap at the end of the file; False when there was nothing in it to play."""
        self._fresh = False
        if lap.end == lap.start:
            with self._cond:
                self.error = self.error or "nothing decodable in the file"
            return False
        with self._cond:
            if lap.generation != self._generation:
                return True
            self.lap_length = lap.end - lap.start
            limit = round(lap.end * self.sample_rate)
            while self._sound and self._sound[-1][0] >= limit:  # sound longer than pictures
                self._sound_samples -= len(self._sound.pop()[1])
            if self._sound and (extra := self._sound[-1][0] + len(self._sound[-1][1]) - limit) > 0:
                first, samples = self._sound.pop()
                self._sound.append((first, samples[:-extra]))
                self._sound_samples -= extra
            self._frames.append(LapEnd(lap.end))
            self._lap_ends.append(lap.end)
            self._settled = True
        return True

    def _push(self, generation: int, item: DecodedFrame | tuple[int, np.ndarray]) -> None:
        with self._cond:
            if generation != self._generation:
                return
            if isinstance(item, DecodedFrame):
                self._frames.append(item)
                self._settled = True
            else:
                self._sound.append(item)
                self._sound_samples += len(item[1])
                self._settled |= self._clock.sound_only
                while self._sound_samples > SOUND_CAP * self._max_samples:  # no pictures at all
                    self._sound_samples -= len(self._sound.popleft()[1])


@dataclass(frozen=True, slots=True)
class _LapClock:
    """What every lap of one clip shares."""

    framer: Framer
    origin: Fraction  # the file's time of the clip's start
    frame_length: Fraction  # for frames that do not say how long they last
    sample_rate: int
    layout: str
    sound_only: bool


class _Lap:
    """One run through the file from a seek or from its start: frames and sound on the timeline."""

    def __init__(
        self, clock: _LapClock, generation: int, start: Fraction, target: Fraction | None
    ) -> None:
        self.clock, self.generation, self.start, self.target = clock, generation, start, target
        self.end = start  # of the last frame (or sound) decoded
        self.landed_late = False  # the first frame after a seek came after its target
        self.retry_of = -1  # the generation of the seek retrying this one
        self._pending: tuple[av.VideoFrame, Fraction, Fraction] | None = None
        self._skip_until = round((target or Fraction(0)) * clock.sample_rate)
        self._next_sample: int | None = None
        self._resampler = av.AudioResampler(
            format="s16", layout=clock.layout, rate=clock.sample_rate
        )

    def feed(self, packet: av.Packet) -> list[DecodedFrame | tuple[int, np.ndarray]]:
        try:
            frames = packet.decode()
        except av.FFmpegError as exc:  # a damaged frame is skipped
            log.debug("clip_frame_skipped", error=str(exc))
            return []
        out: list[DecodedFrame | tuple[int, np.ndarray]] = []
        for frame in frames:
            if isinstance(frame, av.VideoFrame):
                out.extend(self._picture(frame))
            elif isinstance(frame, av.AudioFrame):
                out.extend(self._sound(frame))
        return out

    def finish(self) -> list[DecodedFrame | tuple[int, np.ndarray]]:
        """What is left at the end of the file: the resampler's tail, a frame held for a seek."""
        out: list[DecodedFrame | tuple[int, np.ndarray]] = []
        out.extend(self._sound(None))
        if self._pending is not None:  # a seek to the very end shows the last frame
            frame, time, end = self._pending
            out.append(DecodedFrame(time, end, self.clock.framer.picture(frame)))
            self._pending = None
        return out

    def _picture(self, frame: av.VideoFrame) -> list[DecodedFrame]:
        time = self.end if frame.pts is None else self._time(_seconds(frame.pts, frame.time_base))
        if frame.duration and frame.time_base:
            end = time + _seconds(frame.duration, frame.time_base)
        else:
            end = time + self.clock.frame_length
        first = self.end == self.start
        self.end = max(self.end, end)
        if self.target is not None and time <= self.target:  # before a seek's target: hold
            self._pending = (frame, time, end)  # the newest, shown if the next comes after it
            return []
        out = []
        if self._pending is not None:
            held, held_time, held_end = self._pending
            out.append(DecodedFrame(held_time, held_end, self.clock.framer.picture(held)))
            self._pending = None
        elif first and self.target:
            self.landed_late = True
        out.append(DecodedFrame(time, end, self.clock.framer.picture(frame)))
        return out

    def _sound(self, frame: av.AudioFrame | None) -> list[tuple[int, np.ndarray]]:
        """Resamples a frame (None: what the resampler holds) into chunks on the timeline."""
        chunks = []
        rate = self.clock.sample_rate
        for out in self._resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1, len(out.layout.channels))
            if out.pts is not None and out.time_base:
                first = round(self._time(_seconds(out.pts, out.time_base)) * rate)
            elif self._next_sample is not None:
                first = self._next_sample
            else:
                first = round(self.start * rate)
            self._next_sample = first + len(samples)
            if self.clock.sound_only:
                self.end = max(self.end, Fraction(self._next_sample, rate))
            if first < self._skip_until:  # before a seek's target
                samples = samples[self._skip_until - first :]
                first = self._skip_until
            if len(samples):
                chunks.append((first, samples))
        return chunks

    def _time(self, seconds: Fraction) -> Fraction:
        return self.start + seconds - self.clock.origin


def _seconds(ticks: int, time_base: Fraction | None) -> Fraction:
    return ticks * (time_base or Fraction(1))
