"""A tick's program and clean pictures: the scene on air (or the transition between two scenes),
the graphics layer keyed over the program, and the fade to black over both.

The scene is rendered straight into the program picture; the clean picture is a copy of it taken
before the key, made only on the ticks when someone takes the clean feed."""

from __future__ import annotations

import numpy as np

from services.mixer.keyer import Keyer
from services.mixer.pictures import BLACK_YUV, Picture, hex_to_yuv
from services.mixer.scene_renderer import Rendered, SceneRenderer
from services.mixer.transition_state import TransitionState
from services.mixer.transitions import Mixer


class ProgramComposer:
    def __init__(self, scenes: SceneRenderer, transitions: TransitionState, *, faded: bool) -> None:
        w, h = scenes.width, scenes.height
        self.scenes = scenes
        self.transitions = transitions
        self.clean = Picture(w, h)
        self.program = Picture(w, h)
        self._scene_a = Picture(w, h)
        self._scene_b = Picture(w, h)
        self._mixer = Mixer(w, h)
        self.keyer = Keyer(w, h)
        self.ftb_level = 1.0 if faded else 0.0
        self.ftb_step = 1.0

    def fade_frames(self, frames: int) -> None:
        """The next fade to (or from) black takes `frames` frames."""
        self.ftb_step = 1 / max(1, frames)

    def compose(
        self, index: int, now: float, faded: bool, *, clean: bool = True
    ) -> tuple[Rendered, bool]:
        """Frame `index` of the program (and of the clean feed when `clean`), with `faded` the
        fade to black's target; what the program shows, and whether a transition or a fade
        reached its end."""
        shown, finished = self._scene(index, now)
        if clean:
            np.copyto(self.clean.data, self.program.data)
        self.keyer.apply(self.program)
        return shown, self._fade(faded, clean) or finished

    def _scene(self, index: int, now: float) -> tuple[Rendered, bool]:
        t = self.transitions.active
        if t is None:
            return self.scenes.render(self.transitions.scene, self.program, now), False
        position = t.position(index)
        a = self.scenes.render(t.source, self._scene_a, now)
        b = self.scenes.render(t.target, self._scene_b, now)
        kind = t.transition.type
        if kind == "wipe":
            self._mixer.wipe(self._scene_a, self._scene_b, position, self.program)
        elif kind == "dip":
            color = hex_to_yuv(t.transition.color)
            self._mixer.dip(self._scene_a, self._scene_b, color, position, self.program)
        else:
            self._mixer.mix(self._scene_a, self._scene_b, position, self.program)
        if self.transitions.finish(index):
            return b, True
        both = Rendered(a.sources | b.sources, b.capture_time_us, {**a.showing, **b.showing})
        return both, False

    def _fade(self, faded: bool, clean: bool) -> bool:
        target = 1.0 if faded else 0.0
        reached = False
        if self.ftb_level != target:
            step = self.ftb_step if target > self.ftb_level else -self.ftb_step
            self.ftb_level = min(1.0, max(0.0, self.ftb_level + step))
            reached = self.ftb_level == target
        if self.ftb_level > 0:
            if clean:
                self._mixer.mix_color(self.clean, BLACK_YUV, self.ftb_level, self.clean)
            self._mixer.mix_color(self.program, BLACK_YUV, self.ftb_level, self.program)
        return reached
