"""Talkback (IFB): the director's voice in the returns of the stations they talk to.

`MixerCommand.Talk` names a talk source (an ingest source, `talk_<operator>` for a director's
microphone published over WHIP) and the stations that hear it. While it is on, those stations'
mix-minus is ducked by `TALKBACK_DUCK_DB` with the talk source on top (the mixing is the audio
mixer's); the program, clean and multiview sound never carry it. Several talk sources may be heard
at once and add up. Talkback is not durable: a restarted mixer starts with none, since a director
holding a talk button is a moment, not a setting.

A talk source's audio is subscribed the first time it is named and stays subscribed while the
production runs, so the next press costs no subscription.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from services.common import errors
from services.common.asrun import write_asrun
from services.common.bus import Bus, acting_operator
from services.common.gen.baycast.v1 import mixer_pb2, rundown_pb2
from services.common.media import now_us
from services.common.media_library import CLIP_PREFIX
from services.mixer import metrics
from services.mixer.audio_mixer import AudioMixer
from services.mixer.feeds import FeedSet
from services.mixer.productions import check_id

# Each talk source stays subscribed while the production runs: bound how many one can name.
MAX_TALK_SOURCES = 16
NOT_A_RUNDOWN_SEGMENT = -1

log = structlog.get_logger("mixer.talkback")


@dataclass
class TalkChange:
    """What one Talk command did: `source` now heard by `started`, no longer by `ended`."""

    source: str
    started: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.started or self.ended)


class TalkRoster:
    """Who hears which talk source: the rules, without I/O."""

    def __init__(self, production: mixer_pb2.Production) -> None:
        self.production_id = production.id
        self.stations = [s.id for s in production.sources if not s.id.startswith(CLIP_PREFIX)]
        self.talks: dict[str, mixer_pb2.TalkState] = {}  # talk source -> its talk
        self.used: set[str] = set()  # every talk source named since the production started
        self.heard: Mapping[str, frozenset[str]] = {}  # station -> talk sources it hears

    def check(self, talk: mixer_pb2.MixerCommand.Talk) -> list[str]:
        """The stations `talk` names; InvalidArgument naming the field when it is not valid."""
        check_id(talk.source, "talk.source")
        if talk.all and talk.stations:
            raise errors.InvalidArgument("name stations or all, not both", field="talk.all")
        if not talk.all and not talk.stations:
            raise errors.InvalidArgument("name the stations or all", field="talk.stations")
        known = set(self.stations)
        for station in talk.stations:
            if station not in known:
                raise errors.InvalidArgument(
                    f"talk.stations: {station!r} is not a source of production "
                    f"{self.production_id}",
                    field="talk.stations",
                )
        if talk.source not in self.used and len(self.used) >= MAX_TALK_SOURCES:
            raise errors.ResourceExhausted(
                f"a production takes at most {MAX_TALK_SOURCES} talk sources", field="talk.source"
            )
        return list(self.stations) if talk.all else list(dict.fromkeys(talk.stations))

    def apply(self, talk: mixer_pb2.MixerCommand.Talk, operator: str, time_us: int) -> TalkChange:
        """Validate, then change who hears `talk.source`; an empty change is not an error."""
        named = self.check(talk)
        self.used.add(talk.source)
        current = self.talks.get(talk.source)
        hearing = list(current.stations) if current is not None else []
        change = TalkChange(talk.source)
        if talk.on:
            change.started = [s for s in named if s not in hearing]
            hearing += change.started
        else:
            change.ended = [s for s in hearing if s in named]
            hearing = [s for s in hearing if s not in named]
        if not change:
            return change
        if not hearing:
            del self.talks[talk.source]
        elif current is None:
            self.talks[talk.source] = mixer_pb2.TalkState(
                source=talk.source, stations=hearing, since_us=time_us, operator=operator
            )
        else:
            del current.stations[:]
            current.stations.extend(hearing)
            if change.started and operator:
                current.operator = operator
        heard: dict[str, set[str]] = {}
        for state in self.talks.values():
            for station in state.stations:
                heard.setdefault(station, set()).add(state.source)
        self.heard = {station: frozenset(sources) for station, sources in heard.items()}
        return change

    def states(self) -> list[mixer_pb2.TalkState]:
        return [self.talks[source] for source in sorted(self.talks)]


class Talkback:
    """One production's talkback: the roster, the talk sources' audio, as-run and metrics."""

    def __init__(
        self, production: mixer_pb2.Production, bus: Bus, audio: AudioMixer, feeds: FeedSet
    ) -> None:
        self.roster = TalkRoster(production)
        self.production_id = production.id
        self.bus = bus
        self.audio = audio
        self.feeds = feeds
        for station in self.roster.stations:
            metrics.TALKBACK_ACTIVE.labels(self.production_id, station).set(0)

    @property
    def heard(self) -> Mapping[str, frozenset[str]]:
        """Station -> the talk sources in its mix-minus now (read every frame)."""
        return self.roster.heard

    def states(self) -> list[mixer_pb2.TalkState]:
        return self.roster.states()

    async def command(self, talk: mixer_pb2.MixerCommand.Talk) -> bool:
        """Apply a Talk command; True when it changed who hears what."""
        operator = acting_operator()
        try:
            change = self.roster.apply(talk, operator, now_us())
        except errors.BaycastError:
            metrics.COMMANDS.labels(self.production_id, "refused").inc()
            raise
        metrics.COMMANDS.labels(self.production_id, "ok").inc()
        # Subscribed on first use, even by a release: the next press finds the voice flowing.
        self.audio.add_talk_input(talk.source)
        self.feeds.start_audio([talk.source])
        if not change:
            return False
        for station in change.started:
            metrics.TALKBACK_ACTIVE.labels(self.production_id, station).set(1)
        for station in change.ended:
            if station not in self.roster.heard:
                metrics.TALKBACK_ACTIVE.labels(self.production_id, station).set(0)
        on = bool(change.started)
        stations = change.started or change.ended
        log.info(
            "talkback",
            production=self.production_id,
            source=talk.source,
            on=on,
            stations=stations,
            operator=operator,
        )
        await write_asrun(
            self.bus,
            rundown_pb2.AsRunEntry(
                production=self.production_id,
                time_us=now_us(),
                segment=NOT_A_RUNDOWN_SEGMENT,
                cue="talk",
                detail=f"{talk.source} {'on' if on else 'off'}: {', '.join(stations)}",
                ok=True,
                operator=operator,
            ),
        )
        return True

    def set_stations(self, stations: list[str]) -> None:
        """The production's sources changed while it runs: a removed station stops hearing
        talkback (no as-run entry: the station left), a new one can be talked to."""
        removed = set(self.roster.stations) - set(stations)
        for talk in list(self.roster.talks.values()):
            leaving = [s for s in talk.stations if s in removed]
            if leaving:
                off = mixer_pb2.MixerCommand.Talk(source=talk.source, stations=leaving, on=False)
                self.roster.apply(off, "", now_us())
        for station in removed:
            with contextlib.suppress(KeyError):
                metrics.TALKBACK_ACTIVE.remove(self.production_id, station)
        for station in stations:
            if station not in self.roster.stations:
                metrics.TALKBACK_ACTIVE.labels(self.production_id, station).set(0)
        self.roster.stations = list(stations)

    def close(self) -> None:
        """Forget the production's talkback gauges (it stops here, maybe to run elsewhere)."""
        for station in self.roster.stations:
            with contextlib.suppress(KeyError):
                metrics.TALKBACK_ACTIVE.remove(self.production_id, station)
