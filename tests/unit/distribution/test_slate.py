from __future__ import annotations

import numpy as np

from services.distribution.slate import slate_i420


def test_slate_is_an_i420_card_with_text() -> None:
    image = slate_i420(640, 360, "节目即将恢复 / PROGRAM WILL RESUME")
    assert image.shape == (540, 640) and image.dtype == np.uint8
    luma = image[:360]
    background = int(np.median(luma[:20, :20]))
    assert 30 <= background <= 50  # dark blue
    assert (luma > 200).sum() > 500  # white glyphs on both lines
    rows_with_text = np.nonzero((luma > 200).any(axis=1))[0]
    assert rows_with_text.min() < 180 < rows_with_text.max()
