"""How `baycast ctl media` writes sizes, durations and an upload's progress."""

from __future__ import annotations

import pytest

from services.mixer.media_ctl import (
    PROGRESS_FROM_BYTES,
    PreparingLines,
    ProgressLines,
    duration,
    size_text,
)


def test_sizes_and_durations_read_as_an_operator_says_them() -> None:
    assert [size_text(n) for n in (31_400, 2_183_803, 4_700_000_000)] == [
        "31 kB",
        "2.2 MB",
        "4.7 GB",
    ]
    assert [duration(ms) for ms in (0, 1000, 65_240, 3_600_000)] == [
        "-",
        "0:01.0",
        "1:05.2",
        "60:00.0",
    ]


def test_a_large_upload_shows_a_line_a_tenth_a_small_one_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    chunk = 128 * 1024
    small, large = ProgressLines("card"), ProgressLines("opener")
    for stored in range(0, 40 * chunk, chunk):
        small(stored, 40 * chunk)
    total = PROGRESS_FROM_BYTES + 5 * chunk
    for stored in [*range(0, total, chunk), total]:
        large(stored, total)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"opener: 0% of {size_text(total)}"
    assert lines[-1] == f"opener: 100% of {size_text(total)}"
    assert [int(line.split()[1].rstrip("%")) // 10 for line in lines] == list(range(11))


def test_preparing_shows_a_line_a_tenth(capsys: pytest.CaptureFixture[str]) -> None:
    lines = PreparingLines("opener")
    for frame in range(251):
        lines(frame / 250)
    assert capsys.readouterr().err.splitlines() == [
        f"opener: preparing {tenth * 10}%" for tenth in range(11)
    ]
