"""Compositing, transitions, keys, layouts and slates on numpy pictures (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.mixer import layouts, slates
from services.mixer.keyer import Keyer
from services.mixer.pictures import Picture, blit, border, hex_to_yuv, rgb_to_yuv
from services.mixer.transitions import Mixer

A = (60, 100, 160)
B = (180, 160, 90)


def planes_equal(p: Picture, yuv: tuple[int, int, int]) -> bool:
    return bool((p.y == yuv[0]).all() and (p.u == yuv[1]).all() and (p.v == yuv[2]).all())


def test_mix_is_the_weighted_mean_and_ends_exactly() -> None:
    a, b, out = Picture.solid(64, 36, A), Picture.solid(64, 36, B), Picture(64, 36)
    m = Mixer(64, 36)
    m.mix(a, b, 0.5, out)
    assert planes_equal(out, (120, 130, 125))
    m.mix(a, b, 0.0, out)
    assert planes_equal(out, A)
    m.mix(a, b, 1.0, out)
    assert planes_equal(out, B)
    m.mix(a, b, 0.25, out)
    assert abs(int(out.y[0, 0]) - 90) <= 1


def test_wipe_moves_an_edge_and_dip_passes_through_the_colour() -> None:
    a, b, out = Picture.solid(64, 36, A), Picture.solid(64, 36, B), Picture(64, 36)
    m = Mixer(64, 36)
    m.wipe(a, b, 0.5, out)
    assert (out.y[:, :32] == B[0]).all() and (out.y[:, 32:] == A[0]).all()
    assert (out.u[:, :16] == B[1]).all() and (out.u[:, 16:] == A[1]).all()
    white = hex_to_yuv("#ffffff")
    m.dip(a, b, white, 0.5, out)
    assert planes_equal(out, white)
    m.dip(a, b, white, 0.0, out)
    assert planes_equal(out, A)
    m.dip(a, b, white, 1.0, out)
    assert planes_equal(out, B)


def test_blit_crops_and_scales_into_the_box() -> None:
    dst = Picture.solid(64, 36, (16, 128, 128))
    src = Picture.solid(32, 20, A)
    src.y[:, :16] = 200  # left half bright: a crop of the left half removes it
    blit(dst, src, 10, 4, 16, 20, (0.5, 0.0, 0.0, 0.0))
    assert (dst.y[4:24, 10:26] == A[0]).all()
    assert (dst.y[:4] == 16).all() and (dst.y[:, :10] == 16).all()
    blit(dst, src, 0, 0, 64, 36)  # scaled: nearest neighbour
    assert (dst.y[:, :32] == 200).all() and (dst.y[:, 32:] == A[0]).all()
    border(dst, 0, 0, 64, 36, 2, (235, 128, 128))
    assert (dst.y[0] == 235).all() and (dst.y[:, 63] == 235).all() and dst.y[10, 10] == 200


def test_layout_presets_place_boxes_in_even_pixels() -> None:
    wall = layouts.place(
        mixer_pb2.Layout(kind="city_wall", sources=[str(i) for i in range(10)]), 1920, 1080
    )
    assert len(wall) == 10
    assert (wall[0].x, wall[0].y, wall[0].width, wall[0].height) == (0, 0, 1536, 864)
    assert {(b.width, b.height) for b in wall[1:]} == {(384, 216)}
    # No two boxes overlap, and together they fill the frame.
    covered = np.zeros((1080, 1920), dtype=np.uint8)
    for b in wall:
        covered[b.y : b.y + b.height, b.x : b.x + b.width] += 1
    assert covered.max() == 1 and covered.min() == 1
    assert [b.source for b in wall] == [str(i) for i in range(10)]
    quad = layouts.place(mixer_pb2.Layout(kind="quad"), 1280, 720)
    assert [(b.x, b.y) for b in quad] == [(0, 0), (640, 0), (0, 360), (640, 360)]
    assert len(layouts.place(mixer_pb2.Layout(kind="grid3x3"), 1920, 1080)) == 9
    pip = layouts.place(mixer_pb2.Layout(kind="pip", sources=["", "b"]), 1920, 1080)
    assert pip[0].source == "" and pip[1].source == "b" and pip[1].border_px == 4 and pip[1].z >= 1
    custom = mixer_pb2.Layout(
        kind="custom",
        boxes=[
            mixer_pb2.Box(source="top", x=0.1, y=0.1, width=0.2, height=0.2, z=5, crop_left=0.5),
            mixer_pb2.Box(source="bottom", x=0, y=0, width=0.5, height=0.5),
        ],
    )
    placed = layouts.place(custom, 1280, 720)
    assert [b.source for b in placed] == ["bottom", "top"]  # drawn by z
    assert all(v % 2 == 0 for b in placed for v in (b.x, b.y, b.width, b.height))
    # The cropped box asks for its source twice as wide, so the crop fills it.
    assert placed[1].source_size() == (placed[1].width * 2, placed[1].height)


def test_keyer_blends_premultiplied_layers_only_where_they_are() -> None:
    keyer = Keyer(64, 32)
    red = np.zeros((8, 10, 4), dtype=np.uint8)
    red[:] = (255, 0, 0, 255)
    half = np.zeros((4, 4, 4), dtype=np.uint8)
    half[:] = (0, 0, 0, 128)  # half-transparent black
    keyer.update(
        media_pb2.LayerFrame(
            width=64,
            height=32,
            full=True,
            patches=[
                media_pb2.LayerPatch(
                    rect=media_pb2.Rect(x=4, y=4, width=10, height=8), rgba=red.tobytes()
                ),
                media_pb2.LayerPatch(
                    rect=media_pb2.Rect(x=40, y=20, width=4, height=4), rgba=half.tobytes()
                ),
            ],
        )
    )
    assert len(keyer.active) == 2
    pic = Picture.solid(64, 32, A)
    keyer.apply(pic)
    want = rgb_to_yuv(255, 0, 0)
    assert abs(int(pic.y[8, 8]) - want[0]) <= 1 and abs(int(pic.v[4, 4]) - want[2]) <= 1
    assert pic.y[20, 20] == A[0] and pic.y[0, 0] == A[0]
    # src * (255 - 128) / 255 + 16 * 128 / 255
    assert abs(int(pic.y[21, 41]) - round(A[0] * 127 / 255 + 16 * 128 / 255)) <= 1
    # A dirty patch clearing the red box: it leaves the active set.
    clear = np.zeros((8, 10, 4), dtype=np.uint8)
    keyer.update(
        media_pb2.LayerFrame(
            width=64,
            height=32,
            patches=[
                media_pb2.LayerPatch(
                    rect=media_pb2.Rect(x=4, y=4, width=10, height=8), rgba=clear.tobytes()
                )
            ],
        )
    )
    assert len(keyer.active) == 1
    pic = Picture.solid(64, 32, A)
    keyer.apply(pic)
    assert pic.y[8, 8] == A[0]
    assert not keyer.update(media_pb2.LayerFrame(width=32, height=32))  # wrong size: refused


@pytest.mark.parametrize("size", [(1920, 1080), (320, 180)])
def test_slate_is_rendered_once_per_size(size: tuple[int, int]) -> None:
    first = slates.slate("广州台", *size)
    assert (first.width, first.height) == size
    assert slates.slate("广州台", *size) is first
    # Text was drawn: the slate is not a flat picture.
    assert first.y.std() > 5
    assert 30 < int(first.y[2, 2]) < 70
    label = slates.label("广州 Guangzhou", 24)
    assert label.height == 24 and label.width % 2 == 0 and label.y.max() > 200


def test_a_full_frame_layer_is_keyed_only_in_its_visible_bands() -> None:
    layer = np.zeros((1080, 1920, 4), dtype=np.uint8)
    layer[40:120, 1680:1880] = (255, 255, 255, 255)  # logo bug
    layer[860:1020, 160:1760] = (0, 0, 128, 128)  # lower third
    keyer = Keyer(1920, 1080)
    keyer.update(
        media_pb2.LayerFrame(
            width=1920,
            height=1080,
            full=True,
            patches=[
                media_pb2.LayerPatch(
                    rect=media_pb2.Rect(x=0, y=0, width=1920, height=1080), rgba=layer.tobytes()
                )
            ],
        )
    )
    assert sorted(keyer.active) == [(160, 860, 1760, 1020), (1680, 40, 1880, 120)]
    pic = Picture.solid(1920, 1080, A)
    keyer.apply(pic)
    assert pic.y[80, 1700] == 235 and pic.y[500, 900] == A[0] and pic.y[900, 170] < A[0]


def test_the_key_is_bt709_premultiplied_and_its_chroma_stays_inside_its_alpha() -> None:
    """Random premultiplied pixels against BT.709 limited range computed in floats: within one
    code value. A block with no alpha keys nothing, whatever its neighbours hold."""
    rng = np.random.default_rng(7)
    h, w = 64, 96
    alpha = rng.integers(0, 256, (h, w)).astype(np.float64)
    alpha[:, :32] = 0  # a transparent band beside an opaque one
    alpha[:, 32:34] = 255
    rgb = rng.integers(0, 256, (h, w, 3)) * alpha[..., None] / 255
    layer = np.dstack([np.rint(rgb), alpha]).astype(np.uint8)
    keyer = Keyer(w, h)
    keyer.update(
        media_pb2.LayerFrame(
            width=w,
            height=h,
            full=True,
            patches=[
                media_pb2.LayerPatch(
                    rect=media_pb2.Rect(x=0, y=0, width=w, height=h), rgba=layer.tobytes()
                )
            ],
        )
    )
    r, g, b, a = (layer[..., i].astype(np.float64) for i in range(4))
    # Premultiplied: the limited range's offsets scaled by alpha.
    y = (0.2126 * r + 0.7152 * g + 0.0722 * b) * 219 / 255 + 16 * a / 255
    u = (-0.1146 * r - 0.3854 * g + 0.5 * b) * 224 / 255 + 128 * a / 255
    v = (0.5 * r - 0.4542 * g - 0.0458 * b) * 224 / 255 + 128 * a / 255

    def quads(x: np.ndarray) -> np.ndarray:
        return (x[0::2, 0::2] + x[0::2, 1::2] + x[1::2, 0::2] + x[1::2, 1::2]) / 4

    assert np.abs(keyer.key.y.astype(np.int64) - np.rint(y)).max() <= 1
    assert np.abs(keyer.key.u.astype(np.int64) - np.rint(quads(u))).max() <= 1
    assert np.abs(keyer.key.v.astype(np.int64) - np.rint(quads(v))).max() <= 1
    assert (keyer.inv_y == 255 - layer[..., 3]).all()
    assert np.abs(keyer.inv_c.astype(np.int64) - np.rint(255 - quads(a))).max() <= 1
    assert (keyer.key.y[:, :32] == 0).all() and (keyer.key.u[:, :16] == 0).all()
    assert (keyer.key.v[:, :16] == 0).all() and (keyer.inv_c[:, :16] == 255).all()
