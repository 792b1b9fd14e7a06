"""The platform's health model: service instances, sources, productions and outputs.

It is built only from what travels on the bus (heartbeats, source state and stats, mixer state,
output state), so it needs no access to any service. `evaluate` is called regularly and turns
what is stale or stuck into alerts in the `AlertBook`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.gen.baycast.v1 import control_pb2, distribution_pb2, graphics_pb2, mixer_pb2
from services.common.lifecycle import HEARTBEAT_INTERVAL_S
from services.monitoring.alerts import AlertBook

MISSED_BEATS = 3
# An instance missing this long is forgotten (a pod that was replaced does not alarm forever).
FORGET_AFTER_S = 300.0
SOURCE_STATS_STALE_S = 3.0
OUTPUT_RETRYING_ALERT_S = 60.0
# Source quality limits: beyond them a reason is reported.
LOSS_DEGRADED = 0.02
LOSS_BAD = 0.10
JITTER_DEGRADED_MS = 50.0
RTT_DEGRADED_MS = 300.0
FPS_DEGRADED_RATIO = 0.8

QUALITY_OFFLINE = "offline"
QUALITY_BAD = "bad"
QUALITY_DEGRADED = "degraded"
QUALITY_GOOD = "good"
QUALITY_SCORE = {QUALITY_OFFLINE: 0, QUALITY_BAD: 1, QUALITY_DEGRADED: 2, QUALITY_GOOD: 3}

# An output that left `live` and is retrying keeps "retrying" through its reconnect attempts
# (retrying -> connecting -> retrying ...) until it is live again, stopped or failed.
STATUS_RETRYING = distribution_pb2.OUTPUT_STATUS_RETRYING
STATUS_CONNECTING = distribution_pb2.OUTPUT_STATUS_CONNECTING
STATUS_FAILED = distribution_pb2.OUTPUT_STATUS_FAILED

Clock = Callable[[], float]


def enum_word(enum: Any, value: int, prefix: str) -> str:
    """`OUTPUT_STATUS_RETRYING` -> `retrying`; a number this build does not know -> `unknown`."""
    if value not in enum.values():
        return "unknown"
    return str(enum.Name(value)).removeprefix(prefix).lower()


def status_word(status: int) -> str:
    return enum_word(distribution_pb2.OutputStatus, status, "OUTPUT_STATUS_")


@dataclass
class InstanceHealth:
    service: str
    instance: str
    beat: control_pb2.Heartbeat
    last_seen: float
    cpu_fraction: float = 0.0
    missing: bool = False

    @property
    def key(self) -> str:
        return f"{self.service}/{self.instance}"


@dataclass
class SourceHealth:
    source: str
    state: control_pb2.SourceState | None = None
    stats: control_pb2.SourceStats | None = None
    stats_at: float | None = None
    decode_errors_rising: bool = False
    lost: bool = False

    @property
    def online(self) -> bool:
        return self.state is not None and self.state.online

    def reasons(self, now: float) -> list[str]:
        if not self.online:
            return [self.state.reason or "offline"] if self.state else ["unknown"]
        out: list[str] = []
        if self.stats_at is not None and now - self.stats_at > SOURCE_STATS_STALE_S:
            out.append("stale")
        s = self.stats
        if s is None:
            return out
        out += [flag for flag in ("black", "frozen", "silent") if getattr(s, flag)]
        if s.loss_fraction > LOSS_DEGRADED:
            out.append("loss")
        if s.jitter_ms > JITTER_DEGRADED_MS:
            out.append("jitter")
        if s.rtt_ms > RTT_DEGRADED_MS:
            out.append("rtt")
        nominal = self.state.video.fps if self.state is not None else 0.0
        if nominal and s.fps < nominal * FPS_DEGRADED_RATIO:
            out.append("low_fps")
        if self.decode_errors_rising:
            out.append("decode_errors")
        return out

    def quality(self, now: float) -> str:
        if not self.online:
            return QUALITY_OFFLINE
        reasons = self.reasons(now)
        loss = self.stats.loss_fraction if self.stats else 0.0
        if {"stale", "black", "frozen"} & set(reasons) or loss > LOSS_BAD:
            return QUALITY_BAD
        return QUALITY_DEGRADED if reasons else QUALITY_GOOD


@dataclass
class OutputHealth:
    production: str
    output: str
    event: distribution_pb2.OutputState
    updated_at: float
    retrying_since: float | None = None

    @property
    def key(self) -> str:
        return f"{self.production}/{self.output}"

    @property
    def state(self) -> str:
        return status_word(self.event.status)

    @property
    def failed(self) -> bool:
        return self.event.status == STATUS_FAILED

    def retrying_for(self, now: float) -> float:
        return now - self.retrying_since if self.retrying_since is not None else 0.0


@dataclass
class ProductionHealth:
    production: str
    mixer: mixer_pb2.MixerState | None = None
    mixer_at: float | None = None
    # Graphics keyed on air, by instance id (from the graphics service's events).
    graphics: dict[str, graphics_pb2.GfxInstance] = field(default_factory=dict)


class HealthModel:
    def __init__(
        self,
        alerts: AlertBook,
        *,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        forget_after_s: float = FORGET_AFTER_S,
        output_retrying_alert_s: float = OUTPUT_RETRYING_ALERT_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.alerts = alerts
        self.missing_after_s = heartbeat_interval_s * MISSED_BEATS
        self.forget_after_s = forget_after_s
        self.output_retrying_alert_s = output_retrying_alert_s
        self.clock = clock
        self.instances: dict[str, InstanceHealth] = {}
        self.sources: dict[str, SourceHealth] = {}
        self.productions: dict[str, ProductionHealth] = {}
        self.outputs: dict[str, OutputHealth] = {}
        # `service_missing` alerts adopted from another replica about instances never seen
        # here, with when they were adopted: cleared by a beat, or forgotten like the others.
        self.inherited_missing: dict[str, float] = {}

    def adopt_alerts(self) -> None:
        """The book holds alerts raised by another replica (seeded or taken over): let them end
        the way they would here. Sources and outputs are judged again at their next event or
        evaluation; a missing instance is cleared by its next beat (or forgotten)."""
        now = self.clock()
        for key in list(self.alerts.active):
            if key.condition != "service_missing":
                continue
            known = self.instances.get(key.target)
            if known is not None:
                known.missing = True
            else:
                self.inherited_missing.setdefault(key.target, now)

    # -- events --------------------------------------------------------------------------------

    def heartbeat(self, beat: control_pb2.Heartbeat) -> None:
        now = self.clock()
        key = f"{beat.service}/{beat.instance}"
        known = self.instances.get(key)
        if known is None:
            self.instances[key] = InstanceHealth(beat.service, beat.instance, beat, now)
            if self.inherited_missing.pop(key, None) is not None:
                self.alerts.clear("service_missing", key, f"{key} is beating again")
            return
        elapsed = (beat.time_us - known.beat.time_us) / 1e6
        if elapsed > 0 and beat.started_at_us == known.beat.started_at_us:
            known.cpu_fraction = max(0.0, beat.cpu_seconds - known.beat.cpu_seconds) / elapsed
        known.beat, known.last_seen = beat, now
        if known.missing:
            known.missing = False
            self.alerts.clear("service_missing", key, f"{key} is beating again")

    def source_state(self, state: control_pb2.SourceState) -> None:
        health = self.sources.setdefault(state.source, SourceHealth(state.source))
        if health.state is not None:
            # An offline event may carry only the id and the reason: keep who the source is.
            for name in ("station", "name", "protocol"):
                if not getattr(state, name):
                    setattr(state, name, getattr(health.state, name))
        health.state = state
        if state.online:
            health.stats_at = None  # staleness counts from the first stats of this session
            self._set_lost(health, False, f"source {state.source} is online")
        else:
            self._set_lost(health, True, f"source {state.source} went offline: {state.reason}")

    def seed_source(self, state: control_pb2.SourceState) -> None:
        """What the source is now, read at start-up (no alert for what was already so)."""
        health = self.sources.setdefault(state.source, SourceHealth(state.source))
        health.state = state
        health.lost = not state.online

    def source_stats(self, stats: control_pb2.SourceStats) -> None:
        health = self.sources.setdefault(stats.source, SourceHealth(stats.source))
        previous = health.stats
        health.decode_errors_rising = (
            previous is not None and stats.decode_errors > previous.decode_errors
        )
        health.stats, health.stats_at = stats, self.clock()
        if health.online:
            self._set_lost(health, False, f"source {stats.source} reports again")

    def mixer_state(self, state: mixer_pb2.MixerState) -> None:
        production = self.production(state.production)
        production.mixer, production.mixer_at = state, self.clock()

    def gfx_state(self, state: graphics_pb2.GfxState) -> None:
        graphics = self.production(state.production).graphics
        if state.event == "hidden":
            graphics.pop(state.instance.id, None)
        else:
            graphics[state.instance.id] = state.instance

    def production(self, production_id: str) -> ProductionHealth:
        return self.productions.setdefault(production_id, ProductionHealth(production_id))

    def output_state(self, event: distribution_pb2.OutputState) -> None:
        now = self.clock()
        key = f"{event.production}/{event.id}"
        known = self.outputs.get(key)
        if known is None:
            known = self.outputs[key] = OutputHealth(event.production, event.id, event, now)
        known.event, known.updated_at = event, now
        if event.status == STATUS_RETRYING:
            if known.retrying_since is None:
                known.retrying_since = now
        elif event.status != STATUS_CONNECTING:
            known.retrying_since = None
        self.production(event.production)
        self._evaluate_output(known, now)

    # -- evaluation ----------------------------------------------------------------------------

    def bus_restored(self) -> None:
        """The bus was away: silence during the outage was ours, not theirs. Count from now."""
        now = self.clock()
        for inst in self.instances.values():
            inst.last_seen = max(inst.last_seen, now)
        for source in self.sources.values():
            if source.stats_at is not None:
                source.stats_at = max(source.stats_at, now)

    def evaluate(self) -> None:
        now = self.clock()
        for key, inst in list(self.instances.items()):
            silent_for = now - inst.last_seen
            if silent_for > self.forget_after_s:
                del self.instances[key]
                self.alerts.clear(
                    "service_missing", key, f"{key} forgotten after {silent_for:.0f} s"
                )
            elif silent_for > self.missing_after_s and not inst.missing:
                inst.missing = True
                self.alerts.raise_(
                    "service_missing",
                    key,
                    f"{key} missed {MISSED_BEATS} heartbeats (last seen {silent_for:.1f} s ago)",
                    silent_for,
                )
        for key, since in list(self.inherited_missing.items()):
            if not self.alerts.is_active("service_missing", key):
                del self.inherited_missing[key]
            elif now - since > self.forget_after_s:
                del self.inherited_missing[key]
                self.alerts.clear("service_missing", key, f"{key} forgotten")
        for source in self.sources.values():
            if source.online and source.stats_at is not None:
                stale_for = now - source.stats_at
                if stale_for > SOURCE_STATS_STALE_S:
                    self._set_lost(
                        source, True, f"source {source.source} sent no stats for {stale_for:.1f} s"
                    )
        for output in self.outputs.values():
            self._evaluate_output(output, now)

    def _set_lost(self, source: SourceHealth, lost: bool, message: str) -> None:
        source.lost = lost
        self.alerts.set("source_lost", source.source, lost, message)

    def _evaluate_output(self, output: OutputHealth, now: float) -> None:
        retrying_for = output.retrying_for(now)
        self.alerts.set(
            "output_retrying",
            output.key,
            retrying_for > self.output_retrying_alert_s,
            f"output {output.key} retrying for {retrying_for:.0f} s"
            + (f": {output.event.reason}" if output.event.reason else "")
            if retrying_for
            else f"output {output.key} is {output.state}",
            retrying_for,
        )
        self.alerts.set(
            "output_failed",
            output.key,
            output.failed,
            f"output {output.key} failed: {output.event.reason or 'given up'}"
            if output.failed
            else f"output {output.key} is {output.state}",
        )

    # -- views ---------------------------------------------------------------------------------

    def sources_online(self) -> int:
        return sum(1 for s in self.sources.values() if s.online)


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: unknown or silent readings are null."""
    return value if math.isfinite(value) else None
