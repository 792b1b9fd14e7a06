"""The program's loudness control: sources at -35 and -15 LUFS come out at the target, silence
does not pull the gain up, and the gain holds still on steady speech. Measured with the tests'
own R128 meter (tests/unit/mixer/r128.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.audio_mixer import AudioMixer
from services.mixer.leveler import Leveler
from tests.unit.mixer.r128 import RATE, integrated, short_term, speech_like, true_peak_dbtp

FPS = 25
FRAME = RATE // FPS


def on_air_in_turn(
    sources: dict[str, np.ndarray], loudness: mixer_pb2.Loudness
) -> tuple[np.ndarray, AudioMixer]:
    """Each source on program in turn (audio follows video), the program's samples."""
    mixer = AudioMixer(list(sources), RATE, 2, FPS, loudness=loudness)
    mixer.configure([mixer_pb2.SourceAudio(source=s, afv=True) for s in sources], 0.0)
    pcm = {s: np.clip(np.rint(x), -32768, 32767).astype(np.int16) for s, x in sources.items()}
    out = []
    for on_air, samples in pcm.items():
        for i in range(0, len(samples), FRAME):
            for source, other in pcm.items():
                mixer.push(source, other[i : i + FRAME])
            out.append(mixer.mix({on_air}, set()).program)
    return np.concatenate(out), mixer


@pytest.mark.parametrize(("target", "seconds"), [(-23.0, 60), (-24.0, 20)])
def test_sources_at_minus_35_and_minus_15_lufs_come_out_at_the_target(
    target: float, seconds: int
) -> None:
    quiet, loud = speech_like(seconds, -35.0, seed=1), speech_like(seconds, -15.0, seed=2)
    program, mixer = on_air_in_turn(
        {"quiet": quiet, "loud": loud}, mixer_pb2.Loudness(target_lufs=target)
    )
    assert integrated(program) == pytest.approx(target, abs=1.0)
    assert true_peak_dbtp(program) <= -1.0
    for half in (program[: seconds * RATE], program[seconds * RATE :]):
        assert integrated(half) == pytest.approx(target, abs=1.0)
        # Short-term within 3 LU once the leveler has settled (10 s after the cut).
        settled = short_term(half)[100:]
        assert settled.min() >= target - 3.0 and settled.max() <= target + 3.0
    program_level = next(level for level in mixer.levels() if level.source == "")
    assert program_level.leveler_gain_db == pytest.approx(target + 15.0, abs=1.0)


def test_without_loudness_control_the_program_is_the_plain_mix() -> None:
    quiet = speech_like(5, -35.0, seed=1)
    program, _ = on_air_in_turn({"quiet": quiet}, mixer_pb2.Loudness(enabled=False))
    assert integrated(program) == pytest.approx(-35.0, abs=0.2)


def feed(leveler: Leveler, samples: np.ndarray) -> list[float]:
    gains = []
    for i in range(0, len(samples), FRAME):
        leveler.measure(samples[i : i + FRAME])
        gains.append(leveler.gain_db)
    return gains


def test_silence_and_pauses_do_not_pull_the_gain_up() -> None:
    leveler = Leveler(RATE, 2, FPS)
    feed(leveler, speech_like(20, -23.0, seed=3))
    settled = leveler.gain_db
    assert settled == pytest.approx(0.0, abs=1.0)
    room_tone = np.random.default_rng(4).standard_normal((30 * RATE, 2)) * 3.0  # about -70
    gains = feed(leveler, room_tone)
    assert max(gains) - settled < 0.1 and min(gains) - settled > -0.1


def test_the_gain_holds_still_on_speech_with_pauses() -> None:
    leveler = Leveler(RATE, 2, FPS)
    gains = np.array(feed(leveler, speech_like(60, -30.0, seed=5, pauses=True)))
    steady = gains[15 * FPS :]
    assert steady.mean() == pytest.approx(7.0, abs=1.0)
    assert steady.max() - steady.min() < 2.0  # no pumping with the syllables or the pauses


def test_a_burst_is_held_down_while_it_lasts_and_let_go_after() -> None:
    speech = speech_like(20, -23.0, seed=6)
    start, end = 15 * RATE, 15 * RATE + 3 * RATE // 10
    with_burst = speech.copy()
    with_burst[start:end] *= 10  # +20 dB for 0.3 s
    plain = feed(Leveler(RATE, 2, FPS), speech)
    gains = feed(Leveler(RATE, 2, FPS), with_burst)
    first, last = start // FRAME, end // FRAME
    assert min(gains[first : last + 1]) < plain[first] - 6  # the cap holds it down
    # Let go once the burst has left the momentary window (0.4 s); the slow gain never moved.
    settled = last + round(0.5 * FPS)
    assert np.abs(np.subtract(gains[settled:], plain[settled:])).max() < 0.5
