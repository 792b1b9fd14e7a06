"""The graphics desk: takes operators' commands, keeps each production's scene, makes it last.

A command is checked completely before anything changes (template, instance id, every field's
kind, every binding); an accepted change is applied to the scene, written to the key-value bucket
`gfx` (so a restarted service puts the same graphics back on air) and announced on
`prod.<prod>.gfx.state`. Bound fields are fed by watchers of files and URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import aiohttp
import structlog

from services.common import errors
from services.common.bus import Bus, KvBucket, subject
from services.common.gen.baycast.v1 import graphics_pb2
from services.common.handles import HandleDirectory
from services.common.media import now_us
from services.graphics import metrics
from services.graphics.binding import DataBinding, check_binding
from services.graphics.preview import LayerPreview
from services.graphics.scene import OnAir, Scene
from services.graphics.template import Template, TemplateLibrary, check_value, parse_list

BUCKET = "gfx"
DEFAULT_LIST_FIELD = "items"
MAX_TICKER_ITEMS = 200
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PROD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

log = structlog.get_logger("graphics.desk")


def handle_name(production: str) -> str:
    return f"gfx/{production}"


def check_production(production: str) -> None:
    if not _PROD.match(production):
        raise errors.InvalidArgument(f"not a production id: {production!r}", field="production")


class GraphicsDesk:
    def __init__(
        self,
        bus: Bus,
        library: TemplateLibrary,
        session: aiohttp.ClientSession,
    ) -> None:
        self.bus = bus
        self.library = library
        self.session = session
        self.directory = HandleDirectory(bus)
        self.scenes: dict[str, Scene] = {}
        self.endpoint = ""
        self._kv: KvBucket[graphics_pb2.GfxScene] | None = None
        self._bindings: dict[tuple[str, str], list[asyncio.Task[None]]] = {}
        self._announced: set[str] = set()
        # The last revision of each (production, instance id), kept after a hide, so a re-shown
        # instance always has a revision its layer streams have not seen.
        self._revisions: dict[tuple[str, str], int] = {}
        self._reported: set[tuple[str, str]] = set()
        # Set by the service once the layers exist (previews draw at their size).
        self.previewer: LayerPreview | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state bucket and put back what was on air before a restart."""
        self._kv = await self.bus.kv(BUCKET, graphics_pb2.GfxScene)
        for production, saved in (await self._kv.items()).items():
            scene = self.scene(production)
            for inst in saved.instances:
                try:
                    template = self.library.get(inst.template)
                except errors.BaycastError as exc:
                    log.error(
                        "restore_dropped",
                        production=production,
                        instance=inst.id,
                        error=exc.message,
                    )
                    continue
                scene.on_air[inst.id] = OnAir(inst, template, cut_in=True)
                self._revisions[(production, inst.id)] = inst.revision
                self._start_bindings(production, inst)
                await self._publish(production, "restored", inst)
            log.info("restored", production=production, instances=len(scene.on_air))
        self._count()

    async def set_endpoint(self, endpoint: str) -> None:
        """Known once gRPC listens: announce every production's layer handle."""
        self.endpoint = endpoint
        for production in list(self.scenes):
            await self._announce(production)

    async def close(self) -> None:
        """Stop the watchers and withdraw the handles (while the bus is still up)."""
        for tasks in self._bindings.values():
            for task in tasks:
                task.cancel()
        self._bindings.clear()
        for production in list(self._announced):
            with contextlib.suppress(Exception):
                await self.directory.withdraw(handle_name(production), self.endpoint)
        self._announced.clear()

    def scene(self, production: str) -> Scene:
        scene = self.scenes.get(production)
        if scene is None:
            scene = self.scenes[production] = Scene(production)
        return scene

    async def _announce(self, production: str) -> None:
        if self.endpoint and production not in self._announced:
            await self.directory.announce(handle_name(production), self.endpoint)
            self._announced.add(production)

    # -- commands ------------------------------------------------------------------------------

    async def handle(
        self, production: str, command: graphics_pb2.GfxCommand
    ) -> graphics_pb2.GfxReply:
        verb = command.WhichOneof("command") or "none"
        try:
            check_production(production)
            reply = await self._dispatch(production, command, verb)
        except errors.BaycastError as exc:
            metrics.COMMANDS.labels(verb, exc.code).inc()
            raise
        metrics.COMMANDS.labels(verb, "ok").inc()
        return reply

    async def _dispatch(
        self, production: str, command: graphics_pb2.GfxCommand, verb: str
    ) -> graphics_pb2.GfxReply:
        if verb == "show":
            return await self.show(production, command.show)
        if verb == "hide":
            return await self.hide(production, command.hide)
        if verb == "update":
            return await self.update(production, command.update)
        if verb == "ticker_add":
            return await self.ticker_add(production, command.ticker_add)
        if verb == "list":
            return graphics_pb2.GfxReply(instances=self.scene(production).snapshot().instances)
        if verb == "templates":
            if command.templates.reload:
                self.rescan()
            return self.templates_reply()
        if verb == "preview":
            return await self.preview(production, command.preview)
        raise errors.InvalidArgument("the command is empty", field="command")

    async def show(self, production: str, cmd: graphics_pb2.GfxShow) -> graphics_pb2.GfxReply:
        if not cmd.template:
            raise errors.InvalidArgument("which template?", field="show.template")
        try:
            template = self.library.get(cmd.template)
        except errors.NotFound as exc:
            raise errors.NotFound(exc.message, field="show.template") from None
        iid = cmd.instance or template.name
        if not _ID.match(iid):
            raise errors.InvalidArgument(f"not an instance id: {iid!r}", field="show.instance")
        fields = template.resolve_fields(cmd.fields, prefix="show.fields")
        self._check_bindings(template, cmd.bindings, "show.bindings")
        scene = self.scene(production)
        inst = graphics_pb2.GfxInstance(
            id=iid,
            template=template.name,
            fields=fields,
            layer=cmd.layer,
            bindings=cmd.bindings,
            shown_at_us=now_us(),
            revision=self._revisions.get((production, iid), 0) + 1,
        )
        scene.on_air[iid] = OnAir(inst, template, cut_in=cmd.cut)
        scene.exits.pop(iid, None)
        self._start_bindings(production, inst)
        await self._commit(production, "shown", inst)
        return graphics_pb2.GfxReply(instances=[inst])

    async def preview(self, production: str, cmd: graphics_pb2.GfxPreview) -> graphics_pb2.GfxReply:
        """The template drawn with these fields as a PNG, without putting it on air."""
        if self.previewer is None:
            raise errors.Unavailable("previews are not set up in this instance")
        if not cmd.template:
            raise errors.InvalidArgument("which template?", field="preview.template")
        try:
            template = self.library.get(cmd.template)
        except errors.NotFound as exc:
            raise errors.NotFound(exc.message, field="preview.template") from None
        fields = template.resolve_fields(cmd.fields, prefix="preview.fields")
        png = await self.previewer.png(production, template, fields, cmd.width)
        return graphics_pb2.GfxReply(preview_png=png)

    async def hide(self, production: str, cmd: graphics_pb2.GfxHide) -> graphics_pb2.GfxReply:
        scene = self.scene(production)
        on_air = self._on_air(scene, cmd.instance, "hide.instance")
        del scene.on_air[cmd.instance]
        scene.exits[cmd.instance] = cmd.cut
        self._stop_bindings(production, cmd.instance)
        await self._commit(production, "hidden", on_air.instance)
        return graphics_pb2.GfxReply(instances=[on_air.instance])

    async def update(self, production: str, cmd: graphics_pb2.GfxUpdate) -> graphics_pb2.GfxReply:
        on_air = self._on_air(self.scene(production), cmd.instance, "update.instance")
        template = on_air.template
        for name, value in cmd.fields.items():
            spec = template.fields.get(name)
            if spec is None:
                template.resolve_fields({name: value}, prefix="update.fields")  # raises, names it
            else:
                check_value(spec, value, f"update.fields.{name}")
        self._check_bindings(template, cmd.bindings, "update.bindings")
        inst = on_air.instance
        inst.fields.update(cmd.fields)
        if cmd.bindings:
            kept = [b for b in inst.bindings if b.field not in {n.field for n in cmd.bindings}]
            del inst.bindings[:]
            inst.bindings.extend([*kept, *cmd.bindings])
            self._start_bindings(production, inst)
        inst.revision += 1
        await self._commit(production, "updated", inst)
        return graphics_pb2.GfxReply(instances=[inst])

    async def ticker_add(
        self, production: str, cmd: graphics_pb2.GfxTickerAdd
    ) -> graphics_pb2.GfxReply:
        on_air = self._on_air(self.scene(production), cmd.instance, "ticker_add.instance")
        name = cmd.field or DEFAULT_LIST_FIELD
        spec = on_air.template.fields.get(name)
        if spec is None or spec.kind != "list":
            raise errors.InvalidArgument(
                f"template {on_air.template.name!r} has no list field {name!r}",
                field="ticker_add.field",
            )
        if not cmd.item.strip():
            raise errors.InvalidArgument("the item is empty", field="ticker_add.item")
        inst = on_air.instance
        items = parse_list(inst.fields.get(name, "[]"), f"fields.{name}")
        if len(items) >= MAX_TICKER_ITEMS:
            raise errors.ResourceExhausted(
                f"the ticker holds {MAX_TICKER_ITEMS} items at most", field="ticker_add.item"
            )
        inst.fields[name] = json.dumps([*items, cmd.item.strip()], ensure_ascii=False)
        inst.revision += 1
        await self._commit(production, "updated", inst)
        return graphics_pb2.GfxReply(instances=[inst])

    def templates_reply(self) -> graphics_pb2.GfxReply:
        return graphics_pb2.GfxReply(
            templates=[
                graphics_pb2.GfxTemplateInfo(
                    name=t.name,
                    description=t.description,
                    file=Path(t.file).name,
                    fields=[
                        graphics_pb2.GfxFieldInfo(name=f.name, kind=f.kind, default_value=f.default)
                        for f in t.fields.values()
                    ],
                )
                for t in sorted(self.library.templates.values(), key=lambda t: t.name)
            ],
            template_errors=[
                graphics_pb2.GfxTemplateError(file=e.file, field=e.template_field, message=e.reason)
                for e in self.library.errors.values()
            ],
        )

    # -- templates changing under us -----------------------------------------------------------

    def rescan(self) -> list[str]:
        """Re-read the template folders; instances of a changed template re-render."""
        changed = self.library.scan()
        for file, exc in self.library.errors.items():
            if (file, exc.message) not in self._reported:
                self._reported.add((file, exc.message))
                metrics.TEMPLATES_REJECTED.inc()
                log.error(
                    "template_rejected", file=file, field=exc.template_field, error=exc.reason
                )
        metrics.TEMPLATES_LOADED.set(len(self.library.templates))
        for production, scene in self.scenes.items():
            for on_air in scene.on_air.values():
                if on_air.template.name in changed:
                    self._retemplate(
                        production, on_air, self.library.templates[on_air.template.name]
                    )
        return changed

    def _retemplate(self, production: str, on_air: OnAir, template: Template) -> None:
        inst = on_air.instance
        # Keep values for fields the new version still has; new fields take their defaults.
        kept = {k: v for k, v in inst.fields.items() if k in template.fields}
        try:
            values = template.resolve_fields(kept)
        except errors.InvalidArgument:
            values = template.defaults()
        inst.fields.clear()
        inst.fields.update(values)
        inst.revision += 1
        self._revisions[(production, inst.id)] = inst.revision
        on_air.template = template
        log.info("instance_retemplated", production=production, instance=inst.id)

    # -- bound data ----------------------------------------------------------------------------

    def _check_bindings(
        self, template: Template, bindings: Iterable[graphics_pb2.GfxBinding], where: str
    ) -> None:
        for i, b in enumerate(bindings):
            if b.field not in template.fields:
                raise errors.InvalidArgument(
                    f"template {template.name!r} has no field {b.field!r}",
                    field=f"{where}[{i}].field",
                )
            check_binding(b, f"{where}[{i}]")

    def _start_bindings(self, production: str, inst: graphics_pb2.GfxInstance) -> None:
        self._stop_bindings(production, inst.id)
        tasks = []
        for spec in inst.bindings:
            watcher = DataBinding(spec, self.session, self._feeder(production, inst.id, spec.field))
            tasks.append(asyncio.create_task(watcher.run(), name=f"binding-{inst.id}-{spec.field}"))
        if tasks:
            self._bindings[(production, inst.id)] = tasks

    def _feeder(self, production: str, iid: str, field: str) -> Callable[[str], Awaitable[None]]:
        async def feed(text: str) -> None:
            await self.bound_value(production, iid, field, text)

        return feed

    def _stop_bindings(self, production: str, iid: str) -> None:
        for task in self._bindings.pop((production, iid), []):
            task.cancel()

    async def bound_value(self, production: str, iid: str, field: str, text: str) -> None:
        """A watched source changed: update the field if the value fits its kind."""
        on_air = self.scene(production).on_air.get(iid)
        if on_air is None:
            return
        spec = on_air.template.fields[field]
        try:
            check_value(spec, text, f"fields.{field}")
        except errors.InvalidArgument as exc:
            metrics.BINDING_ERRORS.labels("value").inc()
            log.warning("binding_value_refused", instance=iid, field=field, error=exc.message)
            return
        inst = on_air.instance
        if inst.fields.get(field) == text:
            return
        inst.fields[field] = text
        inst.revision += 1
        await self._commit(production, "updated", inst)

    # -- state ---------------------------------------------------------------------------------

    def _on_air(self, scene: Scene, iid: str, where: str) -> OnAir:
        if not iid:
            raise errors.InvalidArgument("which instance?", field=where)
        on_air = scene.on_air.get(iid)
        if on_air is None:
            raise errors.NotFound(
                f"no instance {iid!r} on air in {scene.production!r}", field=where
            )
        return on_air

    async def _commit(self, production: str, event: str, inst: graphics_pb2.GfxInstance) -> None:
        assert self._kv is not None, "start() first"
        self._revisions[(production, inst.id)] = inst.revision
        await self._kv.put(production, self.scene(production).snapshot())
        await self._announce(production)
        await self._publish(production, event, inst)
        self._count()

    async def _publish(self, production: str, event: str, inst: graphics_pb2.GfxInstance) -> None:
        state = graphics_pb2.GfxState(
            production=production, event=event, instance=inst, time_us=now_us()
        )
        with contextlib.suppress(Exception):
            await self.bus.publish(subject("prod", production, "gfx", "state"), state)

    def _count(self) -> None:
        metrics.INSTANCES_ON_AIR.set(sum(len(s.on_air) for s in self.scenes.values()))
