"""One production's graphics at one rendition, on its own frame clock, fanned out to subscribers.

Every tick the clock reads the scene, advances animations and crawls, and hands a snapshot to a
worker thread that recomposes only the dirty rectangles. Rendering an instance (Pillow) runs in
its own worker task: until it is ready the layer keeps showing what it had, so a slow render
never holds a frame back. Subscribers each have a drop-oldest queue; one that fell behind (or
just joined) gets a full refresh of the layer, the others only the patches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from services.common.frame_clock import FrameClock
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import DropOldestQueue
from services.graphics import metrics
from services.graphics.animation import AT_REST, Pose, ease, frames_for, pose
from services.graphics.compositor import Composed, Compositor, InstanceFrame
from services.graphics.renderer import InstanceArt, Renderer, Scale, TickerArt
from services.graphics.scene import OnAir, Scene
from services.graphics.template import Animation, Template

QUEUE_FRAMES = 8
KEEPALIVE_S = 1.0
# A stream that starts with instances on air (a restart, a scene taken over from another replica)
# sends its first full frame once their art is ready, waiting this long at most: a keyer that
# follows the handle keeps the layer it had meanwhile, so the graphics do not blink off.
FIRST_ART_WAIT_S = 1.0

log = structlog.get_logger("graphics.layer")


@dataclass(eq=False)  # compared by identity: each is one subscription
class Subscriber:
    queue: DropOldestQueue[media_pb2.MediaFrame] = field(
        default_factory=lambda: DropOldestQueue(QUEUE_FRAMES)
    )
    needs_full: bool = True
    seen_dropped: int = 0


@dataclass
class Showing:
    """An instance as this stream draws it: its art, where it is in its animation, its crawls."""

    id: str
    template: Template
    art: InstanceArt
    phase: str  # in, on, out
    anim: Animation
    frames: int  # length of the current animation in frames
    frame: int = 0
    ticks_on: int = 0
    fresh: bool = True
    rank: float = 0.0
    ticker_origin: dict[int, int] = field(default_factory=dict)


class LayerStream:
    def __init__(
        self,
        scene: Scene,
        renderer: Renderer,
        width: int,
        height: int,
        fps: int,
        tz: ZoneInfo,
        *,
        idle_stop_s: float,
        on_stop: Callable[[LayerStream], None],
    ) -> None:
        self.scene = scene
        self.renderer = renderer
        self.width, self.height, self.fps = width, height, fps
        self.scale = Scale(width, height)
        self.tz = tz
        self.idle_stop_s = idle_stop_s
        self.on_stop = on_stop
        self.compositor = Compositor(width, height)
        self.subscribers: set[Subscriber] = set()
        self.showing: dict[str, Showing] = {}
        self.tick = 0
        self._began = 0.0
        # Instances already on air when the stream starts appear at rest, without animating.
        self._initial = set(scene.on_air)
        self._ready: dict[str, InstanceArt] = {}
        self._pending: dict[str, tuple[int, asyncio.Task[InstanceArt]]] = {}
        self._failed: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    # -- subscribers ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"layer-{self.scene.production}")
        metrics.LAYER_STREAMS.inc()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self.subscribers.add(sub)
        metrics.SUBSCRIBERS.inc()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            metrics.SUBSCRIBERS.dec()
        sub.queue.close()

    # -- the clock -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1 / self.fps
        idle_since = self._began = loop.time()
        last = -1
        clock = FrameClock(self.fps, on_skip=metrics.TICKS_SKIPPED.inc)
        try:
            async for tick in clock.ticks():
                self.tick = tick.index
                if tick.late_s >= interval:
                    metrics.TICKS_SKIPPED.inc()  # behind: the next tick on time draws
                    continue
                if self.subscribers:
                    idle_since = loop.time()
                elif loop.time() - idle_since > self.idle_stop_s:
                    return
                await self._frame(self.tick - last if last >= 0 else 1)
                last = self.tick
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("layer_stream_failed", production=self.scene.production)
        finally:
            for sub in list(self.subscribers):
                self.unsubscribe(sub)
            for _, task in self._pending.values():
                task.cancel()
            metrics.LAYER_STREAMS.dec()
            self.on_stop(self)

    async def _frame(self, elapsed: int) -> None:
        self._reconcile()
        frames = self._advance(elapsed)
        want_full = set()
        for sub in self.subscribers:
            if sub.queue.dropped != sub.seen_dropped:
                metrics.SUBSCRIBER_DROPS.inc(sub.queue.dropped - sub.seen_dropped)
                sub.seen_dropped = sub.queue.dropped
                sub.needs_full = True
            if sub.needs_full:
                want_full.add(sub)
        if want_full and self._first_art_pending():
            want_full.clear()  # they keep needing it: sent once the art is there
        composed = await asyncio.to_thread(
            self.compositor.compose, frames, datetime.now(self.tz), bool(want_full)
        )
        self._send(composed, want_full)

    def _send(self, composed: Composed, want_full: set[Subscriber]) -> None:
        pts = self.tick * 1_000_000 // self.fps
        delta: media_pb2.MediaFrame | None = None
        if composed.patches:
            whole = len(composed.patches) == 1 and composed.patches[0][0] == (
                0,
                0,
                self.width,
                self.height,
            )
            delta = self._layer_frame(composed.patches, whole, pts)
            metrics.LAYER_FRAMES.inc()
            metrics.PATCH_BYTES.inc(sum(len(data) for _, data in composed.patches))
        full: media_pb2.MediaFrame | None = None
        if composed.full is not None:
            full = self._layer_frame([((0, 0, self.width, self.height), composed.full)], True, pts)
        for sub in self.subscribers:
            if sub in want_full and full is not None:
                sub.queue.put(full)
                sub.needs_full = False
            elif delta is not None and not sub.needs_full:
                # (one that joined during this frame's composition waits for its full frame)
                sub.queue.put(delta)

    def _layer_frame(
        self, patches: list[tuple[tuple[int, int, int, int], bytes]], whole: bool, pts: int
    ) -> media_pb2.MediaFrame:
        return media_pb2.MediaFrame(
            layer=media_pb2.LayerFrame(
                width=self.width,
                height=self.height,
                patches=[
                    media_pb2.LayerPatch(
                        rect=media_pb2.Rect(x=x0, y=y0, width=x1 - x0, height=y1 - y0), rgba=data
                    )
                    for (x0, y0, x1, y1), data in patches
                ],
                full=whole,
                pts_us=pts,
                sequence=self.tick,
            )
        )

    def _first_art_pending(self) -> bool:
        """Whether an instance on air since the stream began is still rendering its first art."""
        if asyncio.get_running_loop().time() - self._began > FIRST_ART_WAIT_S:
            return False
        return any(i in self._pending and i not in self.showing for i in self._initial)

    # -- scene to frames -----------------------------------------------------------------------

    def _art(self, on_air: OnAir) -> InstanceArt | None:
        """The instance's art at its current revision, or None while it renders."""
        inst = on_air.instance
        ready = self._ready.get(inst.id)
        if ready is not None and ready.revision == inst.revision:
            return ready
        pending = self._pending.get(inst.id)
        if (pending is None or pending[0] != inst.revision) and self._failed.get(
            inst.id
        ) != inst.revision:
            task = asyncio.create_task(
                asyncio.to_thread(
                    self.renderer.render,
                    on_air.template,
                    dict(inst.fields),
                    self.scale,
                    inst.revision,
                )
            )
            self._pending[inst.id] = (inst.revision, task)
            task.add_done_callback(functools.partial(self._rendered, inst.id, inst.revision))
        return None

    def _rendered(self, iid: str, revision: int, task: asyncio.Task[InstanceArt]) -> None:
        if self._pending.get(iid, (None,))[0] == revision:
            del self._pending[iid]
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failed[iid] = revision
            log.error("render_failed", instance=iid, error=str(exc), exc_info=exc)
            return
        current = self._ready.get(iid)
        if current is None or current.revision <= revision:
            self._ready[iid] = task.result()

    def _reconcile(self) -> None:
        for iid, on_air in self.scene.on_air.items():
            showing = self.showing.get(iid)
            if showing is None or showing.phase == "out":
                art = self._art(on_air)
                if art is None:
                    if showing is None:
                        continue
                    art = showing.art  # coming back while still rendering the new values
                animate = iid not in self._initial and not on_air.cut_in
                anim = on_air.template.anim_in
                n = frames_for(anim, self.fps) if animate else 0
                if showing is None:
                    self.showing[iid] = Showing(
                        iid, on_air.template, art, "in" if n else "on", anim, n
                    )
                else:
                    showing.template, showing.art, showing.anim = on_air.template, art, anim
                    showing.phase, showing.frames, showing.frame = ("in" if n else "on"), n, 0
            elif showing.art.revision != on_air.instance.revision:
                art = self._art(on_air)
                if art is not None:
                    self._swap(showing, on_air.template, art)
        for iid, showing in list(self.showing.items()):
            if iid in self.scene.on_air or showing.phase == "out":
                continue
            self._initial.discard(iid)
            self._ready.pop(iid, None)
            anim = showing.template.anim_out
            n = 0 if self.scene.exits.get(iid, False) else frames_for(anim, self.fps)
            if n == 0:
                del self.showing[iid]
            else:
                showing.phase, showing.anim, showing.frames, showing.frame = "out", anim, n, 0

    def _swap(self, showing: Showing, template: Template, art: InstanceArt) -> None:
        """New values for an instance on air: swap its art; a crawl carries on where it was."""
        old_tickers = [p for p in showing.art.parts if isinstance(p, TickerArt)]
        new_tickers = [p for p in art.parts if isinstance(p, TickerArt)]
        for i, (old, new) in enumerate(zip(old_tickers, new_tickers, strict=False)):
            raw = self._ticker_raw(old, showing.ticks_on)
            offset = raw - showing.ticker_origin.get(i, 0)
            if offset >= 0 and old.period and new.period != old.period:
                showing.ticker_origin[i] = raw - offset % old.period
        showing.template, showing.art = template, art

    def _ticker_raw(self, ticker: TickerArt, ticks_on: int) -> int:
        """Pixels the crawl has moved since the instance came on, counting the entry."""
        return round(ticker.speed * ticks_on / self.fps) - ticker.width

    def _advance(self, elapsed: int) -> list[InstanceFrame]:
        """Step every instance's animation and crawl; the frames, bottom to top."""
        order = {o.instance.id: i for i, o in enumerate(self.scene.ordered())}
        ranked: list[tuple[float, InstanceFrame]] = []
        for iid, s in list(self.showing.items()):
            step = 1 if s.fresh else elapsed
            s.fresh = False
            s.ticks_on += step
            s.rank = order.get(iid, s.rank)  # one going out keeps its place in the stack
            p: Pose = AT_REST
            if s.phase in ("in", "out"):
                s.frame += step
                progress = ease(s.anim.easing, s.frame / s.frames)
                visible = progress if s.phase == "in" else 1 - progress
                if s.frame >= s.frames:
                    if s.phase == "out":
                        del self.showing[iid]
                        continue
                    s.phase = "on"
                p = pose(s.anim, visible, s.art.box, self.width, self.height, self.scale.sx)
            tickers = [part for part in s.art.parts if isinstance(part, TickerArt)]
            offsets = tuple(
                self._ticker_raw(t, s.ticks_on) - s.ticker_origin.get(i, 0)
                for i, t in enumerate(tickers)
            )
            ranked.append((s.rank, InstanceFrame(s.art, p, offsets)))
        ranked.sort(key=lambda r: r[0])
        return [frame for _, frame in ranked]
