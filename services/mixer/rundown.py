"""The rundown player: runs a production's show segment by segment.

Each segment's cues go out in a fixed order — layout, clip cue, program, clip play, audio,
graphics — through the same paths an operator's commands take (the switcher for mixer cues,
`prod.<prod>.gfx.cmd` for graphics), so a cue is validated exactly like a command. A refused cue
is written to the as-run log with its reason and the show goes on. Every executed cue is an
`AsRunEntry` in the JetStream stream ASRUN. Where the rundown stands is kept in the key-value
store, so a mixer that takes the production over carries on from the same segment without firing
its cues twice. A segment that plays a clip whose end is CLIP_END_NEXT gives way to the next
segment when the clip ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from services.common import errors

# The as-run log's stream and set-up live in asrun.py; readers of the log import them from here.
from services.common.asrun import ASRUN_STREAM as ASRUN_STREAM
from services.common.asrun import ensure_asrun_stream as ensure_asrun_stream
from services.common.asrun import write_asrun
from services.common.bus import Bus, KvBucket, subject
from services.common.gen.baycast.v1 import graphics_pb2, mixer_pb2, rundown_pb2
from services.common.media_library import CLIP_PREFIX
from services.common.tasks import cancel_and_wait

RUNDOWN_BUCKET = "mixer-rundowns"
RECENT_ENTRIES = 50
GRAPHICS_TIMEOUT_S = 2.0
TRANSITIONS = ("", "cut", "mix", "wipe", "dip")

MixerApply = Callable[[mixer_pb2.MixerCommand], Awaitable[Any]]


def now_us() -> int:
    return time.time_ns() // 1000


# -- rundown files -------------------------------------------------------------------------------


def _normalise_segment(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """YAML conveniences: `duration: 8` (seconds) or `duration: manual`; `layout: city_wall`."""
    seg = dict(raw)
    if "duration" in seg:
        duration = seg.pop("duration")
        if duration in ("manual", None, 0):
            seg["duration_ms"] = 0
        elif isinstance(duration, int | float) and duration > 0:
            seg["duration_ms"] = round(duration * 1000)
        else:
            raise errors.InvalidArgument(
                f"{where}.duration must be seconds or 'manual', not {duration!r}",
                field=f"{where}.duration",
            )
    if isinstance(seg.get("layout"), str):
        seg["layout"] = {"name": seg["layout"]}
    if isinstance(seg.get("transition"), str):
        seg["transition"] = {"type": seg["transition"]}
    return seg


def parse_rundown(document: Any, source: str = "rundown") -> rundown_pb2.Rundown:
    """A rundown from its YAML/JSON document (the proto's JSON mapping, with conveniences)."""
    if not isinstance(document, dict) or not isinstance(document.get("segments"), list):
        raise errors.InvalidArgument(
            f"{source}: expected a mapping with a list of segments", field="segments"
        )
    doc = dict(document)
    doc["segments"] = [
        _normalise_segment(s if isinstance(s, dict) else {}, f"segments[{i}]")
        for i, s in enumerate(doc["segments"])
    ]
    rundown = rundown_pb2.Rundown()
    try:
        json_format.ParseDict(doc, rundown)
    except json_format.ParseError as exc:
        raise errors.InvalidArgument(
            f"{source}: {str(exc).splitlines()[0]}", field="segments"
        ) from None
    return rundown


def load_rundown_file(path: Path) -> rundown_pb2.Rundown:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise errors.InvalidArgument(f"cannot read {path}: {exc}", field="file") from None
    return parse_rundown(document, str(path))


def validate(rundown: rundown_pb2.Rundown, production: mixer_pb2.Production) -> None:
    """Refuse what can be checked before air: layouts, sources and transitions that do not exist."""
    if not rundown.segments:
        raise errors.InvalidArgument("a rundown needs at least one segment", field="load.segments")
    layouts = {layout.name for layout in production.layouts}
    sources = {s.id for s in production.sources}
    for i, seg in enumerate(rundown.segments):
        where = f"load.segments[{i}]"
        if seg.layout.name and seg.layout.name not in layouts:
            raise errors.InvalidArgument(
                f"{where}: production {production.id} has no layout {seg.layout.name!r}",
                field=f"{where}.layout.name",
            )
        if seg.program and seg.program not in sources:
            raise errors.InvalidArgument(
                f"{where}: production {production.id} has no source {seg.program!r}",
                field=f"{where}.program",
            )
        if seg.play and (not seg.play.startswith(CLIP_PREFIX) or seg.play not in sources):
            raise errors.InvalidArgument(
                f"{where}: production {production.id} has no clip {seg.play!r}",
                field=f"{where}.play",
            )
        if seg.transition.type not in TRANSITIONS:
            raise errors.InvalidArgument(
                f"{where}: unknown transition {seg.transition.type!r}",
                field=f"{where}.transition.type",
            )
        for j, cue in enumerate(seg.graphics):
            if cue.WhichOneof("command") is None:
                raise errors.InvalidArgument(
                    f"{where}.graphics[{j}] is empty", field=f"{where}.graphics[{j}]"
                )


# -- the player ----------------------------------------------------------------------------------


class RundownPlayer:
    def __init__(
        self,
        production: mixer_pb2.Production,
        bus: Bus,
        store: KvBucket[rundown_pb2.RundownStatus],
        apply_mixer: MixerApply,
    ) -> None:
        self.production = production
        self.id = production.id
        self.bus = bus
        self.store = store
        self.apply_mixer = apply_mixer
        self.status = rundown_pb2.RundownStatus(production=production.id, segment=-1)
        self.recent: deque[rundown_pb2.AsRunEntry] = deque(maxlen=RECENT_ENTRIES)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Pick up where the production's rundown stood (on this or another mixer)."""
        entry = await self.store.get(self.id)
        if entry is None:
            return
        self.status = entry.value
        if self.status.running and 0 <= self.status.segment < len(self.status.rundown.segments):
            self._play_from(self.status.segment, fire=False)

    async def stop(self) -> None:
        """Stop playing here without changing the stored status (another mixer may resume)."""
        await self._cancel()

    async def command(self, command: rundown_pb2.RundownCommand) -> rundown_pb2.RundownStatus:
        which = command.WhichOneof("command")
        segments = len(self.status.rundown.segments)
        if which == "load":
            validate(command.load, self.production)
            await self._cancel()
            self.status = rundown_pb2.RundownStatus(
                production=self.id, rundown=command.load, segment=-1
            )
            await self._save()
        elif which == "start":
            self._need_rundown()
            if command.start.segment >= segments:
                raise errors.InvalidArgument(
                    f"the rundown has {segments} segments", field="start.segment"
                )
            await self._jump(command.start.segment)
        elif which in ("next", "prev"):
            self._need_rundown()
            step = 1 if which == "next" else -1
            target = self.status.segment + step
            if self.status.rundown.loop:
                target %= segments
            if not 0 <= target < segments:
                raise errors.InvalidArgument(
                    f"no segment {target}: the rundown has {segments}", field=which
                )
            await self._jump(target)
        elif which == "stop":
            await self._cancel()
            self.status.running = False
            await self._save()
        elif which != "status":
            raise errors.InvalidArgument("command is empty", field="command")
        reply = rundown_pb2.RundownStatus()
        reply.CopyFrom(self.status)
        reply.recent.extend(self.recent)
        return reply

    async def clip_ended(self, source: str) -> None:
        """A clip that ends with CLIP_END_NEXT ended: the segment playing it gives way to the
        next one (the last one's end finishes the rundown); otherwise nothing happens."""
        segments = self.status.rundown.segments
        index = self.status.segment
        if not self.status.running or not 0 <= index < len(segments):
            return
        if segments[index].play != source:
            return
        await self._asrun(index, "clip-end", f"{source} ended", True)
        target = index + 1
        if target >= len(segments) and self.status.rundown.loop:
            target = 0
        if target >= len(segments):
            await self._cancel()
            self.status.running = False
            await self._save()
            await self._asrun(index, "end", "rundown finished", True)
            return
        await self._jump(target)

    def _need_rundown(self) -> None:
        if not self.status.rundown.segments:
            raise errors.NotFound(f"no rundown is loaded for {self.id}", field="load")

    async def _jump(self, index: int) -> None:
        await self._cancel()
        self.status.running = True
        await self._fire(index)
        self._play_from(index, fire=False)

    def _play_from(self, index: int, *, fire: bool) -> None:
        self._task = asyncio.create_task(self._play(index, fire), name=f"rundown-{self.id}")

    async def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            # A cue's NATS request can swallow the cancellation (tasks.py): cancel until it ends.
            await cancel_and_wait([task])

    async def _play(self, index: int, fire: bool) -> None:
        segments = self.status.rundown.segments
        while True:
            if fire:
                await self._fire(index)
            fire = True
            duration_ms = segments[index].duration_ms
            if duration_ms == 0:
                return  # manual: the operator's `next` moves on
            elapsed_s = (now_us() - self.status.segment_started_us) / 1e6
            await asyncio.sleep(max(0.0, duration_ms / 1000 - elapsed_s))
            index += 1
            if index >= len(segments):
                if not self.status.rundown.loop:
                    self.status.running = False
                    await self._save()
                    await self._asrun(index - 1, "end", "rundown finished", True)
                    return
                index = 0

    async def _fire(self, index: int) -> None:
        seg = self.status.rundown.segments[index]
        self.status.segment = index
        self.status.segment_started_us = now_us()
        await self._save()
        with contextlib.suppress(Exception):
            await self.bus.publish(subject("prod", self.id, "rundown", "state"), self.status)
        await self._asrun(index, "segment", seg.title, True)
        if seg.layout.name or seg.layout.HasField("layout"):
            await self._mixer_cue(
                index,
                "layout",
                seg.layout.name or "inline",
                mixer_pb2.MixerCommand(layout=seg.layout),
            )
        transport = mixer_pb2.MixerCommand.Transport
        if seg.play:  # to its first frame before it goes on air, then rolling
            cue = transport(source=seg.play, action=mixer_pb2.TRANSPORT_ACTION_CUE)
            await self._mixer_cue(index, "cue", seg.play, mixer_pb2.MixerCommand(transport=cue))
        if seg.program:
            kind = seg.transition.type or "cut"
            if kind == "cut":
                command = mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut(source=seg.program))
            else:
                command = mixer_pb2.MixerCommand(
                    auto=mixer_pb2.MixerCommand.Auto(transition=seg.transition, source=seg.program)
                )
            await self._mixer_cue(index, "program", f"{kind} to {seg.program}", command)
        if seg.play:
            play = transport(source=seg.play, action=mixer_pb2.TRANSPORT_ACTION_PLAY)
            await self._mixer_cue(index, "play", seg.play, mixer_pb2.MixerCommand(transport=play))
        for audio in seg.audio:
            await self._mixer_cue(
                index, "audio", audio.source or "master", mixer_pb2.MixerCommand(audio=audio)
            )
        for graphics in seg.graphics:
            await self._graphics_cue(index, graphics)

    async def _mixer_cue(
        self, index: int, cue: str, detail: str, command: mixer_pb2.MixerCommand
    ) -> None:
        try:
            await self.apply_mixer(command)
            await self._asrun(index, cue, detail, True)
        except errors.BaycastError as exc:
            await self._asrun(index, cue, detail, False, f"{exc.code}: {exc.message}")

    async def _graphics_cue(self, index: int, cue: graphics_pb2.GfxCommand) -> None:
        verb = cue.WhichOneof("command") or ""
        target = getattr(cue, verb)
        detail = (
            f"{verb} {getattr(target, 'template', '') or getattr(target, 'instance', '')}".strip()
        )
        try:
            await self.bus.request(
                subject("prod", self.id, "gfx", "cmd"),
                cue,
                graphics_pb2.GfxReply,
                timeout=GRAPHICS_TIMEOUT_S,
            )
            await self._asrun(index, "graphics", detail, True)
        except errors.BaycastError as exc:
            await self._asrun(index, "graphics", detail, False, f"{exc.code}: {exc.message}")

    async def _asrun(self, index: int, cue: str, detail: str, ok: bool, error: str = "") -> None:
        segments = self.status.rundown.segments
        entry = rundown_pb2.AsRunEntry(
            production=self.id,
            time_us=now_us(),
            segment=index,
            title=segments[index].title if 0 <= index < len(segments) else "",
            cue=cue,
            detail=detail,
            ok=ok,
            error=error,
        )
        self.recent.append(entry)
        await write_asrun(self.bus, entry)

    async def _save(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.put(self.id, self.status)
