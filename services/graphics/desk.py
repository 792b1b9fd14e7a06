"""The graphics desk: takes operators' commands on the scenes this replica runs.

A command is checked completely before anything changes (template, instance id, every field's
kind, every binding); an accepted change is applied to the scene, written to the key-value bucket
`gfx` (so the replica that runs the production next puts the same graphics back on air) and
announced on `prod.<prod>.gfx.state`. Bound fields are fed by watchers of files and URLs, read
as the data policy allows (data_policy.py); a source refused while watched is announced as the
event `binding_refused`.

Commands reach the replica that runs the production (services/common/steward.py); a command, a
start and a stop of one production take turns, so a command never sees a half-restored scene.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import structlog

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2
from services.common.media import now_us
from services.graphics import metrics
from services.graphics.binding import DataBinding, check_binding
from services.graphics.data_policy import BindingRefused
from services.graphics.data_reader import DataReader
from services.graphics.preview import LayerPreview
from services.graphics.scene import OnAir, Scene
from services.graphics.scenes import BUCKET as BUCKET
from services.graphics.scenes import Scenes
from services.graphics.template import Template, TemplateLibrary, check_value, parse_list

DEFAULT_LIST_FIELD = "items"
MAX_TICKER_ITEMS = 200
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PROD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

log = structlog.get_logger("graphics.desk")


def check_production(production: str) -> str:
    if not _PROD.match(production):
        raise errors.InvalidArgument(f"not a production id: {production!r}", field="production")
    return production


def templates_reply(library: TemplateLibrary) -> graphics_pb2.GfxReply:
    """The templates on offer and the files refused."""
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
            for t in sorted(library.templates.values(), key=lambda t: t.name)
        ],
        template_errors=[
            graphics_pb2.GfxTemplateError(file=e.file, field=e.template_field, message=e.reason)
            for e in library.errors.values()
        ],
    )


class GraphicsDesk:
    def __init__(
        self,
        bus: Bus,
        library: TemplateLibrary,
        reader: DataReader,
    ) -> None:
        self.library = library
        self.reader = reader
        self.scenes = Scenes(bus, library)
        self._turns: dict[str, asyncio.Lock] = {}
        self._bindings: dict[tuple[str, str], list[asyncio.Task[None]]] = {}
        self._reported: set[tuple[str, str]] = set()
        # Set by the service once the layers exist (previews draw at their size).
        self.previewer: LayerPreview | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.scenes.open()

    async def set_endpoint(self, endpoint: str) -> None:
        await self.scenes.set_endpoint(endpoint)

    async def close(self) -> None:
        """Stop the watchers and withdraw the handles (while the bus is still up)."""
        for tasks in self._bindings.values():
            for task in tasks:
                task.cancel()
        self._bindings.clear()
        await self.scenes.close()

    def _turn(self, production: str) -> asyncio.Lock:
        return self._turns.setdefault(production, asyncio.Lock())

    async def start_scene(self, production: str) -> None:
        """This replica takes `production`: its stored scene goes back on air here."""
        async with self._turn(production):
            for inst in await self.scenes.restore(production):
                self._start_bindings(production, inst)

    async def stop_scene(self, production: str) -> None:
        """This replica lets `production` go: watchers stopped, handle withdrawn, bucket kept."""
        async with self._turn(production):
            for key in [k for k in self._bindings if k[0] == production]:
                self._stop_bindings(*key)
            await self.scenes.release(production)

    async def running(self, production: str) -> Scene | None:
        """`production`'s scene once it is fully restored, or None when it does not run here."""
        async with self._turn(production):
            return self.scenes.running.get(production)

    def scene(self, production: str) -> Scene:
        """What `production` has on air here (an empty scene when it does not run here)."""
        return self.scenes.running.get(production) or Scene(production)

    # -- commands ------------------------------------------------------------------------------

    async def handle(
        self, production: str, command: graphics_pb2.GfxCommand
    ) -> graphics_pb2.GfxReply:
        verb = command.WhichOneof("command") or "none"
        try:
            check_production(production)
            async with self._turn(production):
                scene = self.scenes.running.get(production)
                if scene is None:  # let go between routing and now
                    raise errors.Unavailable(f"the graphics of {production} are moving: retry")
                reply = await self._dispatch(scene, command, verb)
        except errors.BaycastError as exc:
            metrics.COMMANDS.labels(verb, exc.code).inc()
            raise
        metrics.COMMANDS.labels(verb, "ok").inc()
        return reply

    async def _dispatch(
        self, scene: Scene, command: graphics_pb2.GfxCommand, verb: str
    ) -> graphics_pb2.GfxReply:
        if verb == "show":
            return await self.show(scene, command.show)
        if verb == "hide":
            return await self.hide(scene, command.hide)
        if verb == "update":
            return await self.update(scene, command.update)
        if verb == "ticker_add":
            return await self.ticker_add(scene, command.ticker_add)
        if verb == "list":
            return graphics_pb2.GfxReply(instances=scene.snapshot().instances)
        if verb == "templates":
            if command.templates.reload:
                self.rescan()
            return templates_reply(self.library)
        if verb == "preview":
            return await self.preview(scene.production, command.preview)
        raise errors.InvalidArgument("the command is empty", field="command")

    async def show(self, scene: Scene, cmd: graphics_pb2.GfxShow) -> graphics_pb2.GfxReply:
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
        inst = graphics_pb2.GfxInstance(
            id=iid,
            template=template.name,
            fields=fields,
            layer=cmd.layer,
            bindings=cmd.bindings,
            shown_at_us=now_us(),
            revision=self.scenes.next_revision(scene.production, iid),
        )
        scene.on_air[iid] = OnAir(inst, template, cut_in=cmd.cut)
        scene.exits.pop(iid, None)
        self._start_bindings(scene.production, inst)
        await self.scenes.commit(scene, "shown", inst)
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

    async def hide(self, scene: Scene, cmd: graphics_pb2.GfxHide) -> graphics_pb2.GfxReply:
        on_air = self._on_air(scene, cmd.instance, "hide.instance")
        del scene.on_air[cmd.instance]
        scene.exits[cmd.instance] = cmd.cut
        self._stop_bindings(scene.production, cmd.instance)
        await self.scenes.commit(scene, "hidden", on_air.instance)
        return graphics_pb2.GfxReply(instances=[on_air.instance])

    async def update(self, scene: Scene, cmd: graphics_pb2.GfxUpdate) -> graphics_pb2.GfxReply:
        on_air = self._on_air(scene, cmd.instance, "update.instance")
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
            self._start_bindings(scene.production, inst)
        inst.revision += 1
        await self.scenes.commit(scene, "updated", inst)
        return graphics_pb2.GfxReply(instances=[inst])

    async def ticker_add(
        self, scene: Scene, cmd: graphics_pb2.GfxTickerAdd
    ) -> graphics_pb2.GfxReply:
        on_air = self._on_air(scene, cmd.instance, "ticker_add.instance")
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
        await self.scenes.commit(scene, "updated", inst)
        return graphics_pb2.GfxReply(instances=[inst])

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
        for production, scene in self.scenes.running.items():
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
        self.scenes.note_revision(production, inst)
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
            check_binding(b, f"{where}[{i}]", self.reader.policy)

    def _start_bindings(self, production: str, inst: graphics_pb2.GfxInstance) -> None:
        self._stop_bindings(production, inst.id)
        tasks = []
        for spec in inst.bindings:
            watcher = DataBinding(
                spec,
                self.reader,
                self._feeder(production, inst.id, spec.field),
                self._refusal_reporter(production, inst.id, spec),
            )
            tasks.append(asyncio.create_task(watcher.run(), name=f"binding-{inst.id}-{spec.field}"))
        if tasks:
            self._bindings[(production, inst.id)] = tasks

    def _feeder(self, production: str, iid: str, field: str) -> Callable[[str], Awaitable[None]]:
        async def feed(text: str) -> None:
            await self.bound_value(production, iid, field, text)

        return feed

    def _refusal_reporter(
        self, production: str, iid: str, spec: graphics_pb2.GfxBinding
    ) -> Callable[[BindingRefused], Awaitable[None]]:
        async def report(refused: BindingRefused) -> None:
            # In the production's turn, so it never follows the instance's `hidden`.
            async with self._turn(production):
                scene = self.scenes.running.get(production)
                on_air = scene.on_air.get(iid) if scene is not None else None
                if on_air is None:
                    return
                state = graphics_pb2.GfxState(
                    production=production,
                    event="binding_refused",
                    instance=on_air.instance,
                    time_us=now_us(),
                    refusal=graphics_pb2.GfxBindingRefusal(
                        field=spec.field,
                        target=spec.file or spec.url,
                        rule=refused.rule,
                        message=refused.message,
                    ),
                )
                await self.scenes.bus.publish(subject("prod", production, "gfx", "state"), state)

        return report

    def _stop_bindings(self, production: str, iid: str) -> None:
        for task in self._bindings.pop((production, iid), []):
            task.cancel()

    async def bound_value(self, production: str, iid: str, field: str, text: str) -> None:
        """A watched source changed: update the field if the value fits its kind."""
        async with self._turn(production):
            scene = self.scenes.running.get(production)
            on_air = scene.on_air.get(iid) if scene is not None else None
            if scene is None or on_air is None:
                return
            await self._bound_value(scene, on_air, field, text)

    async def _bound_value(self, scene: Scene, on_air: OnAir, field: str, text: str) -> None:
        iid = on_air.instance.id
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
        await self.scenes.commit(scene, "updated", inst)

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
