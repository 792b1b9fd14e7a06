"""Productions and their outputs: commands, durable specs, state events.

A production gets an encoder when its first output appears and loses it with its last one. Every
output's spec lives in the key-value bucket `dist_outputs` under `<prod>.<id>`, its stream key
and passphrase sealed (keyring.py, docs/adr/0020): without a secrets key, an output with a secret
is refused; a stored one that cannot be opened shows as failed, with the reason, and does not
start (the others do). A replica runs only the productions it owns (owned_productions.py): it
`load`s a production's outputs from the bucket, as they were, started or stopped, when it takes
the production, and `unload`s them (the specs stay) when it lets the production go.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import nats.js.errors
import structlog

from services.common import errors
from services.common.bus import PREFIX, Bus, encode, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import media_pb2
from services.common.kv_mirror import KvMirror
from services.distribution import metrics
from services.distribution.encoder import ProgramEncoder
from services.distribution.keyring import Keyring, SealedValueError
from services.distribution.outputs import Output, SinkFactory
from services.distribution.production import STOP_JOIN_S, Production
from services.distribution.settings import DistributionSettings
from services.distribution.sinks import make_sink, rtmp_target
from services.distribution.srt_return import PICTURES, Returns

BUCKET = "dist_outputs"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
SAMPLE_INTERVAL_S = 1.0
MAX_LADDER = 4
MIN_RUNG_HEIGHT = 144
MAX_RUNG_HEIGHT = 2160
SCHEMES = {
    dist.OUTPUT_KIND_RTMP: ("rtmp",),
    dist.OUTPUT_KIND_RTMPS: ("rtmps",),
    dist.OUTPUT_KIND_SRT: ("srt",),
}
# A secret reaches the relay as one line of a preset file (sinks.py), which FFmpeg reads up to
# 999 characters a line.
MAX_SECRET_CHARS = 512

log = structlog.get_logger("distribution")

ProgramFrames = Callable[[str, media_pb2.Rendition], AsyncIterator[media_pb2.MediaFrame]]


def key_out_of_url(spec: dist.OutputSpec) -> None:
    """An RTMP(S) url's path past its application is the stream (FFmpeg reads it so): move it
    into `stream_key`, where it is sealed and masked, in place."""
    if spec.kind not in (dist.OUTPUT_KIND_RTMP, dist.OUTPUT_KIND_RTMPS):
        return
    target, options = rtmp_target(spec)
    spec.url = f"{target}/{options['rtmp_app']}"
    spec.stream_key = options.get("rtmp_playpath", "")


def validate_spec(spec: dist.OutputSpec, existing: dict[str, Output]) -> None:
    """Refuse a spec that cannot work, naming the field; changes nothing."""
    if not ID_PATTERN.match(spec.id):
        raise errors.InvalidArgument(
            "id must be 1-63 of a-z, 0-9, '-', '_' (starting with a letter or digit)",
            field="add.output.id",
        )
    if spec.kind not in dist.OutputKind.values() or spec.kind == dist.OUTPUT_KIND_UNSPECIFIED:
        raise errors.InvalidArgument("kind is required", field="add.output.kind")
    for name in ("url", "stream_key", "passphrase"):
        value = getattr(spec, name)
        if any(c.isspace() or not c.isprintable() for c in value):
            raise errors.InvalidArgument(
                f"{name} holds spaces or control characters", field=f"add.output.{name}"
            )
    if len(spec.stream_key) > MAX_SECRET_CHARS:
        raise errors.InvalidArgument(
            f"a stream key has at most {MAX_SECRET_CHARS} characters",
            field="add.output.stream_key",
        )
    if spec.kind in SCHEMES:
        parts = urlsplit(spec.url)
        if "@" in parts.netloc:
            raise errors.InvalidArgument(
                "no user:password in the url: the relay could only take it on its command line"
                " (put a stream key in stream_key)",
                field="add.output.url",
            )
        if parts.scheme not in SCHEMES[spec.kind] or not parts.hostname:
            raise errors.InvalidArgument(
                f"url must be {SCHEMES[spec.kind][0]}://host[:port]/...", field="add.output.url"
            )
        if spec.kind == dist.OUTPUT_KIND_SRT:
            if parts.port is None:
                raise errors.InvalidArgument(
                    "an SRT url needs a port (a listener's: the port it listens on)",
                    field="add.output.url",
                )
            if "passphrase" in parts.query:
                raise errors.InvalidArgument(
                    "put the passphrase in the passphrase field, not the url",
                    field="add.output.url",
                )
            if spec.passphrase and not 10 <= len(spec.passphrase) <= 79:
                raise errors.InvalidArgument(
                    "an SRT passphrase has 10 to 79 characters", field="add.output.passphrase"
                )
        elif not parts.path.strip("/"):
            raise errors.InvalidArgument(
                "an RTMP url names the application: rtmp://host/app", field="add.output.url"
            )
    elif spec.url:
        raise errors.InvalidArgument(
            "HLS and recording outputs take no url", field="add.output.url"
        )
    if spec.station and spec.kind != dist.OUTPUT_KIND_SRT:
        raise errors.InvalidArgument(
            "only SRT outputs go to a station (returns)", field="add.output.station"
        )
    if spec.picture and spec.picture not in PICTURES:
        raise errors.InvalidArgument(
            'a return\'s picture is "program" or "clean"', field="add.output.picture"
        )
    if spec.picture and not spec.station:
        raise errors.InvalidArgument(
            "only a return (with a station) takes a picture", field="add.output.picture"
        )
    if spec.srt_mode not in dist.SrtMode.values() or (
        spec.srt_mode and spec.kind != dist.OUTPUT_KIND_SRT
    ):
        raise errors.InvalidArgument(
            "srt_mode is caller or listener, for SRT outputs", field="add.output.srt_mode"
        )
    if spec.ladder and spec.kind != dist.OUTPUT_KIND_HLS:
        raise errors.InvalidArgument("only HLS outputs have a ladder", field="add.output.ladder")
    if len(spec.ladder) > MAX_LADDER or any(
        h % 2 or not MIN_RUNG_HEIGHT <= h <= MAX_RUNG_HEIGHT for h in spec.ladder
    ):
        raise errors.InvalidArgument(
            f"a ladder has up to {MAX_LADDER} even heights from {MIN_RUNG_HEIGHT} to "
            f"{MAX_RUNG_HEIGHT}",
            field="add.output.ladder",
        )
    if spec.kind == dist.OUTPUT_KIND_HLS and any(
        o.spec.kind == dist.OUTPUT_KIND_HLS for o in existing.values()
    ):
        raise errors.AlreadyExists(
            "this production already has an HLS output", field="add.output.kind"
        )
    if spec.id in existing:
        raise errors.AlreadyExists(f"output {spec.id} already exists", field="add.output.id")


class Distributor:
    """Runs the outputs of the productions this replica owns, applies their commands, keeps the
    specs in the key-value store."""

    def __init__(
        self,
        settings: DistributionSettings,
        bus: Bus,
        program_frames: ProgramFrames,
        sink_factory: SinkFactory = make_sink,
        returns: Returns | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.productions: dict[str, Production] = {}  # the loaded ones, while they have outputs
        self._program_frames = program_frames
        self._sink_factory = sink_factory
        self._returns = returns  # SRT returns to stations (docs/adr/0012); None: refused
        self._specs: KvMirror[dist.OutputSpec] | None = None
        self.keyring = settings.keyring()
        # Outputs whose stored secrets would not open: key -> the stored spec, kept as it is.
        self._locked: dict[str, dist.OutputSpec] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the stored specs; no production runs until this replica takes it (`load`)."""
        self._loop = asyncio.get_running_loop()
        self._specs = await KvMirror.open(self.bus, BUCKET, dist.OutputSpec)
        self._sampler = asyncio.create_task(self._sample_loop(), name="output-sampler")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        await asyncio.gather(*(p.stop() for p in self.productions.values()))
        self.productions.clear()
        if self._specs is not None:
            await self._specs.close()

    # -- the productions this replica runs --------------------------------------------------------

    async def wanted(self) -> set[str]:
        """The productions that have outputs stored: some replica must run each of them."""
        assert self._specs is not None
        return {key.partition(".")[0] for key in self._specs.items()}

    def runs(self, prod: str) -> bool:
        """Whether this replica runs outputs of `prod` now."""
        return prod in self.productions

    async def load(self, prod: str) -> None:
        """Run the production's stored outputs as they were, started or stopped."""
        stored = await self._stored(prod)
        production = self.productions.get(prod)
        for spec, revision in stored:
            if production is not None and spec.id in production.outputs:
                continue
            key = f"{prod}.{spec.id}"
            try:
                opened = self.keyring.open_spec(spec, key)
            except SealedValueError as exc:
                self._create_locked(spec, key, str(exc))
                continue
            await self._reseal(key, spec, opened, revision)
            output = self._create(opened)
            if spec.enabled:
                output.start()
        if prod in self.productions:
            await self.productions[prod].reconcile()
        log.info("production_loaded", production=prod, outputs=len(stored))

    async def unload(self, prod: str) -> None:
        """Stop the production's outputs and its encoder; the stored specs stay as they are."""
        production = self.productions.pop(prod, None)
        if production is None:
            return
        await production.stop()
        for output_id in production.outputs:
            metrics.forget_output(prod, output_id)
            self._locked.pop(f"{prod}.{output_id}", None)
        log.info("production_unloaded", production=prod, outputs=len(production.outputs))

    async def forget(self, prod: str) -> None:
        """The production was deleted: its outputs stop (where they run here) and their specs
        leave the bucket, so no replica runs them again."""
        await self.unload(prod)
        assert self._specs is not None
        bucket = self._specs.bucket
        for key in await bucket.keys():
            if key.partition(".")[0] == prod:
                await bucket.delete(key)
                self._specs.note(key, None, 0)
        log.info("production_forgotten", production=prod)

    async def _stored(self, prod: str) -> list[tuple[dist.OutputSpec, int]]:
        """The production's specs (as stored, sealed) and their revisions, read from the bucket
        itself: the mirror may lag a write made by the replica that ran the production a moment
        ago."""
        assert self._specs is not None
        bucket = self._specs.bucket
        specs = []
        for key in await bucket.keys():
            if key.partition(".")[0] != prod:
                continue
            entry = await bucket.get(key)
            if entry is not None:
                self._specs.note(key, entry.value, entry.revision)
                specs.append((entry.value, entry.revision))
        return specs

    def _create_locked(self, stored: dist.OutputSpec, key: str, reason: str) -> None:
        """An output whose secrets do not open: listed as failed with the reason, never started;
        its record stays as it is (the right key may come back)."""
        log.error(
            "output_secrets_unreadable",
            production=stored.production,
            output=stored.id,
            reason=reason,
        )
        bare = dist.OutputSpec()
        bare.CopyFrom(stored)
        bare.stream_key = bare.passphrase = ""
        self._locked[key] = stored
        self._create(bare).refuse(f"cannot open its secrets: {reason}")

    async def _reseal(
        self, key: str, stored: dist.OutputSpec, opened: dist.OutputSpec, revision: int
    ) -> None:
        """Seal again with the current key what an older key (or none) sealed (rotation)."""
        if not self.keyring.stale(stored):
            return
        if not self.keyring.can_seal:
            log.warning(
                "output_secret_in_clear",
                production=stored.production,
                output=stored.id,
                fix="set BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE: it is sealed on the next load",
            )
            return
        assert self._specs is not None
        resealed = self.keyring.seal_spec(opened, key)
        try:
            written = await self._specs.bucket.store.update(key, encode(resealed), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # written meanwhile (by a command): that write sealed it
        except Exception as exc:  # the bus away: the output runs; the next load seals it
            log.warning("output_reseal_failed", output=key, error=str(exc) or type(exc).__name__)
            return
        self._specs.note(key, resealed, written)
        log.info(
            "output_resealed",
            production=stored.production,
            output=stored.id,
            key_id=self.keyring.current_id,
        )

    async def _store(self, output: Output) -> None:
        """Write an output's spec as it is stored: sealed, or (a locked output's) as it was."""
        assert self._specs is not None
        locked = self._locked.get(output.key)
        if locked is not None:
            locked.enabled = output.spec.enabled
            stored = locked
        else:
            stored = self.keyring.seal_spec(output.spec, output.key)
        self._specs.note(output.key, stored, await self._specs.bucket.put(output.key, stored))

    # -- commands -------------------------------------------------------------------------------

    async def handle(self, command: dist.DistCommand, subj: str) -> dist.DistReply:
        """A command received on `baycast.v1.prod.<prod>.dist.cmd`."""
        prod = subj.removeprefix(PREFIX).split(".")[1]
        if command.production and command.production != prod:
            raise errors.InvalidArgument(
                f"production {command.production!r} sent on the subject of {prod!r}",
                field="production",
            )
        if not ID_PATTERN.match(prod):
            raise errors.InvalidArgument(
                "a production id is 1-63 of a-z, 0-9, '-', '_'", field="production"
            )
        which = command.WhichOneof("command")
        if which == "add":
            return await self._add(prod, command.add.output)
        if which == "list":
            return self.list(prod)
        if which is None:
            raise errors.InvalidArgument("no command given", field="command")
        ref: dist.OutputRef = getattr(command, which)
        output = self._find(prod, ref.id, which)
        if which == "remove":
            await self._remove(output)
        elif which == "start":
            if output.key in self._locked:
                raise errors.InvalidArgument(
                    f"output {ref.id} cannot start: {output.reason}", field="start.id"
                )
            await self._set_enabled(output, True)
            output.start()
            await self.productions[prod].reconcile()
        elif which == "stop":
            await self._set_enabled(output, False)
            await self._stop_output(output)
            await self.productions[prod].reconcile()
        return dist.DistReply(outputs=[output.state()])

    def list(self, prod: str) -> dist.DistReply:
        production = self.productions.get(prod)
        outputs = sorted(production.outputs.values(), key=lambda o: o.spec.id) if production else []
        return dist.DistReply(outputs=[o.state() for o in outputs])

    def _find(self, prod: str, output_id: str, which: str) -> Output:
        production = self.productions.get(prod)
        output = production.outputs.get(output_id) if production else None
        if output is None:
            raise errors.NotFound(f"no output {output_id!r} in {prod}", field=f"{which}.id")
        return output

    async def _add(self, prod: str, requested: dist.OutputSpec) -> dist.DistReply:
        assert self._specs is not None
        spec = dist.OutputSpec()
        spec.CopyFrom(requested)
        spec.production = prod
        production = self.productions.get(prod)
        validate_spec(spec, production.outputs if production else {})
        key_out_of_url(spec)
        if Keyring.holds_secret(spec) and not self.keyring.can_seal:
            raise errors.InvalidArgument(
                "this distribution stores no stream key or passphrase: it has no secrets key"
                " (BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE)",
                field="add.output.stream_key" if spec.stream_key else "add.output.passphrase",
            )
        if spec.station:
            if self._returns is None:
                raise errors.InvalidArgument(
                    "this distribution serves no returns", field="add.output.station"
                )
            self._returns.validate(spec)
        key = f"{prod}.{spec.id}"
        stored = self.keyring.seal_spec(spec, key)
        self._specs.note(key, stored, await self._specs.bucket.create(key, stored))
        output = self._create(spec)
        if spec.enabled:
            output.start()
        await self.productions[prod].reconcile()
        log.info(
            "output_added", production=prod, output=spec.id, kind=dist.OutputKind.Name(spec.kind)
        )
        return dist.DistReply(outputs=[output.state()])

    async def _remove(self, output: Output) -> None:
        assert self._specs is not None
        await self._specs.bucket.delete(output.key)
        self._specs.note(output.key, None, 0)
        self._locked.pop(output.key, None)
        await self._stop_output(output)
        production = self.productions[output.spec.production]
        del production.outputs[output.spec.id]
        metrics.forget_output(output.spec.production, output.spec.id)
        if output.spec.kind == dist.OUTPUT_KIND_HLS:
            # Viewers must not keep watching a frozen playlist of a removed output.
            folder = Path(self.settings.data_dir) / "hls" / production.name
            await asyncio.to_thread(shutil.rmtree, folder, True)
        await production.reconcile()
        if not production.outputs:
            del self.productions[production.name]

    async def _set_enabled(self, output: Output, enabled: bool) -> None:
        output.spec.enabled = enabled
        await self._store(output)

    # -- productions and outputs ------------------------------------------------------------------

    def _create(self, spec: dist.OutputSpec) -> Output:
        production = self.productions.get(spec.production)
        if production is None:
            production = Production(spec.production, self._make_encoder, self._returns)
            self.productions[spec.production] = production
        if spec.station and self._returns is not None:
            returns, key = self._returns, f"{spec.production}.{spec.id}"
            output = Output(
                spec,
                self.settings,
                lambda: returns.templates(key),
                self._changed,
                returns.make_sink,
            )
        else:
            output = Output(
                spec,
                self.settings,
                production.templates,
                self._changed,
                self._sink_factory,
                recent=production.recent,
            )
        production.outputs[spec.id] = output
        return output

    def _make_encoder(self, production: Production) -> ProgramEncoder:
        return ProgramEncoder(
            production.name,
            self.settings,
            lambda rendition: self._program_frames(production.name, rendition),
            production.fan_out,
            production.ladder,
        )

    async def _stop_output(self, output: Output) -> None:
        output.request_stop()
        await asyncio.to_thread(output.join, STOP_JOIN_S)

    # -- state events -------------------------------------------------------------------------

    def _changed(self, output: Output) -> None:
        """Called from an output's thread: publish its state from the event loop."""
        if self._loop is None or self._loop.is_closed():
            return
        state = output.state()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._publish_soon, state)

    def _publish_soon(self, state: dist.OutputState) -> None:
        subj = subject("prod", state.production, "dist", "output", state.id, "state")
        task = asyncio.ensure_future(self._publish(subj, state))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _publish(self, subj: str, state: dist.OutputState) -> None:
        if self.bus.connected:
            await self.bus.publish(subj, state)

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            for production in list(self.productions.values()):
                for output in production.outputs.values():
                    output.sample()
                await production.reconcile()  # an output that failed may have been the last
