"""Clips and stills played as sources of a production (docs/adr/0022-clips-and-stills.md).

A `Playout` is paced by the production's frame clock. Each tick moves a playing clip's position on
by one production frame and shows the clip's frame at that position, so a clip plays in real time
whatever its own rate, and a clip at the production's rate shows each of its frames once. Its
sound is cut to exactly the samples of that tick. The decoding runs ahead in a thread
(`clip_decoder`); the clock never waits for it: when it is behind, the picture repeats and
`late_frames` counts the tick.

A clip's position after a seek does not advance until the decoder has the frame to show there,
so a clip cued and rolled at once (the rundown does) goes on air from its first frame.
"""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.clip_decoder import ClipDecoder, DecodedFrame, Framer
from services.mixer.pictures import Picture

OPEN_TIMEOUT_S = 10.0
READY_POLL_S = 0.005

CUE = mixer_pb2.TRANSPORT_ACTION_CUE
PLAY = mixer_pb2.TRANSPORT_ACTION_PLAY
PAUSE = mixer_pb2.TRANSPORT_ACTION_PAUSE
STOP = mixer_pb2.TRANSPORT_ACTION_STOP
SEEK = mixer_pb2.TRANSPORT_ACTION_SEEK
ACTIONS = frozenset({CUE, PLAY, PAUSE, STOP, SEEK})
ENDS = frozenset(mixer_pb2.ClipEnd.values())

LOADING = mixer_pb2.CLIP_RUN_STATE_LOADING
CUED = mixer_pb2.CLIP_RUN_STATE_CUED
PLAYING = mixer_pb2.CLIP_RUN_STATE_PLAYING
PAUSED = mixer_pb2.CLIP_RUN_STATE_PAUSED
ENDED = mixer_pb2.CLIP_RUN_STATE_ENDED
FAILED = mixer_pb2.CLIP_RUN_STATE_FAILED


class Playout:
    """One clip or still of a production, decoded ahead of the frame clock and paced by it."""

    def __init__(
        self,
        source: str,
        path: Path,
        width: int,
        height: int,
        fps: int,
        *,
        sample_rate: int = 48_000,
        channels: int = 2,
        loop: bool = False,
        end: int = mixer_pb2.CLIP_END_HOLD,
        ahead_s: float = 1.0,
    ) -> None:
        self.source, self.path = source, path
        self.width, self.height, self.fps = width, height, fps
        self.sample_rate, self.channels, self.ahead_s = sample_rate, channels, ahead_s
        self._loop = loop
        self._end = _checked_end(end)
        self._run = LOADING
        self._error = ""
        self._decoder: ClipDecoder | None = None
        self._still: Picture | None = None
        self._duration = Fraction(0)
        self._time = Fraction(0)  # on the decoder's timeline
        self._lap_start = Fraction(0)  # the timeline's time of the clip's start in this lap
        self._frame_time = Fraction(1, fps)
        self._shown: DecodedFrame | None = None
        self._cued = True  # a paused clip is to show the frame at its position once decoded
        self._ended = False
        self.late_frames = 0  # ticks when the decoder had no frame ready

    # -- life --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Opens and probes the file and starts decoding: CUED at the start, showing the first
        frame; FAILED (with `error` in the state) when the file cannot be played."""
        try:
            await asyncio.to_thread(self._open)
        except Exception as exc:  # whatever the file holds, it fails this clip only
            self._fail(f"cannot open {self.path.name}: {exc}")
            return
        if self._decoder is not None:
            decoder = self._decoder
            decoder.start()
            try:
                await self.ready(OPEN_TIMEOUT_S)  # a second decoded ahead, or the first frame
            except asyncio.CancelledError:  # the clip left the production while opening
                await self.close()
                raise
            if decoder.error or not decoder.settled:
                self._fail(decoder.error or "no frame decoded in time")
                return
        self._run = CUED

    def _open(self) -> None:
        container = av.open(str(self.path), mode="r")
        try:
            video = container.streams.video[0] if container.streams.video else None
            framer = Framer(self.width, self.height, video.sample_aspect_ratio if video else None)
            if video is not None and _is_still(container):
                frame = next(container.decode(video), None)
                if frame is None:
                    raise ValueError("the image has no picture")
                self._still = framer.picture(frame)
                container.close()
                return
            self._decoder = ClipDecoder(
                container, framer, self.fps, self.sample_rate, self.channels, self.ahead_s
            )
            self._duration = _probed_duration(container)
        except BaseException:
            container.close()
            raise

    async def ready(self, timeout: float = OPEN_TIMEOUT_S) -> bool:
        """Waits until the decoder is as far ahead as it goes (after `open` or a transport: the
        frame at the clip's position is decoded); False when the clip failed or the decoder did
        not get there in time."""
        decoder = self._decoder
        if decoder is None:
            return self._still is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while not decoder.primed:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(READY_POLL_S)
        return self._run != FAILED and not decoder.error

    async def close(self) -> None:
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            await asyncio.to_thread(decoder.close)

    def _fail(self, error: str) -> None:
        self._run, self._error = FAILED, error

    # -- commands ----------------------------------------------------------------------------

    def transport(self, action: int, position_ms: int = 0) -> None:
        """Cue, play, pause, stop or seek (`TransportAction`); ValueError for an unknown action,
        a position outside the clip, or a clip that is loading or failed."""
        if action not in ACTIONS:
            raise ValueError(f"unknown transport action {action}")
        if action in (CUE, SEEK) and not 0 <= position_ms <= self._duration_ms():
            raise ValueError(f"position {position_ms} ms is outside {self.source}")
        if self._run in (LOADING, FAILED):
            raise ValueError(f"{self.source} is {'failed' if self._run == FAILED else 'loading'}")
        self._ended = False
        if self._still is not None:
            self._run = PLAYING if action == PLAY else CUED
            return
        at = Fraction(position_ms, 1000)
        if action == CUE:
            self._go_to(at)
            self._run = CUED
        elif action == PLAY:
            if self._run == ENDED:
                self._go_to(Fraction(0))
            self._run = PLAYING
        elif action == PAUSE:
            if self._run == PLAYING:
                self._run = PAUSED
        elif action == STOP:
            self._go_to(Fraction(0))
            self._run = CUED
        else:
            self._go_to(at)
            if self._run == ENDED:
                self._run = PAUSED

    def set_loop(self, loop: bool) -> None:
        self._loop = loop

    def set_end(self, end: int) -> None:
        self._end = _checked_end(end)

    def _go_to(self, position: Fraction) -> None:
        self._cued = True
        if self._decoder is None or (self._run != ENDED and position == self._position()):
            return  # already there: what is decoded stays
        if self._run == ENDED and position == 0:
            start = self._decoder.next_lap()  # the start is decoded already, after the end
            if start is not None:
                self._time = self._lap_start = start
                return
        self._time, self._lap_start = position, Fraction(0)
        self._decoder.seek(position)

    # -- the clock ---------------------------------------------------------------------------

    def tick(self) -> tuple[Picture | None, np.ndarray | None]:
        """The picture to show now and the sound of this frame period (None: silence); advances
        a playing clip by one production frame."""
        self._ended = False
        if self._still is not None:
            return self._still, None
        decoder = self._decoder
        if decoder is None or self._run in (LOADING, FAILED):
            return None, None
        if decoder.error:
            self._fail(decoder.error)
            return None, None
        if decoder.lap_length is not None:
            self._duration = decoder.lap_length
        if self._run == PLAYING:
            return self._play(decoder)
        if self._cued and self._run != ENDED:  # the frame of a cue or seek, once decoded
            self._show(frame := decoder.step(self._time).frame)
            self._cued = frame is None
        return self._picture(), None

    def _play(self, decoder: ClipDecoder) -> tuple[Picture | None, np.ndarray | None]:
        if not decoder.settled:  # a seek is on its way: wait for it rather than skip frames
            self.late_frames += 1
            start, stop = self._samples()
            return self._picture(), np.zeros((stop - start, self.channels), dtype=np.int16)
        step = decoder.step(self._time)
        self._show(step.frame)
        self._cued = False
        lap_end = step.lap_end
        while lap_end is not None and lap_end <= self._time:
            if not self._loop:
                self._time, self._run, self._ended = lap_end, ENDED, True
                return self._picture(), None
            self._lap_start = decoder.next_lap() or lap_end
            step = decoder.step(self._time)
            self._show(step.frame)
            lap_end = step.lap_end
        shown = self._shown
        if step.frame is None and step.starved and (shown is None or shown.end <= self._time):
            self.late_frames += 1
        limit = None if self._loop or lap_end is None else math.floor(lap_end * self.sample_rate)
        sound = decoder.sound(*self._samples(), limit)
        self._time += self._frame_time
        return self._picture(), sound

    def _samples(self) -> tuple[int, int]:
        """The timeline's samples of this tick: exact over time whatever sample_rate/fps is."""
        start = math.floor(self._time * self.sample_rate)
        return start, math.floor((self._time + self._frame_time) * self.sample_rate)

    def _show(self, frame: DecodedFrame | None) -> None:
        if frame is not None:
            self._shown = frame

    def _picture(self) -> Picture | None:
        if self._shown is None or (self._run == ENDED and self._end == mixer_pb2.CLIP_END_SLATE):
            return None
        return self._shown.picture

    # -- state -------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True during the tick the clip reached its end (not looping), until the next tick or
        transport: the wiring then applies `end`."""
        return self._ended

    def state(self) -> mixer_pb2.ClipState:
        position = math.floor(self._position() * 1000)
        duration = self._duration_ms()
        return mixer_pb2.ClipState(
            source=self.source,
            state=self._run,
            position_ms=position,
            duration_ms=duration,
            remaining_ms=max(0, duration - position),
            loop=self._loop,
            end=self._end,
            error=self._error,
        )

    def _position(self) -> Fraction:
        """Where the clip stands; paused, the time of the frame on screen, so that a cue to the
        position shows that frame."""
        paused = self._run == PAUSED and self._shown is not None and not self._cued
        time = self._shown.time if paused and self._shown is not None else self._time
        return max(Fraction(0), min(time - self._lap_start, self._duration or time))

    def _duration_ms(self) -> int:
        return math.floor(self._duration * 1000)


def _checked_end(end: int) -> mixer_pb2.ClipEnd.ValueType:
    if end not in ENDS:
        raise ValueError(f"unknown clip end {end}")
    return mixer_pb2.ClipEnd.ValueType(end or mixer_pb2.CLIP_END_HOLD)


def _is_still(container: av.container.InputContainer) -> bool:
    """A PNG or JPEG: FFmpeg reads single images with its image demuxers."""
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")


def _probed_duration(container: av.container.InputContainer) -> Fraction:
    """What the file says (the exact length is known once the decoder reaches the end)."""
    streams = container.streams
    stream = streams.video[0] if streams.video else streams.audio[0]
    if stream.duration and stream.time_base:
        return stream.duration * stream.time_base
    if container.duration:
        return Fraction(container.duration, av.time_base)
    return Fraction(0)
