"""The program composer: the scene straight into the program, clean copied only when taken."""

from __future__ import annotations

from typing import Any

import numpy as np

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.pictures import BLACK_YUV, Picture
from services.mixer.program_composer import ProgramComposer
from services.mixer.scene_renderer import Rendered
from services.mixer.transition_state import Scene, TransitionState

W, H = 64, 36
SCENE_YUV = (150, 60, 200)


class PaintingScenes:
    """Stands in for the scene renderer: every scene is one flat colour."""

    width, height = W, H

    def render(self, scene: Scene, out: Picture, now: float) -> Rendered:
        out.fill(SCENE_YUV)
        return Rendered({scene.bus}, 0, {scene.bus: "live"})


def composer() -> ProgramComposer:
    scene = Scene(mixer_pb2.Layout(name="full"), "gz")
    scenes: Any = PaintingScenes()
    return ProgramComposer(scenes, TransitionState(scene, 25), faded=False)


def colour(picture: Picture) -> tuple[int, int, int]:
    return int(picture.y[0, 0]), int(picture.u[0, 0]), int(picture.v[0, 0])


def test_the_scene_goes_straight_into_the_program_and_clean_is_left_alone_when_not_taken() -> None:
    c = composer()
    c.clean.fill((1, 2, 3))
    shown, finished = c.compose(0, 0.0, False, clean=False)
    assert shown.sources == {"gz"} and not finished
    assert colour(c.program) == SCENE_YUV
    assert np.all(c.clean.y == 1)  # not written


def test_clean_is_the_scene_when_taken() -> None:
    c = composer()
    c.compose(0, 0.0, False, clean=True)
    assert np.array_equal(c.clean.data, c.program.data)
    assert colour(c.clean) == SCENE_YUV


def test_the_fade_to_black_covers_program_and_clean_when_taken() -> None:
    c = composer()
    c.fade_frames(1)
    _shown, reached = c.compose(0, 0.0, True, clean=True)
    assert reached
    assert colour(c.program) == BLACK_YUV
    assert colour(c.clean) == BLACK_YUV
    c.clean.fill((1, 2, 3))
    c.compose(1, 0.04, True, clean=False)
    assert colour(c.program) == BLACK_YUV
    assert np.all(c.clean.y == 1)
