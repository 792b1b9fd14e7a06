"""The switcher's rules: commands validated and applied to the durable SwitcherState.

Pure logic, no I/O: the production runner renders what `apply` decides. An invalid command
raises InvalidArgument naming the field and leaves the state untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer import processing_settings, productions

DEFAULT_AUTO_MS = 1000
DEFAULT_FTB_MS = 1000
MANUAL_TYPES = ("mix", "wipe", "dip")


@dataclass
class Change:
    """What the picture must do after a command."""

    program_changed: bool = False
    transition: mixer_pb2.Transition | None = None  # None: cut
    ftb_duration_ms: int | None = None  # set when FTB toggled


def check_manual(cmd: mixer_pb2.MixerCommand.Manual) -> mixer_pb2.Transition:
    """The transition a T-bar command asks for, with defaults; InvalidArgument names the field."""
    if not (math.isfinite(cmd.position) and 0.0 <= cmd.position <= 1.0):
        raise errors.InvalidArgument(
            f"manual.position must be between 0 and 1, got {cmd.position}", field="manual.position"
        )
    t = mixer_pb2.Transition()
    t.CopyFrom(cmd.transition)
    productions.check_transition(t, "manual.transition")
    t.type = t.type or "mix"
    if t.type not in MANUAL_TYPES:
        raise errors.InvalidArgument(
            f"manual.transition.type must be one of {', '.join(MANUAL_TYPES)}",
            field="manual.transition.type",
        )
    t.duration_ms = 0  # the operator's hand is the duration
    return t


def initial_state(production: mixer_pb2.Production) -> mixer_pb2.SwitcherState:
    ids = productions.source_ids(production)
    state = mixer_pb2.SwitcherState(
        program=ids[0] if ids else "",
        preview=ids[1] if len(ids) > 1 else (ids[0] if ids else ""),
        layout=mixer_pb2.Layout(name="full", kind="full"),
        master_gain_db=production.master_gain_db,
    )
    configured = {a.source: a for a in production.audio}
    for source in ids:
        state.audio.append(configured.get(source, mixer_pb2.SourceAudio(source=source)))
    return state


def reconcile(
    state: mixer_pb2.SwitcherState, production: mixer_pb2.Production
) -> mixer_pb2.SwitcherState:
    """A stored state made consistent with the production (sources may have changed)."""
    fresh = initial_state(production)
    ids = set(productions.source_ids(production))
    out = mixer_pb2.SwitcherState()
    out.CopyFrom(state)
    if out.program not in ids:
        out.program = fresh.program
    if out.preview not in ids:
        out.preview = fresh.preview
    if not out.layout.kind:
        out.layout.CopyFrom(fresh.layout)
    stored = {a.source: a for a in state.audio}
    del out.audio[:]
    for a in fresh.audio:
        out.audio.append(stored.get(a.source, a))
    return out


class Switcher:
    def __init__(self, production: mixer_pb2.Production, state: mixer_pb2.SwitcherState) -> None:
        self.production = production
        self.sources = set(productions.source_ids(production))
        self.layouts = {layout.name: layout for layout in production.layouts}
        self.state = state

    def _source(self, value: str, field: str) -> str:
        if value not in self.sources:
            raise errors.InvalidArgument(
                f"{field} {value!r} is not a source of production {self.production.id}",
                field=field,
            )
        return value

    def apply(self, command: mixer_pb2.MixerCommand) -> Change:
        """Validate `command`, then change `self.state`; returns what the picture must do."""
        which = command.WhichOneof("command")
        if which is None:
            raise errors.InvalidArgument("command is empty", field="command")
        new = mixer_pb2.SwitcherState()
        new.CopyFrom(self.state)
        change = getattr(self, f"_{which}")(getattr(command, which), new)
        if new != self.state:
            new.revision = self.state.revision + 1
        self.state = new
        return change

    def _take(self, _cmd: mixer_pb2.MixerCommand.Take, s: mixer_pb2.SwitcherState) -> Change:
        if not s.preview:
            raise errors.InvalidArgument("no source on preview", field="preview")
        s.program, s.preview = s.preview, s.program
        return Change(program_changed=True)

    def _cut(self, cmd: mixer_pb2.MixerCommand.Cut, s: mixer_pb2.SwitcherState) -> Change:
        if not cmd.source:
            return self._take(mixer_pb2.MixerCommand.Take(), s)
        s.program = self._source(cmd.source, "cut.source")
        return Change(program_changed=True)

    def _auto(self, cmd: mixer_pb2.MixerCommand.Auto, s: mixer_pb2.SwitcherState) -> Change:
        t = mixer_pb2.Transition()
        t.CopyFrom(cmd.transition)
        productions.check_transition(t, "auto.transition")
        t.type = t.type or "mix"
        if not cmd.HasField("transition") or not t.duration_ms:
            t.duration_ms = DEFAULT_AUTO_MS
        if cmd.source:
            s.program = self._source(cmd.source, "auto.source")
        else:
            if not s.preview:
                raise errors.InvalidArgument("no source on preview", field="preview")
            s.program, s.preview = s.preview, s.program
        return Change(program_changed=True, transition=None if t.type == "cut" else t)

    def _manual(self, cmd: mixer_pb2.MixerCommand.Manual, s: mixer_pb2.SwitcherState) -> Change:
        """The T-bar changes the durable state only at 1, where it swaps as AUTO does; the held
        positions before that are the picture's (transition_state.py)."""
        check_manual(cmd)
        if cmd.position < 1.0:
            return Change()
        if not s.preview:
            raise errors.InvalidArgument("no source on preview", field="preview")
        s.program, s.preview = s.preview, s.program
        return Change(program_changed=True)

    def _preview(self, cmd: mixer_pb2.MixerCommand.Preview, s: mixer_pb2.SwitcherState) -> Change:
        s.preview = self._source(cmd.source, "preview.source")
        return Change()

    def _layout(self, cmd: mixer_pb2.MixerCommand.SetLayout, s: mixer_pb2.SwitcherState) -> Change:
        if cmd.name and cmd.HasField("layout"):
            raise errors.InvalidArgument("give a layout name or a layout, not both", field="layout")
        if cmd.name:
            if cmd.name in self.layouts:
                layout = self.layouts[cmd.name]
            elif cmd.name in productions.LAYOUT_KINDS and cmd.name != "custom":
                layout = mixer_pb2.Layout(name=cmd.name, kind=cmd.name)
            else:
                raise errors.InvalidArgument(
                    f"no layout {cmd.name!r} in production {self.production.id}",
                    field="layout.name",
                )
        elif cmd.HasField("layout"):
            layout = cmd.layout
            productions.check_layout(layout, "layout.layout", self.sources)
        else:
            raise errors.InvalidArgument("name a layout or give one", field="layout.name")
        productions.check_transition(cmd.transition, "layout.transition")
        s.layout.CopyFrom(layout)
        t = cmd.transition
        transition = t if t.type and t.type != "cut" and t.duration_ms else None
        return Change(program_changed=True, transition=transition)

    def _audio(self, cmd: mixer_pb2.MixerCommand.Audio, s: mixer_pb2.SwitcherState) -> Change:
        if cmd.HasField("gain_db"):
            productions.check_gain(cmd.gain_db, "audio.gain_db")
        if not cmd.source:
            if (
                cmd.HasField("mute")
                or cmd.HasField("afv")
                or processing_settings.sets_processing(cmd)
            ):
                raise errors.InvalidArgument("the master has only a gain", field="audio.source")
            if not cmd.HasField("gain_db"):
                raise errors.InvalidArgument("nothing to change", field="audio.gain_db")
            s.master_gain_db = cmd.gain_db
            return Change()
        self._source(cmd.source, "audio.source")
        changes = [cmd.HasField(name) for name in ("gain_db", "mute", "afv")]
        if not (any(changes) or processing_settings.sets_processing(cmd)):
            raise errors.InvalidArgument("nothing to change", field="audio.gain_db")
        if cmd.HasField("trim_db"):
            processing_settings.check_trim(cmd.trim_db, "audio.trim_db")
        processing_settings.check_processing(cmd, "audio")
        for a in s.audio:
            if a.source == cmd.source:
                if cmd.HasField("gain_db"):
                    a.gain_db = cmd.gain_db
                if cmd.HasField("mute"):
                    a.mute = cmd.mute
                if cmd.HasField("afv"):
                    a.afv = cmd.afv
                processing_settings.merge(a, cmd)
        return Change()

    def _ftb(self, cmd: mixer_pb2.MixerCommand.Ftb, s: mixer_pb2.SwitcherState) -> Change:
        if cmd.duration_ms > productions.MAX_TRANSITION_MS:
            raise errors.InvalidArgument("ftb.duration_ms is too long", field="ftb.duration_ms")
        s.ftb = cmd.on if cmd.HasField("on") else not s.ftb
        return Change(ftb_duration_ms=cmd.duration_ms or DEFAULT_FTB_MS)

    def _get(self, _cmd: mixer_pb2.MixerCommand.Get, _s: mixer_pb2.SwitcherState) -> Change:
        return Change()

    def tally(self, program_sources: set[str], preview_sources: set[str]) -> mixer_pb2.Tally:
        return mixer_pb2.Tally(
            production=self.production.id,
            sources=[
                mixer_pb2.TallyEntry(
                    source=s.id, program=s.id in program_sources, preview=s.id in preview_sources
                )
                for s in self.production.sources
            ],
        )
