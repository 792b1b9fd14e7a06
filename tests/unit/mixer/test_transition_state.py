"""The program between scenes: the T-bar held, moved, completed and abandoned, and AUTO, CUT and
the preview bus while it is held (the switcher and the transition state, no network)."""

from __future__ import annotations

import math

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer import productions
from services.mixer.switcher import Switcher, check_manual, initial_state
from services.mixer.transition_state import ManualStep, Scene, TransitionState

Cmd = mixer_pb2.MixerCommand
FPS = 25
FRAME_US = 1_000_000 // FPS


class Desk:
    """The switcher and the transition state wired as the production runner wires them."""

    def __init__(self) -> None:
        p = productions.normalize(
            mixer_pb2.Production(
                id="qihang", sources=[mixer_pb2.ProductionSource(id=s) for s in ("gz", "sz", "fs")]
            )
        )
        self.switcher = Switcher(p, initial_state(p))
        self.transitions = TransitionState(self.scene(self.switcher.state.program), FPS)
        self.index = 0

    def scene(self, bus: str) -> Scene:
        return Scene(self.switcher.state.layout, bus)

    def manual(self, position: float, **transition: str) -> ManualStep:
        cmd = Cmd.Manual(position=position, transition=mixer_pb2.Transition(**transition))
        step = self.transitions.manual(
            position,
            check_manual(cmd),
            self.scene(self.switcher.state.preview),
            (self.index + 1) * FRAME_US,
        )
        if step is ManualStep.COMPLETE:
            self.apply(Cmd(manual=cmd))
            self.transitions.completed()
        return step

    def apply(self, cmd: mixer_pb2.MixerCommand) -> None:
        change = self.switcher.apply(cmd)
        s = self.switcher.state
        if change.program_changed:
            self.transitions.request(self.scene(s.program), change.transition, 0.0)
        else:
            self.transitions.follow_preview(self.scene(s.preview))

    def tick(self) -> tuple[str, str, float]:
        """One frame: (source bus, target bus, position), or (bus, "", 1.0) when nothing runs."""
        self.index += 1
        t = self.transitions
        t.start_pending(lambda _scene: True, 0.0, 0.5, self.index, self.index * FRAME_US)
        active = t.active
        if active is None:
            return t.scene.bus, "", 1.0
        position = active.position(self.index)
        t.finish(self.index)
        return active.source.bus, active.target.bus, position

    def buses(self) -> tuple[str, str]:
        return self.switcher.state.program, self.switcher.state.preview


def test_the_bar_starts_moves_and_completes_as_auto_would() -> None:
    desk = Desk()
    assert desk.manual(0.0) is ManualStep.NONE and desk.transitions.active is None
    assert desk.manual(0.25) is ManualStep.START
    assert desk.tick() == ("gz", "sz", 0.25)
    state = desk.transitions.to_proto(desk.index)
    assert state.active and state.manual and state.position == 0.25
    assert state.transition.type == "mix" and state.start_pts_us == desk.index * FRAME_US
    assert desk.buses() == ("gz", "sz") and desk.switcher.state.revision == 0  # nothing durable

    assert desk.manual(0.6) is ManualStep.MOVE
    assert desk.tick() == ("gz", "sz", 0.6)
    assert desk.tick() == ("gz", "sz", 0.6)  # held, not running: the clock does not move it
    assert desk.manual(1.0) is ManualStep.COMPLETE
    assert desk.buses() == ("sz", "gz") and desk.switcher.state.revision == 1
    assert desk.tick() == ("sz", "", 1.0)
    assert not desk.transitions.to_proto(desk.index).active

    # A controller repeating its end position does not swap back; leaving the end re-arms it.
    assert desk.manual(1.0) is ManualStep.NONE
    assert desk.buses() == ("sz", "gz")
    assert desk.manual(0.3) is ManualStep.START
    assert desk.tick() == ("sz", "gz", 0.3)


def test_back_to_zero_abandons_and_swaps_nothing() -> None:
    desk = Desk()
    desk.manual(0.4, type="wipe")
    assert desk.tick() == ("gz", "sz", 0.4)
    assert desk.manual(0.0) is ManualStep.ABANDON
    assert desk.tick() == ("gz", "", 1.0)
    assert desk.buses() == ("gz", "sz") and desk.switcher.state.revision == 0
    assert not desk.transitions.to_proto(desk.index).active


def test_all_the_way_in_one_move_is_a_cut() -> None:
    desk = Desk()
    assert desk.manual(1.0) is ManualStep.COMPLETE
    assert desk.buses() == ("sz", "gz")
    assert desk.tick() == ("sz", "", 1.0)


def test_auto_carries_on_from_the_held_position_in_the_bars_style() -> None:
    desk = Desk()
    desk.manual(0.5, type="dip", color="#ffffff")
    desk.tick()
    auto = Cmd.Auto(transition=mixer_pb2.Transition(type="mix", duration_ms=1000))
    desk.apply(Cmd(auto=auto))
    assert desk.buses() == ("sz", "gz")
    # What remains (half) of one second: 12.5 frames, rounded to 12.
    positions = []
    for _ in range(20):
        source, target, position = desk.tick()
        if not target:
            break
        assert (source, target) == ("gz", "sz")
        positions.append(position)
    assert len(positions) == 12
    assert positions[0] == pytest.approx(0.5 + 0.5 / 12) and positions[-1] == 1.0
    assert positions == sorted(positions)
    t = desk.transitions
    assert t.active is None and t.scene.bus == "sz"


def test_auto_state_reports_a_running_transition_from_the_held_position() -> None:
    desk = Desk()
    desk.manual(0.5, type="dip", color="#ffffff")
    desk.tick()
    desk.apply(Cmd(auto=Cmd.Auto(transition=mixer_pb2.Transition(duration_ms=2000))))
    desk.tick()
    state = desk.transitions.to_proto(desk.index)
    assert state.active and not state.manual
    assert state.transition.type == "dip" and state.transition.color == "#ffffff"
    assert state.transition.duration_ms == 2000
    assert state.position == pytest.approx(0.5 + 0.5 / 25)


def test_cut_completes_at_once_and_a_cut_elsewhere_drops_the_bar() -> None:
    desk = Desk()
    desk.manual(0.7)
    desk.tick()
    desk.apply(Cmd(cut=Cmd.Cut()))
    assert desk.buses() == ("sz", "gz")
    assert desk.tick() == ("sz", "", 1.0)

    desk = Desk()
    desk.manual(0.7)
    desk.tick()
    desk.apply(Cmd(cut=Cmd.Cut(source="fs")))
    assert desk.tick() == ("fs", "", 1.0)
    assert desk.buses() == ("fs", "sz")


def test_a_new_preview_while_held_becomes_the_target() -> None:
    desk = Desk()
    desk.manual(0.5)
    desk.apply(Cmd(preview=Cmd.Preview(source="fs")))
    assert desk.tick() == ("gz", "fs", 0.5)
    desk.manual(1.0)
    assert desk.buses() == ("fs", "gz")
    assert desk.tick() == ("fs", "", 1.0)


def test_the_bar_keeps_the_style_it_started_with() -> None:
    desk = Desk()
    desk.manual(0.2, type="dip", color="#ff0000")
    desk.manual(0.4, type="wipe")
    state = desk.transitions.to_proto(desk.index)
    assert state.transition.type == "dip" and state.transition.color == "#ff0000"
    assert state.position == 0.4


def test_the_bar_is_refused_while_an_auto_runs_or_a_switch_waits() -> None:
    desk = Desk()
    desk.apply(Cmd(auto=Cmd.Auto()))  # waiting for its pictures until the next frame
    with pytest.raises(errors.Conflict) as info:
        desk.manual(0.5)
    assert info.value.field == "manual"
    desk.tick()
    with pytest.raises(errors.Conflict):
        desk.manual(1.0)
    assert desk.manual(0.0) is ManualStep.NONE  # a bar at rest disturbs nothing
    assert desk.buses() == ("sz", "gz")
    for _ in range(30):
        desk.tick()
    assert desk.manual(0.5) is ManualStep.START


@pytest.mark.parametrize(
    ("position", "transition", "field"),
    [
        (-0.1, {}, "manual.position"),
        (1.01, {}, "manual.position"),
        (math.nan, {}, "manual.position"),
        (math.inf, {}, "manual.position"),
        (0.5, {"type": "cut"}, "manual.transition.type"),
        (0.5, {"type": "iris"}, "manual.transition.type"),
        (0.5, {"type": "dip", "color": "white"}, "manual.transition.color"),
    ],
)
def test_invalid_positions_and_styles_are_refused_and_change_nothing(
    position: float, transition: dict[str, str], field: str
) -> None:
    desk = Desk()
    desk.manual(0.3)
    cmd = Cmd(manual=Cmd.Manual(position=position, transition=mixer_pb2.Transition(**transition)))
    with pytest.raises(errors.InvalidArgument) as info:
        check_manual(cmd.manual)
    assert info.value.field == field
    before = mixer_pb2.SwitcherState()
    before.CopyFrom(desk.switcher.state)
    with pytest.raises(errors.InvalidArgument):
        desk.switcher.apply(cmd)
    assert desk.switcher.state == before
    assert desk.tick() == ("gz", "sz", 0.3)
