"""Animation arithmetic: frame counts, easing, and the pose of slide, fade and wipe."""

from __future__ import annotations

from services.graphics.animation import AT_REST, FULL_ALPHA, ease, frames_for, pose
from services.graphics.template import Animation

BOX = (120, 800, 1032, 956)


def test_frame_counts_follow_the_frame_rate() -> None:
    slide = Animation(type="slide", duration_ms=500)
    assert frames_for(slide, 25) == 13  # 12.5 frames, half up
    assert frames_for(slide, 50) == 25
    assert frames_for(slide, 30) == 15
    assert frames_for(Animation(type="fade", duration_ms=10), 25) == 1
    assert frames_for(Animation(type="cut", duration_ms=500), 25) == 0


def test_easings_start_at_0_and_end_at_1() -> None:
    for name in ("linear", "ease_in", "ease_out", "ease_in_out"):
        assert ease(name, 0) == 0 and ease(name, 1) == 1
        values = [ease(name, i / 10) for i in range(11)]
        assert values == sorted(values)
    assert ease("ease_out", 0.5) > 0.5 > ease("ease_in", 0.5)


def test_slide_fade_and_wipe_poses() -> None:
    slide = Animation(type="slide", duration_ms=500, direction="left")
    assert pose(slide, 1.0, BOX, 1920, 1080, 1.0) == AT_REST
    assert pose(slide, 0.0, BOX, 1920, 1080, 1.0).dx == -1032  # just out of the frame
    assert pose(slide, 0.5, BOX, 1920, 1080, 1.0).dx == -516
    bottom = Animation(type="slide", direction="bottom", distance=90)
    assert pose(bottom, 0.0, BOX, 1280, 720, 2 / 3).dy == 60  # distance is in reference pixels
    fade = Animation(type="fade", duration_ms=300)
    assert pose(fade, 0.25, BOX, 1920, 1080, 1.0).alpha == FULL_ALPHA // 4
    wipe = Animation(type="wipe", direction="right")
    assert pose(wipe, 0.5, BOX, 1920, 1080, 1.0).clip == (576, 800, 1032, 956)
    assert pose(Animation(type="wipe"), 0.0, BOX, 1920, 1080, 1.0).clip == (120, 800, 120, 956)
