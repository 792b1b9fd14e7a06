"""One running production: the frame clock and its commands.

The clock ticks at exactly the production's frame rate from the monotonic clock, whatever the
sources do. Every tick advances the clips, composes the program's scenes (scene_renderer.py: the
newest frame each source has delivered, held, slated or replaced by its backup), runs the
transition, keys the graphics layer over it, fades to black (program_composer.py), draws the
multiview (multiview.py), mixes one frame of audio and hands the results to the production's
handles (production_outputs.py); what changed goes to the bus after the tick
(production_events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from services.common import errors
from services.common.bus import Bus, subject
from services.common.frame_clock import FrameClock
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.media import RGBA, now_us
from services.common.rpc import ChannelCache
from services.mixer import metrics
from services.mixer.audio_mixer import AudioMixer
from services.mixer.clips import ClipDeck, OpenLibrary, is_clip
from services.mixer.feeds import FeedSet
from services.mixer.multiview import Multiview
from services.mixer.outputs import Output
from services.mixer.pictures import Picture
from services.mixer.production_events import ProductionEvents
from services.mixer.production_outputs import ProductionOutputs
from services.mixer.productions import DEFAULT_CLEAR_MS
from services.mixer.program_composer import ProgramComposer
from services.mixer.scene_renderer import Rendered, SceneRenderer
from services.mixer.switcher import Change, Switcher, check_manual
from services.mixer.talkback import Talkback
from services.mixer.transition_state import ManualStep, Scene, TransitionState

LEVEL_EVENTS_PER_SECOND = 10
MAX_TICK_ERRORS_LOGGED = 10
LARGE_LAYER_PIXELS = 200_000

log = structlog.get_logger("mixer.production")


class ProductionRunner:
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
        source_compression: media_pb2.Compression | None = None,
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
            hold_s=p.hold_ms / 1000,
            clear_s=(p.clear_ms or DEFAULT_CLEAR_MS) / 1000,
            compression=source_compression,
            on_sound_lost=metrics.SOUND_LOST.labels(p.id).inc,
        )
        self.scenes = SceneRenderer(p, self.feeds)
        self.clips = ClipDeck(p, self.feeds, self.audio.push, open_library, media_cache_dir)
        self.multiview = Multiview(self.scenes, self.clips, p.fps)
        self.talkback = Talkback(p, bus, self.audio, self.feeds)
        w, h = self.width, self.height
        self.preview = Picture(w, h)
        self.outputs = ProductionOutputs(p.id, w, h, p.fps, queue_size)
        self.outputs.set_stations([s.id for s in p.sources if not is_clip(s.id)])  # returns
        self.transitions = TransitionState(Scene(state.layout, state.program), p.fps)
        self.composer = ProgramComposer(self.scenes, self.transitions, faded=state.ftb)
        self.frame_index = 0
        self.pts_us = 0
        self.events = ProductionEvents(
            bus, p.id, self.switcher.tally(set(), set()), self.publish_state
        )
        self._on_air: list[asyncio.Future[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._level_every = max(1, round(self.fps / LEVEL_EVENTS_PER_SECOND))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.feeds.start_audio(list(self.scenes.names))
        await self.outputs.announce(self.directory, self.endpoint)
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
        await self.outputs.close(self.directory, self.endpoint)
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
                await asyncio.wait_for(asyncio.shield(waiter), self.scenes.hold_s + 0.5)
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
            self.composer.fade_frames(round(change.ftb_duration_ms * self.fps / 1000))

    def state(self) -> mixer_pb2.MixerState:
        return mixer_pb2.MixerState(
            production=self.id,
            switcher=self.switcher.state,
            tally=self.events.tally,
            transition=self.transitions.to_proto(self.frame_index),
            instance=self.instance,
            time_us=now_us(),
            showing=self.events.showing,
            talk=self.talkback.states(),
            clips=self.clips.states(),
        )

    async def publish_state(self) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(subject("prod", self.id, "mixer", "state"), self.state())

    # -- the frame clock ---------------------------------------------------------------------

    async def _clock(self) -> None:
        def skipped(ticks: int) -> None:
            metrics.TICKS_SKIPPED.labels(self.id).inc(ticks)
            log.warning("clock_behind", production=self.id, skipped=ticks)

        base_us = now_us()
        reap_every = self.fps * 2
        errors_logged = 0
        async for tick in FrameClock(self.fps, on_skip=skipped).ticks():
            index = self.frame_index = tick.index
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
            await self.events.flush()
            if index % reap_every == 0:
                self.feeds.reap()

    def tick(self, index: int, pts_us: int) -> None:
        """Compose and send one frame. Synchronous: numpy does the work in whole-array steps."""
        self.feeds.pull()
        now = time.monotonic()
        clips = self.clips.tick(now)
        if clips is not None:
            self.events.clips(clips)
        if self.transitions.start_pending(
            self.scenes.ready, now, self.scenes.hold_s, index, pts_us
        ):
            self.events.state_changed()
        want_clean = self.outputs.wants("clean", pts_us)
        program, finished = self.composer.compose(
            index, now, self.switcher.state.ftb, clean=want_clean
        )
        if finished:
            self.events.state_changed()
        clean, on_air = self.composer.clean, self.composer.program
        preview_scene = Scene(self.switcher.state.layout, self.switcher.state.preview)
        want_multiview = self.outputs.wants("multiview", pts_us)
        want_preview = self.outputs.wants("preview", pts_us) or want_multiview
        if want_preview:
            preview = self.scenes.render(preview_scene, self.preview, now)
        else:
            preview = Rendered(self.scenes.touch(preview_scene), 0, {})
        self.events.update_tally(self.switcher.tally(program.sources, preview.sources))
        self.events.update_showing(program.showing)
        if self.transitions.pending is None and self._on_air:
            for waiter in self._on_air:
                if not waiter.done():
                    waiter.set_result(None)
            self._on_air.clear()

        capture = program.capture_time_us
        if self.outputs.wants("program", pts_us):
            self.outputs["program"].publish_video(on_air, pts_us, capture)
        if want_clean:
            self.outputs["clean"].publish_video(clean, pts_us, capture)
        if want_preview:
            self.outputs["preview"].publish_video(self.preview, pts_us, preview.capture_time_us)
        if want_multiview:
            self.multiview.render(
                self.preview,
                on_air,
                program.sources,
                preview.sources,
                self.audio.last_levels,
                now,
                self.multiview.tile_fps(self.outputs["multiview"].video_fps()),
            )
            self.outputs["multiview"].publish_video(self.multiview.picture, pts_us, capture)
        minus_wanted = self.outputs.minus_wanted()
        self.outputs.publish_minus_pictures(minus_wanted, on_air, pts_us, capture)

        mix = self.audio.mix(program.sources, minus_wanted, self.talkback.heard)
        self.outputs.publish_sound(mix, self.audio.sample_rate, pts_us)
        if index % self._level_every == 0:
            levels = mixer_pb2.AudioLevels(
                production=self.id, levels=self.audio.levels(), time_us=now_us()
            )
            levels.returns.extend(self.audio.return_levels())
            self.events.levels(levels)

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
                fits = await asyncio.to_thread(self.composer.keyer.update, layer)
            else:
                fits = self.composer.keyer.update(layer)
            if not fits:
                log.warning(
                    "layer_size_mismatch",
                    production=self.id,
                    layer=f"{message.layer.width}x{message.layer.height}",
                )
