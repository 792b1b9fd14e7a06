"""The demo's title film is written in the library's house format: stored as it is."""

from __future__ import annotations

from pathlib import Path

from services.common.house_format import needs_preparing
from services.common.media_library import probe
from services.up.opener import make_opener


def test_the_title_film_is_in_the_house_format(tmp_path: Path) -> None:
    path = make_opener(tmp_path / "opener.mp4", 640, 360, title="启航", subtitle="S", seconds=1)
    item = probe(path, "opener")
    assert (item.kind, item.house, item.duration_ms, item.has_audio) == ("clip", True, 1000, True)
    assert not needs_preparing(path)
    settings = path.read_bytes()
    assert b"cabac=0" in settings and b"deblock=0" in settings and b"keyint=25 " in settings
