"""The monitoring service: wiring of the health model, program watchers, alerts and HTTP views.

Each program's loudness is judged against its production's target, from a mirror of the
productions bucket (`loudness_targets.py`). Every replica judges everything; the one on duty
(services/monitoring/alert_duty.py) publishes the alerts and the programs' loudness and answers
`monitoring.alerts`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json

import nats.js.errors
from aiohttp import web
from prometheus_client import REGISTRY

from services.common.bus import PREFIX, PRODUCTIONS_BUCKET, KvBucket, subject
from services.common.gen.baycast.v1 import (
    control_pb2,
    distribution_pb2,
    graphics_pb2,
    mixer_pb2,
    monitoring_pb2,
)
from services.common.handles import HandleDirectory
from services.common.kv_mirror import KvMirror
from services.common.lifecycle import BaseService, run
from services.common.settings import load_settings
from services.common.telemetry import configure_logging
from services.monitoring.alert_duty import AlertDuty
from services.monitoring.alerts import AlertBook, AlertPublisher
from services.monitoring.health import HealthModel
from services.monitoring.loudness_targets import targets_from
from services.monitoring.metrics import MonitoringCollector
from services.monitoring.program_watcher import ProgramWatchers
from services.monitoring.settings import MonitoringSettings
from services.monitoring.status_page import build_status, render_html

# Ingest keeps the current SourceState of every source in this key-value bucket.
SOURCES_BUCKET = "sources"


class MonitoringService(BaseService[MonitoringSettings]):
    name = "monitoring"

    async def setup(self) -> None:
        s = self.settings
        self.thresholds = s.thresholds
        self.publisher = AlertPublisher(self.bus)
        self.alerts = AlertBook(s.instance, self.publisher.put)
        self.health = HealthModel(
            self.alerts,
            heartbeat_interval_s=s.heartbeat_interval_s,
            forget_after_s=s.forget_missing_s,
            output_retrying_alert_s=s.output_retrying_alert_s,
        )
        self.productions = await KvMirror.open(self.bus, PRODUCTIONS_BUCKET, mixer_pb2.Production)
        self.programs = ProgramWatchers(
            HandleDirectory(self.bus),
            self.channels,
            self.alerts,
            s.rendition,
            self.thresholds,
            interval_s=s.discovery_interval_s,
            subscriber=f"monitoring-{s.instance}",
            spawn=self.spawn,
            on_loudness=self._publish_loudness,
            target_of=targets_from(self.productions, s.loudness_target_lufs),
        )
        self.watchers = self.programs.watchers
        self._seen_disconnects = self.bus.disconnects

        self.duty = AlertDuty(
            self.bus,
            s,
            self.alerts,
            self.publisher,
            adopt=self._adopt_alerts,
            stopping=self.stopping,
        )
        self.collector = MonitoringCollector(
            self.health,
            self.watchers,
            self.alerts,
            self.bus,
            self.thresholds,
            on_duty=lambda: self.duty.on_duty,
        )
        REGISTRY.register(self.collector)

        await self._seed_sources()
        # The book starts from what was published as firing (after the sources, so that a
        # source already offline is known as such), then the duty is held or waited for.
        await self.duty.open()
        await self.bus.subscribe(
            PREFIX + "svc.*.*.heartbeat", control_pb2.Heartbeat, self._on_heartbeat
        )
        await self.bus.subscribe(
            PREFIX + "source.*.state", control_pb2.SourceState, self._on_source_state
        )
        await self.bus.subscribe(
            PREFIX + "source.*.stats", control_pb2.SourceStats, self._on_source_stats
        )
        await self.bus.subscribe(
            PREFIX + "prod.*.mixer.state", mixer_pb2.MixerState, self._on_mixer_state
        )
        await self.bus.subscribe(
            PREFIX + "prod.*.gfx.state", graphics_pb2.GfxState, self._on_gfx_state
        )
        await self.bus.subscribe(
            PREFIX + "prod.*.dist.output.*.state",
            distribution_pb2.OutputState,
            self._on_output_state,
        )
        self.http.app.router.add_get("/", self._page)
        self.http.app.router.add_get("/status", self._status_json)
        self.spawn(self.publisher.run(), "alert-publisher")
        self.spawn(self.programs.run(), "program-discovery")
        self.spawn(self._evaluate_loop(), "evaluate")

    async def before_drain(self) -> None:
        # Hand the duty over at once (queued events sent, firing record stored, lease released).
        await self.duty.close()

    async def teardown(self) -> None:
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(self.collector)
        await self.programs.close()
        await self.productions.close()

    def _publish_loudness(self, reading: monitoring_pb2.ProgramLoudness) -> None:
        """The program's loudness for the control room's meters (fire and forget: a reading
        lost while the bus is away is replaced a fifth of a second later)."""
        if self.bus.connected and self.duty.on_duty:
            task = asyncio.ensure_future(
                self.bus.publish(subject("prod", reading.production, "loudness"), reading)
            )
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _adopt_alerts(self) -> None:
        self.health.adopt_alerts()
        self.programs.adopt_alerts()

    async def _seed_sources(self) -> None:
        """Start from the sources ingest holds now, so a restart does not forget who is live."""
        try:
            store = await self.bus.nc.jetstream().key_value(SOURCES_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            return  # ingest has not run yet: its events will tell
        for state in (await KvBucket(store, control_pb2.SourceState).items()).values():
            self.health.seed_source(state)

    # -- bus events ----------------------------------------------------------------------------

    async def _on_heartbeat(self, beat: control_pb2.Heartbeat, _subject: str) -> None:
        self.health.heartbeat(beat)

    async def _on_source_state(self, state: control_pb2.SourceState, _subject: str) -> None:
        self.health.source_state(state)

    async def _on_source_stats(self, stats: control_pb2.SourceStats, _subject: str) -> None:
        self.health.source_stats(stats)

    async def _on_mixer_state(self, state: mixer_pb2.MixerState, subj: str) -> None:
        if not state.production:
            state.production = subj.split(".")[3]
        self.health.mixer_state(state)

    async def _on_gfx_state(self, state: graphics_pb2.GfxState, subj: str) -> None:
        state.production = state.production or subj.split(".")[3]
        self.health.gfx_state(state)

    async def _on_output_state(self, state: distribution_pb2.OutputState, subj: str) -> None:
        # baycast.v1.prod.<prod>.dist.output.<output>.state
        parts = subj.split(".")
        state.production = state.production or parts[3]
        state.id = state.id or parts[6]
        self.health.output_state(state)

    # -- loops ---------------------------------------------------------------------------------

    async def _evaluate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.evaluate_interval_s)
            if self.stopping.is_set():
                continue
            # While the bus is away nothing can beat or report to us: judge nobody by it.
            if self._evaluate_bus():
                self.health.evaluate()

    def _evaluate_bus(self) -> bool:
        """Raise or clear `nats_disconnected`; True while the bus is up."""
        target = f"monitoring/{self.settings.instance}"
        blipped = self.bus.disconnects > self._seen_disconnects
        self._seen_disconnects = self.bus.disconnects
        if blipped or not self.bus.connected:
            self.alerts.raise_("nats_disconnected", target, f"{target} lost its connection to NATS")
        if not self.bus.connected:
            return False
        if self.alerts.clear("nats_disconnected", target, f"{target} is connected to NATS again"):
            self.health.bus_restored()
        return True

    # -- HTTP ----------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        return build_status(
            self.health, self.watchers, self.alerts, self.bus, on_duty=self.duty.on_duty
        )

    async def _status_json(self, _request: web.Request) -> web.Response:
        return web.json_response(
            self.status(), dumps=functools.partial(json.dumps, ensure_ascii=False)
        )

    async def _page(self, _request: web.Request) -> web.Response:
        return web.Response(text=render_html(self.status()), content_type="text/html")


def main() -> None:
    settings = load_settings(MonitoringSettings, "monitoring")
    configure_logging(settings.log_format, settings.log_level)
    run(MonitoringService(settings))
