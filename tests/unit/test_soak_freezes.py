"""The soak's freeze check finds a frozen stretch in a recording of several files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.soak import FREEZE_S, freezes


def _clip(path: Path, source: str) -> None:
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", source,
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mpegts",
            str(path),
        ],
        check=True,
    )  # fmt: skip


def test_a_still_stretch_between_moving_ones_is_found_and_measured(tmp_path: Path) -> None:
    moving = "testsrc2=size=320x180:rate=25:duration=2"
    _clip(tmp_path / "rec-0000.ts", moving)
    _clip(tmp_path / "rec-0001.ts", "color=c=blue:size=320x180:rate=25:duration=3")
    _clip(tmp_path / "rec-0002.ts", moving)
    files = sorted(tmp_path.glob("*.ts"))
    found, recorded = freezes(files)
    assert recorded == pytest.approx(7.0, abs=0.2)
    ((start, length),) = found
    assert start == pytest.approx(2.0, abs=0.1) and length == pytest.approx(3.0, abs=0.2)
    # Moving pictures alone: nothing frozen, whatever the files' boundaries.
    assert freezes([files[0], files[2]])[0] == [] and FREEZE_S <= 1.0
