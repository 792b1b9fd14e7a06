"""One running production: the frame clock, the scenes it composes, and what it sends out.

The clock ticks at exactly the production's frame rate from the monotonic clock, whatever the
sources do. Every tick composes the program from the newest frame each source has delivered
(held while a source is late, slated once it is silent past the hold time, replaced by its
backup past the backup time), keys the graphics layer over it, mixes one frame of audio and
hands the results to the handles' subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.media import RGBA, now_us
from services.common.rpc import ChannelCache
from services.mixer import layouts, metrics, slates
from services.mixer.audio_mixer import AudioMixer
from services.mixer.clips import ClipDeck, OpenLibrary, is_clip
from services.mixer.feeds import FeedSet, Held
from services.mixer.keyer import Keyer
from services.mixer.layouts import PlacedBox
from services.mixer.outputs import Output
from services.mixer.pictures import (
    BLACK_YUV,
    WHITE_YUV,
    Picture,
    blit,
    border,
    fill_rect,
    hex_to_yuv,
)
from services.mixer.productions import DEFAULT_CLEAR_MS
from services.mixer.switcher import Change, Switcher, check_manual
from services.mixer.talkback import Talkback
from services.mixer.transition_state import ManualStep, Scene, TransitionState
from services.mixer.transitions import Mixer

BACKGROUND_YUV = (28, 132, 124)
PROGRAM_TALLY_YUV = (81, 90, 240)  # red
PREVIEW_TALLY_YUV = (145, 54, 34)  # green
METER_YUV = (150, 60, 60)
LEVEL_EVENTS_PER_SECOND = 10
MAX_LATE_S = 1.0
MAX_TICK_ERRORS_LOGGED = 10
LARGE_LAYER_PIXELS = 200_000
METER_FLOOR_DB = -60.0

log = structlog.get_logger("mixer.production")


@dataclass
class Rendered:
    sources: set[str]
    capture_time_us: int
    showing: dict[str, str]


class ProductionRunner:
    OUTPUTS = ("program", "clean", "preview", "multiview")

    def __init__(
        self,
        production: mixer_pb2.Production,
        state: mixer_pb2.SwitcherState,
        *,
        bus: Bus,
        directory: HandleDirectory,
        channels: ChannelCache,
        instance: str,
        endpoint: str,
        save_state: Callable[[mixer_pb2.SwitcherState], Awaitable[None]],
        open_library: OpenLibrary,
        media_cache_dir: Path,
        queue_size: int = 8,
        feed_idle_seconds: float = 5.0,
    ) -> None:
        p = production
        self.production = p
        self.id = p.id
        self.bus = bus
        self.directory = directory
        self.instance = instance
        self.endpoint = endpoint
        self.save_state = save_state
        self.queue_size = queue_size
        self.width, self.height, self.fps = p.width, p.height, p.fps
        self.interval = 1 / p.fps
        self.hold_s = p.hold_ms / 1000
        self.backup_after_s = p.backup_after_ms / 1000
        self.clear_s = (p.clear_ms or DEFAULT_CLEAR_MS) / 1000
        self.names = {s.id: s.name for s in p.sources}
        self.backups = {s.id: s.backup for s in p.sources if s.backup}
        self.switcher = Switcher(p, state)
        self.audio = AudioMixer(
            [s.id for s in p.sources],
            p.sample_rate,
            p.channels,
            p.fps,
            loudness=p.loudness,
            production=p.id,
        )
        self.audio.configure(list(state.audio), state.master_gain_db)
        self.feeds = FeedSet(
            directory,
            channels,
            p.fps,
            f"mixer-{instance}/{p.id}",
            feed_idle_seconds,
            self.audio.push,
            hold_s=self.hold_s,
            clear_s=self.clear_s,
        )
        self.clips = ClipDeck(p, self.feeds, self.audio.push, open_library, media_cache_dir)
        self.talkback = Talkback(p, bus, self.audio, self.feeds)
        w, h = self.width, self.height
        self.clean = Picture(w, h)
        self.program = Picture(w, h)
        self.preview = Picture(w, h)
        self.multiview = Picture(w, h)
        self._scene_a = Picture(w, h)
        self._scene_b = Picture(w, h)
        self._mixer = Mixer(w, h)
        self.keyer = Keyer(w, h)
        self.outputs = {
            name: Output(f"prod/{p.id}/{name}", w, h, p.fps, queue_size, p.id)
            for name in self.OUTPUTS
        }
        for s in p.sources:
            if is_clip(s.id):
                continue  # a return is a station's
            self.outputs[f"mixminus/{s.id}"] = Output(
                f"prod/{p.id}/mixminus/{s.id}", w, h, p.fps, queue_size, p.id
            )
        self.transitions = TransitionState(Scene(state.layout, state.program), p.fps)
        self.ftb_level = 1.0 if state.ftb else 0.0
        self.ftb_step = 1.0
        self.frame_index = 0
        self.pts_us = 0
        self.tally = self.switcher.tally(set(), set())
        self.showing: dict[str, str] = {}
        self._placed: dict[tuple[bytes, int, int], list[PlacedBox]] = {}
        self._events: list[tuple[str, object]] = []
        self._on_air: list[asyncio.Future[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._level_every = max(1, round(self.fps / LEVEL_EVENTS_PER_SECOND))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.feeds.start_audio(list(self.names))
        for output in self.outputs.values():
            await self.directory.announce(output.name, self.endpoint)
        self._tasks.append(asyncio.create_task(self._clock(), name=f"clock-{self.id}"))
        self._tasks.append(asyncio.create_task(self._graphics(), name=f"gfx-{self.id}"))
        await self.publish_state()
        log.info("production_started", production=self.id, instance=self.instance)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.clips.close()
        await self.feeds.close()
        self.talkback.close()
        for output in self.outputs.values():
            output.close()
            with contextlib.suppress(Exception):
                await self.directory.withdraw(output.name, self.endpoint)
        log.info("production_stopped", production=self.id)

    def output(self, name: str) -> Output | None:
        return self.outputs.get(name)

    # -- commands ----------------------------------------------------------------------------

    async def command(self, command: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
        if command.HasField("talk"):  # not the switcher's: talkback is not durable state
            if await self.talkback.command(command.talk):
                await self.publish_state()
            return self.state()
        if command.HasField("manual"):
            return await self._manual(command)
        if command.HasField("transport"):  # nor is where a clip stands
            try:
                self.clips.transport(command.transport)
            except errors.BaycastError:
                metrics.COMMANDS.labels(self.id, "refused").inc()
                raise
            metrics.COMMANDS.labels(self.id, "ok").inc()
            await self.publish_state()
            return self.state()
        return await self._switch(command)

    async def _manual(self, command: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
        """The T-bar: held positions are the picture's; reaching 1 is a switch like any other."""
        s = self.switcher.state
        try:
            step = self.transitions.manual(
                command.manual.position,
                check_manual(command.manual),
                Scene(s.layout, s.preview),
                self.pts_us + 1_000_000 // self.fps,  # it shows from the next frame
            )
        except errors.BaycastError:
            metrics.COMMANDS.labels(self.id, "refused").inc()
            raise
        if step is ManualStep.COMPLETE:
            state = await self._switch(command)
            self.transitions.completed()
            return state
        metrics.COMMANDS.labels(self.id, "ok").inc()
        if step is not ManualStep.NONE:
            await self.publish_state()
        return self.state()

    async def _switch(self, command: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
        before = self.switcher.state
        try:
            change = self.switcher.apply(command)
        except errors.BaycastError:
            metrics.COMMANDS.labels(self.id, "refused").inc()
            raise
        if self.switcher.state != before:
            try:
                await self.save_state(self.switcher.state)
            except Exception as exc:
                self.switcher.state = before
                metrics.COMMANDS.labels(self.id, "failed").inc()
                raise errors.Unavailable(f"cannot store the switcher state: {exc}") from None
        self._apply(change)
        if self.transitions.pending is not None:
            # Reply once the switch is on air, so the reply's tally is what viewers see.
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._on_air.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), self.hold_s + 0.5)
        metrics.COMMANDS.labels(self.id, "ok").inc()
        await self.publish_state()
        return self.state()

    def _apply(self, change: Change) -> None:
        s = self.switcher.state
        self.audio.configure(list(s.audio), s.master_gain_db)
        if change.program_changed:
            self.transitions.request(
                Scene(s.layout, s.program), change.transition, time.monotonic()
            )
        else:
            self.transitions.follow_preview(Scene(s.layout, s.preview))
        if change.ftb_duration_ms is not None:
            frames = max(1, round(change.ftb_duration_ms * self.fps / 1000))
            self.ftb_step = 1 / frames

    def state(self) -> mixer_pb2.MixerState:
        return mixer_pb2.MixerState(
            production=self.id,
            switcher=self.switcher.state,
            tally=self.tally,
            transition=self.transitions.to_proto(self.frame_index),
            instance=self.instance,
            time_us=now_us(),
            showing=self.showing,
            talk=self.talkback.states(),
            clips=self.clips.states(),
        )

    async def publish_state(self) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(subject("prod", self.id, "mixer", "state"), self.state())

    # -- the frame clock ---------------------------------------------------------------------

    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        base_us = now_us()
        index = 0
        reap_every = self.fps * 2
        errors_logged = 0
        while True:
            due = start + index * self.interval
            late = loop.time() - due
            if late < 0:
                await asyncio.sleep(-late)
            elif late > MAX_LATE_S:
                skip = int(late / self.interval)
                metrics.TICKS_SKIPPED.labels(self.id).inc(skip)
                log.warning("clock_behind", production=self.id, skipped=skip)
                index += skip
            self.frame_index = index
            self.pts_us = base_us + index * 1_000_000 // self.fps
            began = time.perf_counter()
            try:
                self.tick(index, self.pts_us)
            except Exception:  # a bug must not stop the show: log it, keep the clock going
                metrics.TICK_ERRORS.labels(self.id).inc()
                if errors_logged < MAX_TICK_ERRORS_LOGGED:
                    errors_logged += 1
                    log.exception("tick_failed", production=self.id, frame=index)
            metrics.RENDER_SECONDS.labels(self.id).observe(time.perf_counter() - began)
            metrics.FRAMES.labels(self.id).inc()
            if self._events:
                await self._flush_events()
            if index % reap_every == 0:
                self.feeds.reap()
            index += 1
            if late >= 0:
                await asyncio.sleep(0)  # behind: still let the loop breathe between frames

    async def _flush_events(self) -> None:
        events, self._events = self._events, []
        for kind, payload in events:
            with contextlib.suppress(Exception):
                if kind == "state":
                    await self.publish_state()
                elif kind == "tally":
                    assert isinstance(payload, mixer_pb2.Tally)
                    await self.bus.publish(subject("prod", self.id, "tally"), payload)
                elif kind == "levels":
                    assert isinstance(payload, mixer_pb2.AudioLevels)
                    await self.bus.publish(subject("prod", self.id, "mixer", "levels"), payload)
                elif kind == "clips":
                    assert isinstance(payload, mixer_pb2.ClipStates)
                    await self.bus.publish(subject("prod", self.id, "mixer", "clips"), payload)

    def tick(self, index: int, pts_us: int) -> None:
        """Compose and send one frame. Synchronous: numpy does the work in whole-array steps."""
        now = time.monotonic()
        clips = self.clips.tick(now)
        if clips is not None:
            self._events.append(("clips", clips))
        if self.transitions.start_pending(self._ready, now, self.hold_s, index, pts_us):
            self._events.append(("state", None))
        program = self._render_program(index)
        np.copyto(self.program.data, self.clean.data)
        self.keyer.apply(self.program)
        self._fade(index)
        preview_scene = Scene(self.switcher.state.layout, self.switcher.state.preview)
        want_multiview = self.outputs["multiview"].wants_frame(index)
        want_preview = self.outputs["preview"].wants_frame(index) or want_multiview
        if want_preview:
            preview = self._render_scene(preview_scene, self.preview, now)
        else:
            preview = Rendered(self._touch(preview_scene), 0, {})
        self._update_tally(program.sources, preview.sources)
        self._update_showing(program.showing)
        if self.transitions.pending is None and self._on_air:
            for waiter in self._on_air:
                if not waiter.done():
                    waiter.set_result(None)
            self._on_air.clear()

        capture = program.capture_time_us
        for name in ("program", "clean"):
            pic = self.program if name == "program" else self.clean
            if self.outputs[name].wants_frame(index):
                self.outputs[name].publish_video(pic, index, pts_us, capture)
        if want_preview:
            self.outputs["preview"].publish_video(
                self.preview, index, pts_us, preview.capture_time_us
            )
        if want_multiview:
            self._render_multiview(program.sources, preview.sources, now)
            self.outputs["multiview"].publish_video(self.multiview, index, pts_us, capture)
        minus_wanted = {
            name.split("/", 1)[1]
            for name, out in self.outputs.items()
            if name.startswith("mixminus/") and out.subscribers
        }
        for name in minus_wanted:
            out = self.outputs[f"mixminus/{name}"]
            if out.wants_frame(index):
                out.publish_video(self.program, index, pts_us, capture)

        mix = self.audio.mix(program.sources, minus_wanted, self.talkback.heard)
        rate = self.audio.sample_rate
        for name in ("program", "clean", "multiview"):
            self.outputs[name].publish_audio(mix.program, rate, pts_us)
        for source, samples in mix.mixminus.items():
            self.outputs[f"mixminus/{source}"].publish_audio(samples, rate, pts_us)
        if index % self._level_every == 0:
            levels = mixer_pb2.AudioLevels(
                production=self.id, levels=self.audio.levels(), time_us=now_us()
            )
            levels.returns.extend(self.audio.return_levels())
            self._events.append(("levels", levels))

    # -- switching ---------------------------------------------------------------------------

    def _ready(self, scene: Scene) -> bool:
        for box in self._boxes(scene.layout):
            source = box.source or scene.bus
            if not source:
                continue
            w, h = box.source_size()
            if self.feeds.get(source, w, h).latest is None and self.feeds.age(source) < self.hold_s:
                return False
        return True

    def _render_program(self, index: int) -> Rendered:
        now = time.monotonic()
        t = self.transitions.active
        if t is None:
            return self._render_scene(self.transitions.scene, self.clean, now)
        position = t.position(index)
        a = self._render_scene(t.source, self._scene_a, now)
        b = self._render_scene(t.target, self._scene_b, now)
        kind = t.transition.type
        if kind == "wipe":
            self._mixer.wipe(self._scene_a, self._scene_b, position, self.clean)
        elif kind == "dip":
            color = hex_to_yuv(t.transition.color)
            self._mixer.dip(self._scene_a, self._scene_b, color, position, self.clean)
        else:
            self._mixer.mix(self._scene_a, self._scene_b, position, self.clean)
        if self.transitions.finish(index):
            self._events.append(("state", None))
            return b
        return Rendered(a.sources | b.sources, b.capture_time_us, {**a.showing, **b.showing})

    def _fade(self, index: int) -> None:
        target = 1.0 if self.switcher.state.ftb else 0.0
        if self.ftb_level != target:
            step = self.ftb_step if target > self.ftb_level else -self.ftb_step
            self.ftb_level = min(1.0, max(0.0, self.ftb_level + step))
            if self.ftb_level == target:
                self._events.append(("state", None))
        if self.ftb_level > 0:
            self._mixer.mix_color(self.clean, BLACK_YUV, self.ftb_level, self.clean)
            self._mixer.mix_color(self.program, BLACK_YUV, self.ftb_level, self.program)

    # -- composing ---------------------------------------------------------------------------

    def _boxes(self, layout: mixer_pb2.Layout, width: int = 0, height: int = 0) -> list[PlacedBox]:
        width, height = width or self.width, height or self.height
        key = (layout.SerializeToString(deterministic=True), width, height)
        boxes = self._placed.get(key)
        if boxes is None:
            boxes = layouts.place(layout, width, height)
            if len(self._placed) > 64:
                self._placed.clear()
            self._placed[key] = boxes
        return boxes

    def _touch(self, scene: Scene) -> set[str]:
        """Keep the scene's renditions subscribed (a take is then instant); its sources."""
        sources = set()
        for box in self._boxes(scene.layout):
            source = box.source or scene.bus
            if source:
                self.feeds.get(source, *box.source_size())
                sources.add(source)
        return sources

    def _render_scene(self, scene: Scene, out: Picture, now: float) -> Rendered:
        boxes = self._boxes(scene.layout)
        if not any(b.width == out.width and b.height == out.height for b in boxes):
            out.fill(BACKGROUND_YUV)
        sources: set[str] = set()
        showing: dict[str, str] = {}
        capture, biggest = 0, 0
        for box in boxes:
            source = box.source or scene.bus
            if not source:
                continue
            held, status = self._picture_for(source, *box.source_size(), now)
            sources.add(source)
            if status.startswith("backup:"):
                sources.add(status.removeprefix("backup:"))  # the backup is on air: tally it
            showing[source] = status
            if held is None:
                blit(
                    out,
                    slates.slate(self.names[source], box.width, box.height),
                    box.x,
                    box.y,
                    box.width,
                    box.height,
                )
            else:
                blit(out, held.picture, box.x, box.y, box.width, box.height, box.crop)
                if box.width * box.height > biggest:
                    capture, biggest = held.capture_time_us, box.width * box.height
            if box.border_px:
                border(
                    out,
                    box.x,
                    box.y,
                    box.width,
                    box.height,
                    box.border_px,
                    hex_to_yuv(box.border_color, WHITE_YUV),
                )
            if box.label:
                self._label(out, box.label, box.x, box.y + box.height, box.height)
        return Rendered(sources, capture, showing)

    def _picture_for(
        self,
        source: str,
        width: int,
        height: int,
        now: float,
        *,
        on_air: bool = True,
        fps: int = 0,
    ) -> tuple[Held | None, str]:
        """The newest good frame for a box of `source` (or its backup), and what it is.

        On air, a source back after a loss stays replaced (backup, else slate) until it has
        delivered for the clear time; monitors (`on_air=False`) show it as soon as it is back,
        and may take fewer frames a second (`fps`; 0 is the production's rate).
        """
        shown, status = source, "live"
        backup = self.backups.get(source)
        age = self.feeds.age(source)
        clearing = on_air and self.feeds.clearing(source)
        if backup and (age > self.hold_s or clearing):
            self.feeds.get(backup, width, height, fps)  # roll the backup before it is needed
            if (age > self.backup_after_s or clearing) and self.feeds.age(backup) < self.hold_s:
                shown, status = backup, f"backup:{backup}"
        if clearing and shown == source:
            self.feeds.get(source, width, height, fps)  # stay subscribed while it clears
            return None, "slate"
        held = self.feeds.get(shown, width, height, fps).latest
        if held is None or now - held.received > self.hold_s:
            other = self.feeds.any_frame(shown)
            held = other if other is not None and now - other.received <= self.hold_s else None
        if held is None:
            return None, "slate"
        if status == "live" and now - held.received > 2 * self.interval:
            status = "held"
        return held, status

    def _monitor_picture(
        self, source: str, width: int, height: int, now: float, fps: int
    ) -> Held | None:
        """A multiview tile of `source`: a thumbnail of a frame it already sends at another size
        (a program box), else a feed of its own at tile size and `fps`.

        One subscription per source on air instead of two halves what ingest scales and sends;
        the thumbnail's nearest-neighbour scaling costs the mixer well under a millisecond.
        """
        if self.feeds.subscribed_elsewhere(source, width, height):
            held = self.feeds.any_frame(source)
            if held is not None and now - held.received <= self.hold_s:
                return held
        held, _status = self._picture_for(source, width, height, now, on_air=False, fps=fps)
        return held

    def _monitor_fps(self) -> int:
        """Frames a second for the multiview's own tile feeds: as many as its watchers take,
        and enough that three arrive within the hold time, so a live tile never looks lost."""
        wanted = self.outputs["multiview"].video_fps()
        return min(self.fps, max(wanted, math.ceil(3 / self.hold_s)))

    def _label(self, out: Picture, text: str, x: int, bottom: int, box_height: int) -> None:
        height = max(16, min(40, box_height // 10)) // 2 * 2
        pic = slates.label(text, height)
        w = min(pic.width, out.width - x) // 2 * 2
        y = max(0, bottom - height)
        if w > 0:
            crop = (0.0, 0.0, 1 - w / pic.width, 0.0)
            blit(out, pic, x, y, w, height, crop)

    def _render_multiview(self, program: set[str], preview: set[str], now: float) -> None:
        """Preview and program on top, every source below with its name, tally and meter."""
        mv = self.multiview
        w, h = mv.width, mv.height
        mv.fill(BLACK_YUV)
        half_w, half_h = w // 2 // 2 * 2, h // 2 // 2 * 2
        for pic, x, yuv, text in (
            (self.preview, 0, PREVIEW_TALLY_YUV, "PREVIEW 预监"),
            (self.program, half_w, PROGRAM_TALLY_YUV, "PROGRAM 主输出"),
        ):
            # Every other pixel: a monitor's thumbnail, 0.3 ms where a filtered scale costs 4 ms.
            mv.y[:half_h, x : x + half_w] = pic.y[: 2 * half_h : 2, : 2 * half_w : 2]
            cx, ch, cw = x // 2, half_h // 2, half_w // 2
            mv.u[:ch, cx : cx + cw] = pic.u[: 2 * ch : 2, : 2 * cw : 2]
            mv.v[:ch, cx : cx + cw] = pic.v[: 2 * ch : 2, : 2 * cw : 2]
            border(mv, x, 0, half_w, half_h, 4, yuv)
            self._label(mv, text, x + 4, half_h - 4, half_h)
        sources = list(self.names)
        if not sources:
            return
        n = len(sources)
        rows = 1 if n <= 4 else (2 if n <= 10 else (3 if n <= 18 else 4))
        cols = math.ceil(len(sources) / rows)
        cell_w, cell_h = w // cols // 2 * 2, (h - half_h) // rows // 2 * 2
        label_h = max(16, cell_h // 7) // 2 * 2
        tile_w = (cell_w - 8) // 2 * 2
        tile_h = min(cell_h - label_h - 8, tile_w * 9 // 16) // 2 * 2
        levels = self.audio.last_levels
        tile_fps = self._monitor_fps()
        for i, source in enumerate(sources):
            x = (i % cols) * cell_w + 4
            y = half_h + (i // cols) * cell_h + 4
            held = self._monitor_picture(source, tile_w, tile_h, now, tile_fps)
            pic = held.picture if held else slates.slate(self.names[source], tile_w, tile_h)
            blit(mv, pic, x, y, tile_w, tile_h)
            if source in program:
                border(mv, x, y, tile_w, tile_h, 4, PROGRAM_TALLY_YUV)
            elif source in preview:
                border(mv, x, y, tile_w, tile_h, 4, PREVIEW_TALLY_YUV)
            level = (levels.get(source, -120.0) - METER_FLOOR_DB) / -METER_FLOOR_DB
            bar = int(max(0.0, min(1.0, level)) * (tile_h - 8)) // 2 * 2
            if bar:
                fill_rect(mv, x + tile_w - 14, y + tile_h - 4 - bar, 8, bar, METER_YUV)
            self._label(mv, self._tile_name(source), x, y + tile_h + label_h, label_h * 10)

    def _tile_name(self, source: str) -> str:
        """A source's name under its tile; a clip's with the time it has left, e.g. 片头 -0:07."""
        remaining = self.clips.remaining_s(source)
        if remaining is None:
            return self.names[source]
        seconds = math.ceil(remaining)
        return f"{self.names[source]} -{seconds // 60}:{seconds % 60:02d}"

    # -- events ------------------------------------------------------------------------------

    def _update_tally(self, program: set[str], preview: set[str]) -> None:
        tally = self.switcher.tally(program, preview)
        if list(tally.sources) != list(self.tally.sources):
            tally.time_us = now_us()
            self.tally = tally
            self._events.append(("tally", tally))
            self._events.append(("state", None))

    def _update_showing(self, showing: dict[str, str]) -> None:
        coarse = {s: ("live" if v == "held" else v) for s, v in showing.items()}
        if coarse != {s: ("live" if v == "held" else v) for s, v in self.showing.items()}:
            self._events.append(("state", None))
            metrics.SLATED.labels(self.id).set(sum(v == "slate" for v in coarse.values()))
        self.showing = showing

    # -- graphics ----------------------------------------------------------------------------

    async def _graphics(self) -> None:
        rendition = media_pb2.Rendition(
            width=self.width, height=self.height, pixel_format=RGBA, fps=self.fps, no_audio=True
        )
        frames = self.directory.frames(
            self.feeds.channels, f"gfx/{self.id}", rendition, subscriber=f"mixer/{self.id}"
        )
        async for message in frames:
            if message.WhichOneof("body") != "layer":
                continue
            layer = message.layer
            area = sum(p.rect.width * p.rect.height for p in layer.patches)
            # A whole-layer refresh costs tens of ms to convert: off the loop, so the frame clock
            # keeps time (at worst one frame shows the key half updated).
            if area > LARGE_LAYER_PIXELS:
                fits = await asyncio.to_thread(self.keyer.update, layer)
            else:
                fits = self.keyer.update(layer)
            if not fits:
                log.warning(
                    "layer_size_mismatch",
                    production=self.id,
                    layer=f"{message.layer.width}x{message.layer.height}",
                )
