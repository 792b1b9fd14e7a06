"""What the program shows between two scenes: a switch waiting for its pictures, a transition
running on the frame clock (AUTO, a layout change), or one held by the T-bar (MixerCommand.Manual).

Pure logic, no I/O and no pixels: each frame the production runner asks which scenes to render
and how far between them. The switcher's durable state changes only when a switch is committed
(a command, or the T-bar reaching 1); a held T-bar is the picture's alone, so a restarted mixer
comes back with the program as stored.

The T-bar:

* the first position above 0 starts a manual transition from the program scene to the preview
  scene (in the current layout), a mix unless the command names a wipe or a dip; type and colour
  stay as started while the hand moves;
* later positions move it; 0 abandons it (nothing swapped); 1 completes it: the runner takes the
  preview to program through the switcher, as AUTO does, and the picture is the target's;
* while it is held, the target follows the preview bus (a new preview source mixes in at once);
* AUTO to the preview carries on from the held position, over the AUTO's duration scaled by what
  remains; CUT completes it at once; any other change of program drops it for the new switch;
* after a completion, another 1 counts only once the bar has left the end, so a controller that
  repeats its end position does not swap program and preview back;
* while an AUTO runs or a switch waits for its pictures, the T-bar is refused (Conflict).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2


@dataclass(frozen=True)
class Scene:
    layout: mixer_pb2.Layout
    bus: str  # the program or preview source, shown in boxes that name no source


@dataclass
class ActiveTransition:
    source: Scene
    target: Scene
    transition: mixer_pb2.Transition
    start_index: int  # the frame at which position is `start_position`; the first shown is +1
    frames: int  # frames from `start_position` to 1
    start_pts_us: int
    start_position: float = 0.0
    held: float | None = None  # the T-bar's position while the operator's hand holds it

    @property
    def manual(self) -> bool:
        return self.held is not None

    def position(self, index: int) -> float:
        if self.held is not None:
            return self.held
        done = (index - self.start_index) / self.frames
        return min(1.0, self.start_position + (1 - self.start_position) * done)


@dataclass
class PendingSwitch:
    target: Scene
    transition: mixer_pb2.Transition | None
    since: float


class ManualStep(enum.Enum):
    """What a T-bar position did."""

    NONE = "none"  # nothing to change (0 with nothing held, or 1 repeated at the end)
    START = "start"
    MOVE = "move"
    ABANDON = "abandon"
    COMPLETE = "complete"  # the runner must commit the switch (preview to program)


class TransitionState:
    """One production's program between scenes; `scene` is what shows once nothing runs."""

    def __init__(self, scene: Scene, fps: int) -> None:
        self.scene = scene
        self.fps = fps
        self.active: ActiveTransition | None = None
        self.pending: PendingSwitch | None = None
        self._bar_at_end = False

    def _frames(self, duration_ms: float) -> int:
        return max(1, round(duration_ms * self.fps / 1000))

    # -- committed switches ------------------------------------------------------------------

    def request(self, target: Scene, transition: mixer_pb2.Transition | None, now: float) -> None:
        """The program changed: switch to `target` once its pictures have arrived."""
        if target != self.scene or self.active is not None:
            self.pending = PendingSwitch(target, transition, now)

    def start_pending(
        self, ready: Callable[[Scene], bool], now: float, hold_s: float, index: int, pts_us: int
    ) -> bool:
        """Start the waiting switch when its target is `ready` (or after the hold time); True
        when it started."""
        pending = self.pending
        if pending is None or (not ready(pending.target) and now - pending.since < hold_s):
            return False
        self.pending = None
        frame_us = 1_000_000 // self.fps
        current = self.active
        t = pending.transition
        if current is not None and current.held is not None:
            if t is not None and pending.target == current.target:
                # AUTO during the T-bar: on from where the hand left it, in the same style.
                carried = mixer_pb2.Transition()
                carried.CopyFrom(current.transition)
                carried.duration_ms = t.duration_ms
                self.active = ActiveTransition(
                    current.source,
                    pending.target,
                    carried,
                    start_index=index - 1,
                    frames=self._frames(t.duration_ms * (1 - current.held)),
                    start_pts_us=pts_us - frame_us,
                    start_position=current.held,
                )
                self.scene = pending.target
                return True
            source = current.source  # the program never left the held transition's source
        else:
            source = current.target if current is not None else self.scene
        self.scene = pending.target
        if t is None:
            self.active = None
        else:
            self.active = ActiveTransition(
                source,
                pending.target,
                t,
                start_index=index - 1,
                frames=self._frames(t.duration_ms),
                start_pts_us=pts_us - frame_us,
            )
        return True

    def finish(self, index: int) -> bool:
        """End a running transition that has reached its target; True when it ended."""
        t = self.active
        if t is not None and t.held is None and t.position(index) >= 1.0:
            self.active = None
            return True
        return False

    # -- the T-bar ---------------------------------------------------------------------------

    def manual(
        self, position: float, transition: mixer_pb2.Transition, preview: Scene, pts_us: int
    ) -> ManualStep:
        """Move the T-bar to `position` (checked by the switcher); the scene it mixes toward is
        `preview`. On COMPLETE the caller commits the switch, then calls `completed`."""
        held = self.active if self.active is not None and self.active.manual else None
        if position < 1.0:
            self._bar_at_end = False
        if held is not None:
            if position >= 1.0:
                return ManualStep.COMPLETE
            if position <= 0.0:
                self.active = None
                return ManualStep.ABANDON
            held.held = position
            return ManualStep.MOVE
        if position <= 0.0 or (position >= 1.0 and self._bar_at_end):
            return ManualStep.NONE
        if self.active is not None or self.pending is not None:
            raise errors.Conflict(
                "a transition is under way; move the T-bar once it has finished", field="manual"
            )
        if position >= 1.0:
            return ManualStep.COMPLETE  # all the way in one move: a cut
        self.active = ActiveTransition(
            self.scene,
            preview,
            transition,
            start_index=0,
            frames=1,
            start_pts_us=pts_us,
            held=position,
        )
        return ManualStep.START

    def completed(self) -> None:
        """The T-bar's switch is committed; the bar must leave the end before 1 counts again."""
        self._bar_at_end = True

    def follow_preview(self, preview: Scene) -> None:
        """A new preview while the T-bar holds a transition: it now mixes toward that."""
        if self.active is not None and self.active.manual:
            self.active.target = preview

    # -- reporting ---------------------------------------------------------------------------

    def to_proto(self, index: int) -> mixer_pb2.TransitionState:
        out = mixer_pb2.TransitionState()
        t = self.active
        if t is not None:
            out.transition.CopyFrom(t.transition)
            out.start_pts_us = t.start_pts_us
            out.position = t.position(index)
            out.active = True
            out.manual = t.manual
        return out
