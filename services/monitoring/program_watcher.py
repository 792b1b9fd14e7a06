"""Watches each production's program on the media plane at a low rendition.

`ProgramWatchers` follows the handle directory: every announced `prod/<p>/program` gets a
`ProgramWatcher`, and a withdrawn one (the production ended) is dropped with its alerts.

A reader task takes frames off the gRPC stream as fast as they come and stamps their arrival; the
analysis loop measures them. A bounded drop-oldest queue sits between the two, so a slow moment
in analysis never holds the producer's stream (what is dropped is counted). On the mixer's host
the pictures are pulled: the stream names the rendition's ring once, and a puller takes its
newest picture at each tick of the rendition's rate into the same queue (ADR 0024); likewise the
sound, every chunk written to its sound ring since the tick before (ADR 0029).

Loudness is judged against the production's own target (`loudness_targets.py`), looked up as the
frames are measured, so a production changed to another target is judged by it from then on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from services.common.frame_clock import FrameClock
from services.common.gen.baycast.v1 import media_pb2, monitoring_pb2
from services.common.handles import HandleDirectory
from services.common.media import (
    DropOldestQueue,
    PulledVideo,
    plane_rows,
    proto_to_pcm,
    video_planes,
)
from services.common.rpc import ChannelCache
from services.common.shared_memory import FrameGone
from services.common.sound_ring import PulledSound, SoundChunk
from services.common.tasks import cancel_and_wait
from services.monitoring.alerts import AlertBook
from services.monitoring.confidence import CONDITIONS, Change, ConfidenceMonitor, Thresholds
from services.monitoring.loudness_targets import TargetOf

QUEUE_FRAMES = 64
DEFAULT_FPS = 25  # the pulling rate of a rendition that names none
TICK_S = 0.1
READ_RETRY_S = 0.5
# Pages show the program's loudness meters from these events: five a second is smooth enough.
LOUDNESS_EVENT_S = 0.2
NOTHING_LUFS = -120.0
PROGRAM_PREFIX = "program_"

log = structlog.get_logger("monitoring.program")


def program_handle(production: str) -> str:
    return f"prod/{production}/program"


def production_of(handle: str) -> str | None:
    """`prod/<p>/program` -> `<p>`; anything else -> None."""
    parts = handle.split("/")
    if len(parts) == 3 and parts[0] == "prod" and parts[2] == "program" and parts[1]:
        return parts[1]
    return None


LoudnessSink = Callable[[monitoring_pb2.ProgramLoudness], None]


def _finite(lufs: float) -> float:
    return round(lufs, 2) if math.isfinite(lufs) else NOTHING_LUFS


def luma_plane(frame: media_pb2.VideoFrame) -> np.ndarray:
    """The Y plane of an I420 frame as a (height, width) view."""
    return plane_rows(video_planes(frame)[0], frame.planes[0].stride, frame.width, frame.height)


@dataclass
class Arrival:
    at: float
    frame: media_pb2.MediaFrame | SoundChunk  # a chunk: sound read from the program's ring


class ProgramWatcher:
    def __init__(
        self,
        production: str,
        directory: HandleDirectory,
        channels: ChannelCache,
        alerts: AlertBook,
        rendition: media_pb2.Rendition,
        thresholds: Thresholds,
        *,
        subscriber: str = "monitoring",
        clock: Callable[[], float] = time.monotonic,
        on_loudness: LoudnessSink | None = None,
        target_of: TargetOf | None = None,
    ) -> None:
        self.production = production
        self.on_loudness = on_loudness
        self.target_of = target_of
        self._next_loudness = 0.0
        self.handle = program_handle(production)
        self.directory = directory
        self.channels = channels
        self.alerts = alerts
        self.rendition = rendition
        self.subscriber = subscriber
        self.clock = clock
        self.monitor = ConfidenceMonitor(
            thresholds,
            sample_rate=rendition.audio_sample_rate or 48_000,
            channels=rendition.audio_channels or 2,
        )
        self.queue: DropOldestQueue[Arrival] = DropOldestQueue(QUEUE_FRAMES)
        self.ring = PulledVideo()
        self.sound = PulledSound()
        self.upstream_dropped = 0
        self.malformed = 0
        self.lost = 0
        self.retarget()
        self.adopt_alerts()

    @property
    def loudness_target_lufs(self) -> float:
        return self.monitor.thresholds.loudness_target_lufs

    def retarget(self) -> None:
        """Judge loudness against the production's target as it stands now."""
        if self.target_of is None:
            return
        if self.monitor.retarget(self.target_of(self.production)):
            log.info(
                "loudness_target", production=self.production, target_lufs=self.loudness_target_lufs
            )

    def adopt_alerts(self) -> None:
        """Program alerts in the book that this monitor did not raise (another replica did):
        held as raised, so they clear like its own when the condition is over."""
        for condition in CONDITIONS:
            if self.alerts.is_active(PROGRAM_PREFIX + condition, self.production):
                self.monitor.assume(condition)

    async def run(self) -> None:
        readers = [
            asyncio.create_task(self._read(), name=f"read-{self.handle}"),
            asyncio.create_task(self._pull(), name=f"pull-{self.handle}"),
        ]
        try:
            await self._analyse()
        finally:
            await cancel_and_wait(readers)

    async def _read(self) -> None:
        # `frames` resubscribes by itself when the stream breaks; anything else that escapes it
        # is a bug to log, not a reason to stop watching the program.
        while True:
            frames = self.directory.frames(
                self.channels,
                self.handle,
                self.rendition,
                subscriber=self.subscriber,
                pull=True,
                pull_sound=True,
            )
            try:
                async for frame in frames:
                    body = frame.WhichOneof("body")
                    if body == "ring":
                        self.ring.follow(frame.ring.segment)
                        continue
                    if body == "sound_ring":
                        self.sound.follow(frame.sound_ring.segment, frame.sound_ring.first)
                        continue
                    if body == "video":
                        self.ring.follow("")  # pictures by message: the mixer is elsewhere
                    elif body == "audio":
                        self.sound.follow("")
                    self.queue.put(Arrival(self.clock(), frame))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("program_read_failed", production=self.production)
            await asyncio.sleep(READ_RETRY_S)

    async def _pull(self) -> None:
        async for _tick in FrameClock(self.rendition.fps or DEFAULT_FPS).ticks():
            for chunk in self.sound.chunks():
                self.queue.put(Arrival(self.clock(), chunk))
            try:
                video = self.ring.take()
            except FrameGone:  # rewritten while it was read: as if the queue had dropped it
                self.lost += 1
                continue
            except ValueError:  # the ring ended: the stream names the next one
                continue
            if video is not None:
                self.queue.put(Arrival(self.clock(), media_pb2.MediaFrame(video=video)))

    async def _analyse(self) -> None:
        while True:
            arrival = await self.queue.get(timeout=TICK_S)
            self.retarget()
            if arrival is not None:
                try:
                    changes = self._measure(arrival)
                except FrameGone:  # its shared slot was reused: as if the queue had dropped it
                    self.lost += 1
                    changes = []
                except ValueError as exc:  # a malformed frame: skip it, keep watching
                    self.malformed += 1
                    log.warning("frame_malformed", production=self.production, error=str(exc))
                    changes = []
                self._apply(changes)
            now = self.clock()
            self._apply(self.monitor.tick(now))
            if self.on_loudness is not None and now >= self._next_loudness:
                self._next_loudness = now + LOUDNESS_EVENT_S
                self.on_loudness(self.loudness())

    def loudness(self) -> monitoring_pb2.ProgramLoudness:
        meter = self.monitor.loudness
        return monitoring_pb2.ProgramLoudness(
            production=self.production,
            momentary_lufs=_finite(meter.momentary),
            short_term_lufs=_finite(meter.short_term),
            integrated_lufs=_finite(meter.integrated),
            range_lu=round(meter.loudness_range, 2),
            true_peak_dbtp=_finite(meter.true_peak_dbtp),
            time_us=time.time_ns() // 1000,
        )

    def _measure(self, arrival: Arrival) -> list[Change]:
        if isinstance(arrival.frame, SoundChunk):
            chunk = arrival.frame
            return self.monitor.audio(chunk.samples, arrival.at, chunk.sample_rate)
        body = arrival.frame.WhichOneof("body")
        if body == "video":
            video = arrival.frame.video
            if video.pixel_format in (media_pb2.PIXEL_FORMAT_I420, 0) and video.planes:
                return self.monitor.video(luma_plane(video), arrival.at)
        elif body == "audio":
            audio = arrival.frame.audio
            return self.monitor.audio(proto_to_pcm(audio), arrival.at, audio.sample_rate)
        elif body == "keepalive":
            self.upstream_dropped = int(arrival.frame.keepalive.dropped)
        return []

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            condition = f"program_{change.condition}"
            message = f"{self.production}: {change.message}"
            self.alerts.set(condition, self.production, change.raised, message, change.value)
            log.info(
                "program_condition",
                production=self.production,
                condition=condition,
                raised=change.raised,
            )

    def withdraw(self) -> None:
        """The program handle is gone (the production ended): its alerts end with it."""
        self._apply(self.monitor.clear_all())


class ProgramWatchers:
    """One watcher per production whose program handle is announced, and only those."""

    def __init__(
        self,
        directory: HandleDirectory,
        channels: ChannelCache,
        alerts: AlertBook,
        rendition: media_pb2.Rendition,
        thresholds: Thresholds,
        *,
        interval_s: float,
        subscriber: str,
        spawn: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]],
        on_loudness: LoudnessSink | None = None,
        target_of: TargetOf | None = None,
    ) -> None:
        self.on_loudness = on_loudness
        self.target_of = target_of
        self.directory = directory
        self.channels = channels
        self.alerts = alerts
        self.rendition = rendition
        self.thresholds = thresholds
        self.interval_s = interval_s
        self.subscriber = subscriber
        self.spawn = spawn
        self.watchers: dict[str, ProgramWatcher] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        while True:
            try:
                keys = await self.directory.names()
            except Exception as exc:  # the bus is down: keep what we watch, look again later
                log.debug("discovery_failed", error=str(exc) or type(exc).__name__)
            else:
                announced = {p for p in map(production_of, keys) if p is not None}
                for production in sorted(announced - set(self.watchers)):
                    self._start(production)
                for production in sorted(set(self.watchers) - announced):
                    if not await self._still_announced(production):
                        await self._stop(production)
                for production in sorted(self._orphans() - announced):
                    if not await self._still_announced(production):
                        self._clear_orphan(production)
            await asyncio.sleep(self.interval_s)

    def adopt_alerts(self) -> None:
        for watcher in self.watchers.values():
            watcher.adopt_alerts()

    def _orphans(self) -> set[str]:
        """Productions with program alerts (adopted from another replica) and no watcher."""
        return {
            key.target
            for key in self.alerts.active
            if key.condition.startswith(PROGRAM_PREFIX) and key.target not in self.watchers
        }

    def _clear_orphan(self, production: str) -> None:
        for condition in CONDITIONS:
            self.alerts.clear(
                PROGRAM_PREFIX + condition, production, f"{production}: the program has ended"
            )

    async def _still_announced(self, production: str) -> bool:
        """A key listing of a busy bucket can come back short: ask for the key itself."""
        try:
            return await self.directory.lookup(program_handle(production)) is not None
        except Exception:  # cannot tell now: keep watching, look again next round
            return True

    def _start(self, production: str) -> None:
        watcher = ProgramWatcher(
            production,
            self.directory,
            self.channels,
            self.alerts,
            self.rendition,
            self.thresholds,
            subscriber=self.subscriber,
            on_loudness=self.on_loudness,
            target_of=self.target_of,
        )
        self.watchers[production] = watcher
        self._tasks[production] = self.spawn(watcher.run(), f"watch-{production}")
        log.info("watching_program", production=production, handle=watcher.handle)

    async def _stop(self, production: str) -> None:
        await cancel_and_wait([self._tasks.pop(production)])
        self.watchers.pop(production).withdraw()
        log.info("program_withdrawn", production=production)

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks.values()))
        self._tasks.clear()
