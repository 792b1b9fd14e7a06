"""The mixer service: wiring only. Productions come and go with their leases (docs/adr/0004)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common import capacity, errors
from services.common.bus import KvBucket, subject
from services.common.gen.baycast.v1 import mixer_pb2, rundown_pb2
from services.common.handles import HandleDirectory
from services.common.leases import Leases
from services.common.lifecycle import BaseService, run
from services.common.media_library import MediaLibrary
from services.common.media_service import MediaService
from services.common.settings import load_settings
from services.common.telemetry import configure_logging
from services.mixer import metrics
from services.mixer.live_edit import apply_edit, check_edit
from services.mixer.outputs import Output, OutputFeeds
from services.mixer.production import ProductionRunner
from services.mixer.productions import ProductionStore, check_id
from services.mixer.rundown import RUNDOWN_BUCKET, RundownPlayer, ensure_asrun_stream
from services.mixer.settings import MixerSettings
from services.mixer.switcher import initial_state, reconcile

STATE_BUCKET = "mixer-state"
LEASES_BUCKET = "mixer-leases"
ADMIN_SUBJECT = ("mixer", "production", "cmd")


@dataclass
class Running:
    runner: ProductionRunner
    rundown: RundownPlayer
    lease_revision: int
    subscriptions: list[Any]  # prod.<prod>.mixer.cmd and prod.<prod>.rundown.cmd


class MixerService(BaseService[MixerSettings]):
    name = "mixer"

    async def setup(self) -> None:
        self.directory = HandleDirectory(self.bus)
        self.productions = await ProductionStore.open(self.bus)
        self.states: KvBucket[mixer_pb2.SwitcherState] = await self.bus.kv(
            STATE_BUCKET, mixer_pb2.SwitcherState
        )
        self.rundowns: KvBucket[rundown_pb2.RundownStatus] = await self.bus.kv(
            RUNDOWN_BUCKET, rundown_pb2.RundownStatus
        )
        await ensure_asrun_stream(self.bus)
        self.leases = await Leases.open(
            self.bus, LEASES_BUCKET, self.settings.instance, self.settings.lease_seconds
        )
        self.running: dict[str, Running] = {}
        self._library: MediaLibrary | None = None
        self.media_cache_dir = Path(
            self.settings.media_cache_dir or Path(tempfile.gettempdir()) / "baycast-media"
        )
        self.budget = capacity.budget(
            "mixer",
            self.settings.capacity_cores,
            self.settings.unit_cores,
            self.settings.max_productions,
        )
        await self.bus.serve(
            subject(*ADMIN_SUBJECT), mixer_pb2.ProductionCommand, self.admin, queue="mixer"
        )
        self.grpc.add_media(
            MediaService(OutputFeeds(self.find_output).open, metrics.MEDIA_SENT_BYTES)
        )

    async def start(self) -> None:
        await super().start()
        # Leases after the gRPC server is bound: a production announces handles on its port.
        self.spawn(self._lease_loop(), "leases")

    async def before_drain(self) -> None:
        # While the bus is up: withdraw the handles, so consumers look for the next owner.
        for prod_id in list(self.running):
            await self._stop_production(prod_id, release=False)

    def find_output(self, handle: str) -> Output | None:
        parts = handle.split("/", 2)
        if len(parts) != 3 or parts[0] != "prod" or parts[1] not in self.running:
            return None
        return self.running[parts[1]].runner.output(parts[2])

    # -- production admin --------------------------------------------------------------------

    async def admin(self, command: mixer_pb2.ProductionCommand) -> mixer_pb2.ProductionReply:
        which = command.WhichOneof("command")
        if which == "create":
            created = await self.productions.create(command.create)
            return mixer_pb2.ProductionReply(productions=[created])
        if which == "list":
            items = await self.productions.all()
            return mixer_pb2.ProductionReply(
                productions=[items[k] for k in sorted(items)], owners=await self.leases.owners()
            )
        if which == "show":
            check_id(command.show.id, "show.id")
            production = await self.productions.get(command.show.id)
            owners = await self.leases.owners()
            return mixer_pb2.ProductionReply(
                productions=[production],
                owners={k: v for k, v in owners.items() if k == production.id},
            )
        if which == "update":

            async def check(old: mixer_pb2.Production, new: mixer_pb2.Production) -> None:
                stored = await self.states.get(old.id)
                check_edit(old, new, stored.value if stored else None)

            updated = await self.productions.update(command.update, check)
            return mixer_pb2.ProductionReply(productions=[updated])
        if which == "delete":
            check_id(command.delete.id, "delete.id")
            await self.productions.delete(command.delete.id)
            with contextlib.suppress(Exception):
                await self.states.delete(command.delete.id)
            with contextlib.suppress(Exception):
                await self.rundowns.delete(command.delete.id)
            return mixer_pb2.ProductionReply()
        raise errors.InvalidArgument("command is empty", field="command")

    # -- leases ------------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._reconcile_leases()
            except Exception as exc:  # NATS down: keep running what we have, retry
                self.log.warning("lease_round_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(self.settings.lease_renew_seconds)

    async def _reconcile_leases(self) -> None:
        for prod_id, running in list(self.running.items()):
            revision = await self.leases.renew(prod_id, running.lease_revision)
            if revision is None:
                self.log.warning("lease_lost", production=prod_id)
                await self._stop_production(prod_id, release=False)
            else:
                running.lease_revision = revision
        productions = await self.productions.all()
        for prod_id, running in list(self.running.items()):
            edited = productions.get(prod_id)
            if edited is not None and edited != running.runner.production:
                await apply_edit(running.runner, edited)
                running.rundown.production = edited
        for prod_id in list(self.running):
            if prod_id not in productions and not await self._still_exists(prod_id):
                await self._stop_production(prod_id, release=True)
        if self.budget is not None:
            self.budget.sample(len(self.running))
        for prod_id, production in sorted(productions.items()):
            if prod_id in self.running:
                continue
            full = self.budget is not None and not self.budget.can_take()
            if len(self.running) >= self.settings.max_productions or full:
                break  # another instance (or a new one) takes the rest
            revision = await self.leases.acquire(prod_id)
            if revision is not None:
                if self.budget is not None:
                    self.budget.took()
                try:
                    await self._start_production(production, revision)
                except Exception:
                    self.log.exception("production_start_failed", production=prod_id)
                    await self.leases.release(prod_id, revision)
        metrics.PRODUCTIONS.set(len(self.running))

    async def _still_exists(self, prod_id: str) -> bool:
        """Ask for the key itself: a key listing of a busy server can come back short, and a
        running show must not stop for that (seen under load: stopped and restarted 0.3 s later).
        """
        try:
            await self.productions.get(prod_id)
        except errors.NotFound:
            return False
        return True

    async def _start_production(self, production: mixer_pb2.Production, revision: int) -> None:
        stored = await self.states.get(production.id)
        state = (
            reconcile(stored.value, production) if stored is not None else initial_state(production)
        )
        prod_id = production.id

        async def save(value: mixer_pb2.SwitcherState) -> None:
            await self.states.put(prod_id, value)

        runner = ProductionRunner(
            production,
            state,
            bus=self.bus,
            directory=self.directory,
            channels=self.channels,
            instance=self.settings.instance,
            endpoint=self.grpc_endpoint,
            save_state=save,
            open_library=self._open_library,
            media_cache_dir=self.media_cache_dir,
            queue_size=self.settings.subscriber_queue,
            feed_idle_seconds=self.settings.feed_idle_seconds,
            source_compression=self.settings.source_compression(),
        )
        await runner.start()
        rundown = RundownPlayer(production, self.bus, self.rundowns, runner.command)
        runner.clips.on_end = rundown.clip_ended
        await rundown.start()
        subscriptions = [
            await self.bus.serve(
                subject("prod", prod_id, "mixer", "cmd"), mixer_pb2.MixerCommand, runner.command
            ),
            await self.bus.serve(
                subject("prod", prod_id, "rundown", "cmd"),
                rundown_pb2.RundownCommand,
                rundown.command,
            ),
        ]
        self.running[prod_id] = Running(runner, rundown, revision, subscriptions)

    async def _open_library(self) -> MediaLibrary:
        """The media library, opened on first use (a production with a clip)."""
        if self._library is None:
            self._library = await MediaLibrary.open(self.bus, create=False)
        return self._library

    async def _stop_production(self, prod_id: str, *, release: bool) -> None:
        running = self.running.pop(prod_id, None)
        if running is None:
            return
        for subscription in running.subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await running.rundown.stop()
        await running.runner.stop()
        if release:
            with contextlib.suppress(Exception):
                await self.leases.release(prod_id, running.lease_revision)


def main() -> None:
    settings = load_settings(MixerSettings, "mixer")
    configure_logging(settings.log_format, settings.log_level)
    run(MixerService(settings))
