"""A production's clips and stills (sources `clip/<media id>`, docs/adr/0022).

Each is fetched from the media library into the mixer's cache, opened by a `Playout` and from then
on advanced one frame per tick of the production's clock: its picture goes into the source's feed
(which the switcher, layouts and multiview read as they read a station's) and its sound into the
audio mixer. Transport commands (cue, play, pause, stop, seek) act on the next tick. At its end a
clip holds its last frame, shows its slate, or asks the rundown for its next segment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import structlog

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media import now_us
from services.common.media_library import CLIP_PREFIX, MediaLibrary, MediaNotFound
from services.mixer import metrics
from services.mixer.feeds import FeedSet
from services.mixer.playout import Playout

STATE_EVENTS_EVERY_S = 1.0
CLOSE_WAIT_S = 2.0

log = structlog.get_logger("mixer.clips")

OpenLibrary = Callable[[], Awaitable[MediaLibrary]]
OnEnd = Callable[[str], Awaitable[None]]

Transport = mixer_pb2.MixerCommand.Transport


def is_clip(source: str) -> bool:
    return source.startswith(CLIP_PREFIX)


def media_id(source: str) -> str:
    return source.removeprefix(CLIP_PREFIX)


class Deck:
    """One clip or still: where it is in its loading, and its player once open."""

    def __init__(self, source: mixer_pb2.ProductionSource) -> None:
        self.source = source.id
        self.loop = source.loop
        self.end = source.end or mixer_pb2.CLIP_END_HOLD
        self.player: Playout | None = None
        self.error = ""
        self.late_counted = 0
        self.pending: list[Transport] = []  # transport asked for while it loads
        self.task: asyncio.Task[None] | None = None

    def state(self) -> mixer_pb2.ClipState:
        if self.player is not None:
            return self.player.state()
        run = mixer_pb2.CLIP_RUN_STATE_FAILED if self.error else mixer_pb2.CLIP_RUN_STATE_LOADING
        return mixer_pb2.ClipState(
            source=self.source, state=run, loop=self.loop, end=self.end, error=self.error
        )


class ClipDeck:
    """The clips and stills of one production."""

    def __init__(
        self,
        production: mixer_pb2.Production,
        feeds: FeedSet,
        push_audio: Callable[[str, np.ndarray], None],
        open_library: OpenLibrary,
        cache_dir: Path,
    ) -> None:
        self.production = production.id
        self.width, self.height, self.fps = production.width, production.height, production.fps
        self.feeds = feeds
        self.push_audio = push_audio
        self.open_library = open_library
        self.cache_dir = cache_dir
        self.on_end: OnEnd | None = None  # the rundown's: a clip ended with CLIP_END_NEXT
        self.decks: dict[str, Deck] = {}
        self.changed = False
        self._last_event = 0.0
        self._ending: set[asyncio.Task[None]] = set()
        self.set_sources(list(production.sources))

    # -- the production's sources ------------------------------------------------------------

    def set_sources(self, sources: list[mixer_pb2.ProductionSource]) -> None:
        """Load the clips new to the production, close the removed ones; a kept clip takes its
        (possibly edited) loop and end."""
        clips = {s.id: s for s in sources if is_clip(s.id)}
        for source in [s for s in self.decks if s not in clips]:
            gone = self.decks.pop(source)
            self.feeds.remove_local(source)
            if gone.task is not None:
                gone.task.cancel()
            if gone.player is not None:
                self._spawn(gone.player.close())
        for source, spec in clips.items():
            kept = self.decks.get(source)
            if kept is None:
                fresh = self.decks[source] = Deck(spec)
                self.feeds.add_local(source)
                fresh.task = asyncio.create_task(self._load(fresh), name=f"load-{source}")
                continue
            kept.loop, kept.end = spec.loop, spec.end or mixer_pb2.CLIP_END_HOLD
            if kept.player is not None:
                kept.player.set_loop(kept.loop)
                kept.player.set_end(kept.end)
        self.changed = True

    async def _load(self, deck: Deck) -> None:
        try:
            library = await self.open_library()
            path = await library.fetch(media_id(deck.source), self.cache_dir)
            player = Playout(
                deck.source,
                path,
                self.width,
                self.height,
                self.fps,
                loop=deck.loop,
                end=deck.end,
            )
            await player.open()
            failed = player.state()
            if failed.state == mixer_pb2.CLIP_RUN_STATE_FAILED:
                await player.close()
                raise RuntimeError(failed.error)
        except MediaNotFound:
            deck.error = f"{media_id(deck.source)!r} is not in the media library"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            deck.error = f"cannot load {media_id(deck.source)!r}: {exc}"
        else:
            if self.decks.get(deck.source) is not deck:  # removed while loading
                await player.close()
                return
            deck.player = player
            log.info("clip_loaded", production=self.production, source=deck.source)
            for command in deck.pending:  # what was asked while it loaded, now
                with contextlib.suppress(errors.InvalidArgument):  # a seek past its end
                    self._apply(deck, player, command)
            deck.pending.clear()
        if deck.error:
            metrics.CLIP_FAILURES.labels(self.production).inc()
            log.warning(
                "clip_failed", production=self.production, source=deck.source, error=deck.error
            )
        self.changed = True

    # -- commands ----------------------------------------------------------------------------

    def transport(self, command: Transport) -> None:
        deck = self.decks.get(command.source)
        if deck is None:
            raise errors.NotFound(
                f"{command.source!r} is not a clip of production {self.production}",
                field="transport.source",
            )
        if deck.error:
            raise errors.Conflict(
                f"{command.source} failed: {deck.error}", field="transport.source"
            )
        if deck.player is None:  # loading: it acts once the clip is open, in order
            deck.pending.append(command)
            return
        self._apply(deck, deck.player, command)

    def _apply(self, deck: Deck, player: Playout, command: Transport) -> None:
        if command.HasField("loop"):
            deck.loop = command.loop
            player.set_loop(command.loop)
        if command.end:
            deck.end = command.end
            player.set_end(command.end)
        if command.action:
            try:
                player.transport(command.action, command.position_ms)
            except ValueError as exc:
                raise errors.InvalidArgument(str(exc), field="transport") from None
        self.changed = True

    # -- the clock ---------------------------------------------------------------------------

    def tick(self, now: float) -> mixer_pb2.ClipStates | None:
        """Advance every clip one frame; the clips' states when they should be published (on a
        change, and every second while one plays)."""
        playing = False
        for deck in self.decks.values():
            player = deck.player
            if player is None:
                continue
            picture, sound = player.tick()
            if picture is None:
                self.feeds.clear_local(deck.source)
            else:
                self.feeds.put_local(deck.source, picture, now, now_us())
            if sound is not None:
                self.push_audio(deck.source, sound)
            if player.late_frames > deck.late_counted:
                metrics.CLIP_LATE_FRAMES.labels(self.production).inc(
                    player.late_frames - deck.late_counted
                )
                deck.late_counted = player.late_frames
            if player.ended:
                self._ended(deck)
            state = player.state()  # a still "plays" for ever: no countdown to publish
            playing |= state.state == mixer_pb2.CLIP_RUN_STATE_PLAYING and state.duration_ms > 0
        due = playing and now - self._last_event >= STATE_EVENTS_EVERY_S
        if not (self.changed or due):
            return None
        self.changed = False
        self._last_event = now
        return mixer_pb2.ClipStates(
            production=self.production, clips=self.states(), time_us=now_us()
        )

    def _ended(self, deck: Deck) -> None:
        self.changed = True
        log.info("clip_ended", production=self.production, source=deck.source, end=deck.end)
        if deck.end == mixer_pb2.CLIP_END_NEXT and self.on_end is not None:
            self._spawn(self.on_end(deck.source))

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("clip_end_failed", production=self.production)

        task = asyncio.create_task(run())
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    def states(self) -> list[mixer_pb2.ClipState]:
        return [deck.state() for deck in self.decks.values()]

    def remaining_s(self, source: str) -> float | None:
        """Seconds left of a playing or paused clip (for its multiview label), else None."""
        deck = self.decks.get(source)
        if deck is None or deck.player is None:
            return None
        state = deck.player.state()
        if not state.duration_ms:
            return None
        return state.remaining_ms / 1000

    async def close(self) -> None:
        for deck in self.decks.values():
            if deck.task is not None:
                deck.task.cancel()
        for deck in self.decks.values():
            if deck.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await deck.task
            if deck.player is not None:
                await deck.player.close()
        if self._ending:  # players being closed, a rundown moving on: let them finish
            await asyncio.wait(list(self._ending), timeout=CLOSE_WAIT_S)
        for task in list(self._ending):
            task.cancel()
        self.decks.clear()
