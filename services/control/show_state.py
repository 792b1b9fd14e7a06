"""The latest state of every production, source and alert, kept from the bus for the pages.

The service subscribes once to every event a control room shows and keeps the newest of each:
switcher state, tally, audio levels, the program's loudness (monitoring), rundown, graphics on
air, outputs, the exchange (viewers, cues), sources and their stats, alerts. Each event is
handed on to the event streams as it arrives; a new stream first gets `snapshot()`, so a page
renders without asking for anything.
What no event has told yet (a switcher that has not changed since the service started) is asked
for once with the same read commands the API sends (`fill`).

Event names are the subject after `baycast.v1.prod.<prod>.` (or `baycast.v1.`), without the id
that varies (an output's, a source's, an alert's severity): `mixer.state`, `dist.output.state`,
`source.stats`, `alert`. `EVENTS` lists them with the message each carries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import PREFIX, Bus, encode, subject, subject_token
from services.common.exchange_shares import ExchangeShares
from services.common.gen.baycast.v1 import (
    control_pb2,
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    monitoring_pb2,
    rundown_pb2,
)
from services.common.kv_mirror import KvMirror
from services.control import metrics

log = structlog.get_logger("control.state")

# name -> (subject pattern after the prefix, message); `prod` patterns carry the production.
EVENTS: dict[str, tuple[str, type[Message]]] = {
    "mixer.state": ("prod.*.mixer.state", mixer_pb2.MixerState),
    "mixer.levels": ("prod.*.mixer.levels", mixer_pb2.AudioLevels),
    "tally": ("prod.*.tally", mixer_pb2.Tally),
    "rundown.state": ("prod.*.rundown.state", rundown_pb2.RundownStatus),
    "gfx.state": ("prod.*.gfx.state", graphics_pb2.GfxState),
    "dist.output.state": ("prod.*.dist.output.*.state", distribution_pb2.OutputState),
    "exchange.state": ("prod.*.exchange.state", exchange_pb2.ExchangeState),
    "cue": ("prod.*.cue", exchange_pb2.Cue),
    "asrun": ("prod.*.asrun", rundown_pb2.AsRunEntry),
    "source.state": ("source.*.state", control_pb2.SourceState),
    "source.stats": ("source.*.stats", control_pb2.SourceStats),
    "alert": ("alert.*", monitoring_pb2.Alert),
    "loudness": ("prod.*.loudness", monitoring_pb2.ProgramLoudness),
}
# Only in snapshots: what is on air in graphics, as one message.
SNAPSHOT_EVENTS: dict[str, type[Message]] = {"gfx.scene": graphics_pb2.GfxScene}

Read = Callable[[str, str, Message, type[Message]], Awaitable[Message]]


@dataclass(frozen=True)
class Event:
    name: str
    production: str  # "" for the platform's events (sources, alerts)
    data: str  # the message's canonical JSON, one line

    @classmethod
    def of(cls, name: str, production: str, message: Message) -> Event:
        return cls(name, production, encode(message).decode())

    def frame(self) -> bytes:
        return f"event: {self.name}\ndata: {self.data}\n\n".encode()


@dataclass
class ProductionState:
    mixer: mixer_pb2.MixerState | None = None
    tally: mixer_pb2.Tally | None = None
    levels: mixer_pb2.AudioLevels | None = None
    loudness: monitoring_pb2.ProgramLoudness | None = None
    rundown: rundown_pb2.RundownStatus | None = None
    scene: dict[str, graphics_pb2.GfxInstance] | None = None
    outputs: dict[str, distribution_pb2.OutputState] | None = None
    exchange: exchange_pb2.ExchangeState | None = None

    def events(self, production: str) -> list[Event]:
        out = [
            Event.of(name, production, message)
            for name, message in (
                ("mixer.state", self.mixer),
                ("tally", self.tally),
                ("mixer.levels", self.levels),
                ("loudness", self.loudness),
                ("rundown.state", self.rundown),
                ("exchange.state", self.exchange),
            )
            if message is not None
        ]
        if self.scene is not None:
            scene = graphics_pb2.GfxScene(production=production, instances=self.scene.values())
            out.append(Event.of("gfx.scene", production, scene))
        for _, output in sorted((self.outputs or {}).items()):
            out.append(Event.of("dist.output.state", production, output))
        return out


@dataclass
class ShowState:
    bus: Bus
    sources: KvMirror[control_pb2.SourceState]
    publish: Callable[[Event], None]
    # Whether any stream listens: events are encoded for the streams only when one does.
    listening: Callable[[], bool] = lambda: True
    productions: dict[str, ProductionState] = field(default_factory=dict)
    stats: dict[str, control_pb2.SourceStats] = field(default_factory=dict)
    alerts: dict[str, monitoring_pb2.Alert] = field(default_factory=dict)
    # Each distribution replica's viewers, merged into the production's exchange state.
    exchange: ExchangeShares = field(default_factory=ExchangeShares)

    def production(self, production: str) -> ProductionState:
        return self.productions.setdefault(production, ProductionState())

    def forget(self, production: str) -> None:
        self.productions.pop(production, None)
        self.exchange.forget(production)

    async def start(self) -> None:
        for name, (pattern, message_type) in EVENTS.items():
            await self.bus.subscribe(PREFIX + pattern, message_type, self._handler(name))

    def _handler(self, name: str) -> Callable[[Message, str], Awaitable[None]]:
        async def on_event(message: Message, subj: str) -> None:
            production = subject_token(subj, 1) if subj.startswith(PREFIX + "prod.") else ""
            self.apply(name, production, message)
            if isinstance(message, exchange_pb2.ExchangeState):
                # The pages get every replica's viewers, not the share just heard.
                merged = self.production(production).exchange
                message = merged if merged is not None else message
            if self.listening():
                metrics.EVENTS.labels(name).inc()
                self.publish(Event.of(name, production, message))

        return on_event

    def apply(self, name: str, production: str, message: Message) -> None:
        """Keep what `message` says as the newest state."""
        if name == "source.stats":
            assert isinstance(message, control_pb2.SourceStats)
            self.stats[message.source] = message
        elif name == "source.state":
            assert isinstance(message, control_pb2.SourceState)
            if not message.online:
                self.stats.pop(message.source, None)
        elif name == "alert":
            assert isinstance(message, monitoring_pb2.Alert)
            if message.state == monitoring_pb2.ALERT_STATE_CLEARED:
                self.alerts.pop(message.id, None)
            else:
                self.alerts[message.id] = message
        elif isinstance(message, exchange_pb2.ExchangeState) and production:
            self.exchange.add(message)
            self.production(production).exchange = self.exchange.merged(production)
        elif production:
            self._apply_production(name, self.production(production), message)

    @staticmethod
    def _apply_production(name: str, state: ProductionState, message: Message) -> None:
        if isinstance(message, mixer_pb2.MixerState):
            state.mixer = message
            state.tally = message.tally if message.HasField("tally") else state.tally
        elif isinstance(message, mixer_pb2.Tally):
            state.tally = message
        elif isinstance(message, mixer_pb2.AudioLevels):
            state.levels = message
        elif isinstance(message, monitoring_pb2.ProgramLoudness):
            state.loudness = message
        elif isinstance(message, rundown_pb2.RundownStatus):
            state.rundown = message
        elif isinstance(message, graphics_pb2.GfxState) and state.scene is not None:
            if message.event == "hidden":
                state.scene.pop(message.instance.id, None)
            else:
                state.scene[message.instance.id] = message.instance
        elif isinstance(message, distribution_pb2.OutputState) and state.outputs is not None:
            state.outputs[message.id] = message

    # -- what a new stream gets first -----------------------------------------------------------

    def snapshot(self, production: str | None) -> list[Event]:
        """Events that bring a page up to date: one production's (or all) and the platform's."""
        out: list[Event] = []
        for prod, state in sorted(self.productions.items()):
            if production is None or prod == production:
                out += state.events(prod)
        for _, source in sorted(self.sources.items().items()):
            out.append(Event.of("source.state", "", source))
        for _, stats in sorted(self.stats.items()):
            out.append(Event.of("source.stats", "", stats))
        for _, alert in sorted(self.alerts.items()):
            out.append(Event.of("alert", "", alert))
        return out

    async def fill(self, production: str, read: Read, timeout: float) -> None:
        """Ask for what no event has told about `production` yet (each part on its own)."""
        state = self.production(production)
        parts: list[Awaitable[None]] = []
        if state.mixer is None:
            parts.append(self._fill_mixer(production, read))
        if state.rundown is None:
            parts.append(self._fill_rundown(production, read))
        if state.scene is None:
            parts.append(self._fill_scene(production, read))
        if state.outputs is None:
            parts.append(self._fill_outputs(production, read))
        if state.exchange is None:
            parts.append(self._fill_exchange(production, read))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*parts)

    async def _fill_mixer(self, production: str, read: Read) -> None:
        get = mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
        with contextlib.suppress(errors.BaycastError):
            reply = await read(production, "mixer", get, mixer_pb2.MixerState)
            self._apply_production("mixer.state", self.production(production), reply)

    async def _fill_rundown(self, production: str, read: Read) -> None:
        status = rundown_pb2.RundownCommand(status=rundown_pb2.RundownCommand.Status())
        with contextlib.suppress(errors.BaycastError):
            reply = await read(production, "rundown", status, rundown_pb2.RundownStatus)
            self._apply_production("rundown.state", self.production(production), reply)

    async def _fill_scene(self, production: str, read: Read) -> None:
        command = graphics_pb2.GfxCommand(list=graphics_pb2.GfxList())
        with contextlib.suppress(errors.BaycastError):
            reply = await read(production, "gfx", command, graphics_pb2.GfxReply)
            assert isinstance(reply, graphics_pb2.GfxReply)
            self.production(production).scene = {i.id: i for i in reply.instances}

    async def _fill_outputs(self, production: str, read: Read) -> None:
        command = distribution_pb2.DistCommand(list=distribution_pb2.ListOutputs())
        with contextlib.suppress(errors.BaycastError):
            reply = await read(production, "dist", command, distribution_pb2.DistReply)
            assert isinstance(reply, distribution_pb2.DistReply)
            self.production(production).outputs = {o.id: o for o in reply.outputs}

    async def _fill_exchange(self, production: str, read: Read) -> None:
        command = exchange_pb2.ExchangeCommand(cues=exchange_pb2.ExchangeCommand.ListCues())
        with contextlib.suppress(errors.BaycastError):
            reply = await read(production, "exchange", command, exchange_pb2.ExchangeReply)
            assert isinstance(reply, exchange_pb2.ExchangeReply)
            state = self.production(production)
            if state.exchange is None:
                state.exchange = exchange_pb2.ExchangeState(production=production, cues=reply.cues)

    async def load_alerts(self) -> None:
        """The alerts raised before this service started, from monitoring (best effort)."""
        try:
            reply = await self.bus.request(
                subject("monitoring", "alerts"),
                monitoring_pb2.AlertsRequest(),
                monitoring_pb2.AlertList,
                timeout=2.0,
            )
        except errors.BaycastError as exc:
            log.info("alerts_not_loaded", reason=exc.message)
            return
        for alert in reply.alerts:
            self.alerts.setdefault(alert.id, alert)
