"""Pure parts of the program watcher: handle names and reading the luma plane."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import i420_to_proto
from services.monitoring.program_watcher import luma_plane, production_of, program_handle


def test_program_handles() -> None:
    assert program_handle("qihang") == "prod/qihang/program"
    assert production_of("prod/qihang/program") == "qihang"
    for other in ("prod/qihang/preview", "source/gz", "prod//program", "prod/a/program/x"):
        assert production_of(other) is None


def test_luma_plane_drops_row_padding() -> None:
    image = np.zeros((6, 4), np.uint8)
    image[:4] = np.arange(16, dtype=np.uint8).reshape(4, 4)
    frame = i420_to_proto(image, pts_us=0)
    assert np.array_equal(luma_plane(frame), image[:4])
    padded = media_pb2.VideoFrame(
        width=4,
        height=4,
        pixel_format=media_pb2.PIXEL_FORMAT_I420,
        planes=[media_pb2.Plane(data=bytes(range(32)), stride=8)],
    )
    assert luma_plane(padded).tolist()[1] == [8, 9, 10, 11]


def test_a_short_plane_is_a_value_error() -> None:
    short = media_pb2.VideoFrame(
        width=4, height=4, planes=[media_pb2.Plane(data=b"\0" * 10, stride=4)]
    )
    with pytest.raises(ValueError):
        luma_plane(short)
