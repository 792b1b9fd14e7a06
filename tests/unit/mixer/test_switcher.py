"""Switcher rules and production validation (no network)."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer import productions
from services.mixer.switcher import Switcher, initial_state, reconcile

Cmd = mixer_pb2.MixerCommand


def make() -> Switcher:
    p = productions.normalize(
        mixer_pb2.Production(
            id="qihang",
            name="启航·大湾区",
            sources=[mixer_pb2.ProductionSource(id=s) for s in ("gz", "sz", "fs")],
            layouts=[mixer_pb2.Layout(name="two", kind="side_by_side", sources=["", "fs"])],
        )
    )
    return Switcher(p, initial_state(p))


def test_take_cut_auto_and_preview() -> None:
    sw = make()
    assert (sw.state.program, sw.state.preview) == ("gz", "sz")
    change = sw.apply(Cmd(take=Cmd.Take()))
    assert change.program_changed and change.transition is None
    assert (sw.state.program, sw.state.preview) == ("sz", "gz")
    sw.apply(Cmd(cut=Cmd.Cut(source="fs")))
    assert (sw.state.program, sw.state.preview) == ("fs", "gz")
    change = sw.apply(Cmd(auto=Cmd.Auto()))
    assert change.transition is not None and change.transition.type == "mix"
    assert change.transition.duration_ms == 1000
    assert (sw.state.program, sw.state.preview) == ("gz", "fs")
    change = sw.apply(
        Cmd(
            auto=Cmd.Auto(
                transition=mixer_pb2.Transition(type="dip", duration_ms=400, color="#ffffff")
            )
        )
    )
    assert change.transition is not None and change.transition.color == "#ffffff"
    sw.apply(Cmd(preview=Cmd.Preview(source="sz")))
    assert sw.state.preview == "sz"
    assert sw.state.revision == 5


def test_layouts_audio_and_ftb() -> None:
    sw = make()
    change = sw.apply(
        Cmd(
            layout=Cmd.SetLayout(
                name="two", transition=mixer_pb2.Transition(type="wipe", duration_ms=500)
            )
        )
    )
    assert sw.state.layout.kind == "side_by_side" and change.transition is not None
    sw.apply(Cmd(layout=Cmd.SetLayout(name="quad")))  # a preset kind by name
    assert sw.state.layout.kind == "quad"
    sw.apply(Cmd(audio=Cmd.Audio(source="sz", gain_db=-6, afv=True)))
    sz = next(a for a in sw.state.audio if a.source == "sz")
    assert sz.gain_db == -6 and sz.afv and not sz.mute
    sw.apply(Cmd(audio=Cmd.Audio(gain_db=-3)))
    assert sw.state.master_gain_db == -3
    change = sw.apply(Cmd(ftb=Cmd.Ftb()))
    assert sw.state.ftb and change.ftb_duration_ms == 1000
    sw.apply(Cmd(ftb=Cmd.Ftb()))
    assert not sw.state.ftb


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (Cmd(), "command"),
        (Cmd(cut=Cmd.Cut(source="xx")), "cut.source"),
        (Cmd(auto=Cmd.Auto(source="xx")), "auto.source"),
        (Cmd(auto=Cmd.Auto(transition=mixer_pb2.Transition(type="iris"))), "auto.transition.type"),
        (Cmd(layout=Cmd.SetLayout()), "layout.name"),
        (Cmd(layout=Cmd.SetLayout(name="two", layout=mixer_pb2.Layout(kind="full"))), "layout"),
        (Cmd(layout=Cmd.SetLayout(layout=mixer_pb2.Layout(kind="custom"))), "layout.layout"),
        (Cmd(audio=Cmd.Audio(source="gz")), "audio.gain_db"),
        (Cmd(audio=Cmd.Audio(mute=True)), "audio.source"),
        (Cmd(audio=Cmd.Audio(source="gz", gain_db=-200)), "audio.gain_db"),
    ],
)
def test_invalid_commands_change_nothing(command: mixer_pb2.MixerCommand, field: str) -> None:
    sw = make()
    before = mixer_pb2.SwitcherState()
    before.CopyFrom(sw.state)
    with pytest.raises(errors.InvalidArgument) as info:
        sw.apply(command)
    assert info.value.field == field
    assert sw.state == before


def test_normalize_fills_defaults_and_reconcile_follows_source_changes() -> None:
    p = productions.normalize(
        mixer_pb2.Production(id="p", sources=[mixer_pb2.ProductionSource(id="a")])
    )
    assert (p.width, p.height, p.fps, p.sample_rate, p.channels) == (1920, 1080, 25, 48000, 2)
    assert p.sources[0].name == "a" and p.name == "p"
    stored = mixer_pb2.SwitcherState(
        program="gone", preview="a", layout=mixer_pb2.Layout(kind="quad")
    )
    state = reconcile(stored, p)
    assert (
        state.program == "a"
        and state.layout.kind == "quad"
        and [x.source for x in state.audio] == ["a"]
    )
    with pytest.raises(errors.InvalidArgument) as info:
        productions.normalize(mixer_pb2.Production(id="p", width=1280, height=1080))
    assert info.value.field == "width"
