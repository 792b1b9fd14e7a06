"""Dirty rectangles: nothing sent for a still layer, only what changed for a moving one."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from services.graphics.animation import AT_REST, Pose
from services.graphics.compositor import Compositor, InstanceFrame, merge
from services.graphics.renderer import InstanceArt, Sprite

NOW = datetime(2026, 3, 5, tzinfo=UTC)


def art(x: int, y: int, w: int, h: int, value: int = 200) -> InstanceArt:
    rgba = np.full((h, w, 4), value, dtype=np.uint8)
    rgba[..., 3] = 255
    return InstanceArt((Sprite(rgba, x, y),), (x, y, x + w, y + h), 1)


def test_a_still_layer_sends_nothing_after_the_first_frame() -> None:
    c = Compositor(320, 180)
    a = art(10, 20, 30, 40)
    first = c.compose([InstanceFrame(a, AT_REST)], NOW, False)
    assert [box for box, _ in first.patches] == [(10, 20, 40, 60)]
    assert first.patches[0][1] == a.parts[0].rgba.tobytes()  # type: ignore[union-attr]
    assert c.compose([InstanceFrame(a, AT_REST)], NOW, False).patches == []


def test_a_move_patches_the_union_of_old_and_new_places_narrowed_to_what_changed() -> None:
    c = Compositor(320, 180)
    a = art(10, 20, 30, 40)
    c.compose([InstanceFrame(a, AT_REST)], NOW, False)
    moved = c.compose([InstanceFrame(a, Pose(dx=5))], NOW, False)
    # Columns 15..39 hold the same pixels before and after: only the edges changed.
    assert [box for box, _ in moved.patches] == [(10, 20, 45, 60)]
    assert not c.canvas[20:60, 10:15].any() and c.canvas[20:60, 15:45, 3].all()
    faded = c.compose([InstanceFrame(a, Pose(dx=5, alpha=128))], NOW, False)
    assert faded.patches[0][0] == (15, 20, 45, 60)
    assert c.canvas[30, 20].tolist() == [100, 100, 100, 127]


def test_clips_stacking_and_full_frames() -> None:
    c = Compositor(100, 50)
    low, high = art(0, 0, 60, 50, 10), art(40, 0, 60, 50, 250)
    c.compose([InstanceFrame(low, AT_REST), InstanceFrame(high, AT_REST)], NOW, False)
    assert c.canvas[0, 50, 0] == 250
    swapped = c.compose([InstanceFrame(high, AT_REST), InstanceFrame(low, AT_REST)], NOW, True)
    assert [box for box, _ in swapped.patches] == [(40, 0, 60, 50)]
    assert c.canvas[0, 50, 0] == 10
    assert swapped.full == c.canvas.tobytes()
    clipped = c.compose([InstanceFrame(low, Pose(clip=(0, 0, 20, 50)))], NOW, False)
    assert not c.canvas[:, 20:].any() and c.canvas[:, :20, 3].all()
    assert clipped.patches[0][0] == (20, 0, 100, 50)


def test_a_change_in_one_channel_alone_is_sent() -> None:
    c = Compositor(64, 32)
    c.compose([InstanceFrame(art(0, 0, 64, 32, 200), AT_REST)], NOW, False)
    other = art(0, 0, 64, 32, 200)
    other.parts[0].rgba[7, 9, 3] = 254  # type: ignore[union-attr]
    changed = c.compose([InstanceFrame(other, AT_REST)], NOW, False)
    assert [box for box, _ in changed.patches] == [(9, 7, 10, 8)]
    assert changed.patches[0][1] == bytes([200, 200, 200, 254])


def test_only_the_inked_pixels_of_a_sprite_are_drawn_and_sent() -> None:
    c = Compositor(320, 180)
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[10:20, 5:15] = 255  # the rest of the sprite is transparent
    a = InstanceArt((Sprite(rgba, 100, 50),), (100, 50, 160, 90), 1)
    first = c.compose([InstanceFrame(a, AT_REST)], NOW, False)
    assert [box for box, _ in first.patches] == [(105, 60, 115, 70)]
    moved = c.compose([InstanceFrame(a, Pose(dx=30))], NOW, False)
    assert [box for box, _ in moved.patches] == [(105, 60, 115, 70), (135, 60, 145, 70)]
    assert c.canvas[60:70, 135:145].all() and c.canvas[..., 3].sum() == 255 * 100
    blank = InstanceArt((Sprite(np.zeros((8, 8, 4), dtype=np.uint8), 0, 0),), (0, 0, 8, 8), 1)
    gone = c.compose([InstanceFrame(blank, AT_REST)], NOW, False)
    assert [box for box, _ in gone.patches] == [(135, 60, 145, 70)] and not c.canvas.any()


def test_merge_joins_overlapping_and_touching_rectangles() -> None:
    assert merge([(0, 0, 10, 10), (5, 5, 20, 20), (30, 30, 40, 40)]) == [
        (0, 0, 20, 20),
        (30, 30, 40, 40),
    ]
    assert merge([(0, 0, 10, 10), (10, 0, 20, 10)]) == [(0, 0, 20, 10)]
