"""Each production's tally and talkback as its mixer last told them.

The mixer publishes `prod.<prod>.tally` whenever the program/preview set changes and
`prod.<prod>.mixer.state` (which carries the tally and the talkbacks under way) on every change.
Events alone would leave a freshly started distribution dark until the next switch, so for every
production in the productions mirror it also asks the mixer (`MixerCommand.get`), retrying while
no mixer answers, until a reply or a state event has arrived.

Tallies are ordered by their `time_us`: an older one (a state event that overtook a tally event,
a restarted mixer's all-off first state) never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import structlog

from services.common import errors
from services.common.bus import PREFIX, Bus, subject, subject_token
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.kv_mirror import KvMirror
from services.common.tasks import cancel_and_wait

GET_TIMEOUT_S = 2.0
GET_RETRY_MIN_S = 0.5
GET_RETRY_MAX_S = 5.0

log = structlog.get_logger("switcher_watch")

TallyListener = Callable[[str, mixer_pb2.Tally | None, mixer_pb2.Tally | None], None]
TalkListener = Callable[[str, list[mixer_pb2.TalkState]], None]


class SwitcherWatch:
    """Tally and talkback per production, with listeners called on each change."""

    def __init__(self, bus: Bus, productions: KvMirror[mixer_pb2.Production]) -> None:
        self.bus = bus
        self.productions = productions
        self.tallies: dict[str, mixer_pb2.Tally] = {}
        self.talk: dict[str, list[mixer_pb2.TalkState]] = {}
        self._state_time: dict[str, int] = {}
        self._tally_listeners: list[TallyListener] = []
        self._talk_listeners: list[TalkListener] = []
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._subscriptions: list[Any] = []
        self._closed = False

    def on_tally(self, listener: TallyListener) -> None:
        """Call `listener(production, before, after)` on each change (after None: gone)."""
        self._tally_listeners.append(listener)

    def on_talk(self, listener: TalkListener) -> None:
        """Call `listener(production, talks)` when a production's talkbacks change."""
        self._talk_listeners.append(listener)

    async def start(self) -> None:
        self._subscriptions.append(
            await self.bus.subscribe(PREFIX + "prod.*.tally", mixer_pb2.Tally, self._on_tally)
        )
        self._subscriptions.append(
            await self.bus.subscribe(
                PREFIX + "prod.*.mixer.state", mixer_pb2.MixerState, self._on_state
            )
        )
        self.productions.on_change(self._production_changed)
        for production in list(self.productions.items()):
            self._fetch(production)

    async def close(self) -> None:
        self._closed = True
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions.clear()
        tasks = list(self._fetches.values())
        self._fetches.clear()
        await cancel_and_wait(tasks)

    # -- reads ---------------------------------------------------------------------------------

    def station_tally(self, production: str, source: str) -> tuple[bool, bool]:
        """(program, preview) of `source` in `production` (off when unknown)."""
        tally = self.tallies.get(production)
        if tally is not None:
            for entry in tally.sources:
                if entry.source == source:
                    return entry.program, entry.preview
        return False, False

    def talking_to(self, production: str, station: str) -> mixer_pb2.TalkState | None:
        """The talkback `station` hears in `production` now, if any."""
        for talk in self.talk.get(production, []):
            if station in talk.stations:
                return talk
        return None

    # -- events --------------------------------------------------------------------------------

    async def _on_tally(self, tally: mixer_pb2.Tally, subj: str) -> None:
        self.apply_tally(subject_token(subj, 1), tally)

    async def _on_state(self, state: mixer_pb2.MixerState, subj: str) -> None:
        self.apply_state(subject_token(subj, 1), state)

    def apply_state(self, production: str, state: mixer_pb2.MixerState) -> None:
        """A MixerState (an event or the reply to `get`): its tally and its talkbacks."""
        if self.productions.get(production) is None:
            return  # a production being deleted: its last events must not bring it back
        fetch = self._fetches.pop(production, None)
        if fetch is not None and fetch is not asyncio.current_task():
            fetch.cancel()
        if state.HasField("tally"):
            self.apply_tally(production, state.tally)
        if state.time_us < self._state_time.get(production, 0):
            return
        self._state_time[production] = state.time_us
        talk = list(state.talk)
        if talk != self.talk.get(production, []):
            self.talk[production] = talk
            for listener in self._talk_listeners:
                self._call(listener, production, talk)

    def apply_tally(self, production: str, tally: mixer_pb2.Tally) -> None:
        if self.productions.get(production) is None:
            return
        before = self.tallies.get(production)
        if before is not None and (
            tally.time_us < before.time_us or list(tally.sources) == list(before.sources)
        ):
            return
        after = mixer_pb2.Tally()
        after.CopyFrom(tally)
        after.production = production
        self.tallies[production] = after
        for listener in self._tally_listeners:
            self._call(listener, production, before, after)

    def _call(self, listener: Callable[..., None], *args: Any) -> None:
        try:
            listener(*args)
        except Exception:
            log.exception("switcher_listener_failed", production=args[0])

    # -- productions ---------------------------------------------------------------------------

    def _production_changed(self, production: str, value: mixer_pb2.Production | None) -> None:
        if value is not None:
            if production not in self.tallies and production not in self._fetches:
                self._fetch(production)
            return
        fetch = self._fetches.pop(production, None)
        if fetch is not None:
            fetch.cancel()
        self._state_time.pop(production, None)
        before = self.tallies.pop(production, None)
        if before is not None:
            for tally_listener in self._tally_listeners:
                self._call(tally_listener, production, before, None)
        if self.talk.pop(production, []):
            for talk_listener in self._talk_listeners:
                self._call(talk_listener, production, [])

    def _fetch(self, production: str) -> None:
        if self._closed:
            return
        self._fetches[production] = asyncio.create_task(
            self._get(production), name=f"switcher-get-{production}"
        )

    async def _get(self, production: str) -> None:
        """Ask the production's mixer for its state until one answers (or an event came)."""
        delay = GET_RETRY_MIN_S
        command = mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
        while True:
            try:
                state = await self.bus.request(
                    subject("prod", production, "mixer", "cmd"),
                    command,
                    mixer_pb2.MixerState,
                    timeout=GET_TIMEOUT_S,
                )
            except errors.BaycastError as exc:
                log.debug("switcher_get_retry", production=production, error=exc.message)
            except Exception as exc:  # NATS away or closing: the next try tells
                log.debug("switcher_get_retry", production=production, error=type(exc).__name__)
            else:
                self.apply_state(production, state)
                self._fetches.pop(production, None)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, GET_RETRY_MAX_S)
