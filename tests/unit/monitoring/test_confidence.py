"""Black, frozen, silence, loudness and loss detection on a synthetic timeline."""

from __future__ import annotations

import numpy as np

from services.monitoring.confidence import (
    BLACK,
    FROZEN,
    LOST,
    LOUDNESS,
    SILENT,
    Change,
    ConditionTimer,
    ConfidenceMonitor,
    Thresholds,
)

FPS = 25
SAMPLES = 48_000 // FPS
ON_TARGET = 10 ** (-23 / 20)


def moving(seq: int) -> np.ndarray:
    return ((np.arange(320)[None, :] * 2 + seq * 4) % 200 + 30).astype(np.uint8).repeat(180, 0)


def still(_seq: int) -> np.ndarray:
    return moving(0)


def black(_seq: int) -> np.ndarray:
    return np.full((180, 320), 16, np.uint8)


def tone(amplitude: float, seq: int) -> np.ndarray:
    t = (np.arange(SAMPLES) + seq * SAMPLES) / 48_000
    x = (amplitude * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    return np.repeat(x[:, None], 2, axis=1)


def run(
    monitor: ConfidenceMonitor, seconds: float, start: float, picture, amplitude: float
) -> list[tuple[float, Change]]:
    out = []
    first = round(start * FPS)
    for seq in range(first, first + round(seconds * FPS)):
        now = seq / FPS
        out += [(now, c) for c in monitor.video(picture(seq), now)]
        out += [(now, c) for c in monitor.audio(tone(amplitude, seq), now)]
        out += [(now, c) for c in monitor.tick(now)]
    return out


def test_timer_needs_the_full_hold_both_ways() -> None:
    timer = ConditionTimer(raise_after_s=1.0, clear_after_s=0.5)
    assert timer.observe(True, 0.0) is None
    assert timer.observe(False, 0.5) is None  # a flicker resets
    assert timer.observe(True, 0.6) is None
    assert timer.observe(True, 1.5) is None
    assert timer.observe(True, 1.6) is True
    assert timer.observe(False, 2.0) is None
    assert timer.observe(False, 2.5) is False


def test_black_raises_after_one_second_and_clears_once() -> None:
    m = ConfidenceMonitor()
    assert run(m, 4, 0, moving, ON_TARGET) == []
    changes = run(m, 3, 4, black, ON_TARGET) + run(m, 2, 7, moving, ON_TARGET)
    assert [(c.condition, c.raised) for _, c in changes] == [(BLACK, True), (BLACK, False)]
    raised_at, cleared_at = changes[0][0], changes[1][0]
    assert 5.0 <= raised_at <= 5.05  # black from 4 s, raised at 1 s
    assert 7.5 <= cleared_at <= 7.55  # moving from 7 s, cleared after 0.5 s
    assert changes[0][1].value == 16.0


def test_frozen_raises_after_two_seconds_but_not_while_black() -> None:
    m = ConfidenceMonitor()
    run(m, 2, 0, moving, ON_TARGET)
    changes = run(m, 3, 2, still, ON_TARGET) + run(m, 1, 5, moving, ON_TARGET)
    assert [(c.condition, c.raised) for _, c in changes] == [(FROZEN, True), (FROZEN, False)]
    assert 4.0 <= changes[0][0] <= 4.05
    m = ConfidenceMonitor()
    run(m, 1, 0, moving, ON_TARGET)
    changes = run(m, 5, 1, black, ON_TARGET)
    assert [c.condition for _, c in changes] == [BLACK]


def test_silence_raises_after_two_seconds_and_suppresses_loudness() -> None:
    m = ConfidenceMonitor()
    run(m, 4, 0, moving, ON_TARGET)
    changes = run(m, 8, 4, moving, 0.0) + run(m, 1, 12, moving, ON_TARGET)
    assert [(c.condition, c.raised) for _, c in changes] == [(SILENT, True), (SILENT, False)]
    assert 6.0 <= changes[0][0] <= 6.05
    assert m.reading.audio_level_dbfs > -30


def test_loudness_off_target_for_five_seconds_raises() -> None:
    m = ConfidenceMonitor(Thresholds(loudness_after_s=5.0))
    loud = 10 ** (-17 / 20)  # 6 LU over the target
    changes = run(m, 12, 0, moving, loud)
    assert [(c.condition, c.raised) for _, c in changes] == [(LOUDNESS, True)]
    # Short-term exists from 3 s; off target from then; raised 5 s later.
    assert 7.9 <= changes[0][0] <= 8.1
    assert abs(changes[0][1].value - -17.0) < 0.2
    changes = run(m, 6, 12, moving, ON_TARGET)
    assert [(c.condition, c.raised) for _, c in changes] == [(LOUDNESS, False)]


def test_within_tolerance_is_quiet() -> None:
    m = ConfidenceMonitor()
    assert run(m, 10, 0, moving, 10 ** (-24.5 / 20)) == []
    assert abs(m.loudness.integrated - -24.5) < 0.1


def test_lost_when_frames_stop_and_back_when_they_return() -> None:
    m = ConfidenceMonitor()
    assert m.tick(0.0) == []
    assert [(c.condition, c.raised) for c in m.tick(2.1)] == [(LOST, True)]
    assert m.tick(3.0) == []  # once
    run(m, 1, 3.0, moving, ON_TARGET)
    assert not m.active(LOST)


def test_clear_all_on_withdraw() -> None:
    m = ConfidenceMonitor()
    run(m, 3, 0, black, 0.0)
    assert m.active(BLACK) and m.active(SILENT)
    assert {(c.condition, c.raised) for c in m.clear_all()} == {(BLACK, False), (SILENT, False)}
    assert m.clear_all() == []


def test_another_audio_format_is_measured_afresh() -> None:
    m = ConfidenceMonitor()
    t = np.arange(44_100 * 4) / 44_100
    mono = (ON_TARGET * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)[:, None]
    for i in range(0, len(mono), 4410):
        m.audio(mono[i : i + 4410], i / 44_100, 44_100)
    assert (m.channels, m.sample_rate) == (1, 44_100)
    # One channel of a -23 dBFS sine is 3 dB under the same sine in two.
    assert abs(m.loudness.integrated - -26.0) < 0.1


def test_a_frozen_picture_that_goes_black_is_reported_as_black() -> None:
    m = ConfidenceMonitor()
    run(m, 1, 0, moving, ON_TARGET)
    changes = run(m, 3, 1, still, ON_TARGET) + run(m, 2, 4, black, ON_TARGET)
    assert [(c.condition, c.raised) for _, c in changes] == [
        (FROZEN, True),
        (BLACK, True),
        (FROZEN, False),
    ]
    assert "black" in changes[-1][1].message


def test_an_assumed_condition_clears_like_one_raised_here() -> None:
    # Raised by another replica: a picture that moves clears it after clear_after_s (0.5 s).
    m = ConfidenceMonitor()
    m.assume(BLACK)
    changes = run(m, 2, 0, moving, ON_TARGET)
    assert [(c.condition, c.raised) for _, c in changes] == [(BLACK, False)]
    assert 0.5 <= changes[0][0] <= 0.55
    # Still black: nothing changes, it stays raised.
    m = ConfidenceMonitor()
    m.assume(BLACK)
    assert run(m, 3, 0, black, ON_TARGET) == [] and m.active(BLACK)


def test_a_new_target_judges_from_then_on() -> None:
    m = ConfidenceMonitor(Thresholds(loudness_after_s=1.0))
    hot = 10 ** (-16 / 20)  # on a -16 LUFS target, 7 LU over the platform's -23
    changes = run(m, 6, 0, moving, hot)
    assert [(c.condition, c.raised) for _, c in changes] == [(LOUDNESS, True)]
    assert "target -23" in changes[0][1].message
    assert m.retarget(-16.0) and not m.retarget(-16.0)
    changes = run(m, 2, 6, moving, hot)
    assert [(c.condition, c.raised) for _, c in changes] == [(LOUDNESS, False)]
    assert changes[0][0] <= 6.55  # cleared after clear_after_s, as any recovery
    assert "within -16" in changes[0][1].message
    assert m.thresholds.loudness_tolerance_lu == 2.0  # only the target moved
