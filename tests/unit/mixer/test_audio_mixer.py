"""The audio mixer's arithmetic: gains, mute, AFV, mix-minus, jitter buffer, meters."""

from __future__ import annotations

import numpy as np

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.audio_mixer import AudioBuffer, AudioMixer

N = 1920


def tone(hz: float, amplitude: float = 0.25, n: int = N) -> np.ndarray:
    t = np.arange(n) / 48_000
    mono = (np.sin(2 * np.pi * hz * t) * amplitude * 32767).astype(np.int16)
    return np.repeat(mono[:, None], 2, axis=1)


def feed(mixer: AudioMixer, frames: int = 3) -> None:
    for _ in range(frames):
        mixer.push("a", tone(500))
        mixer.push("b", tone(750, 0.1))


def test_gain_mute_afv_and_mixminus() -> None:
    mixer = AudioMixer(["a", "b"], 48_000, 2, 25)
    feed(mixer)
    result = mixer.mix({"a"}, {"a", "b"})
    assert result.program.shape == (N, 2)
    np.testing.assert_allclose(result.program, tone(500).astype(int) + tone(750, 0.1), atol=1)
    np.testing.assert_array_equal(result.mixminus["a"], tone(750, 0.1))
    np.testing.assert_array_equal(result.mixminus["b"], tone(500))

    mixer.configure([mixer_pb2.SourceAudio(source="a", gain_db=-6.0206)], 0.0)
    feed(mixer)
    result = mixer.mix({"a"}, set())
    want = np.rint(tone(500) * 0.5) + tone(750, 0.1)
    assert np.abs(result.program - want).max() <= 1

    mixer.configure([mixer_pb2.SourceAudio(source="b", afv=True)], 0.0)
    feed(mixer)
    result = mixer.mix({"a"}, set())  # b is off program: silent under AFV
    assert np.abs(result.program - np.rint(tone(500) * 0.5)).max() <= 1
    mixer.configure([mixer_pb2.SourceAudio(source="a", mute=True)], -6.0)
    feed(mixer)
    assert np.abs(mixer.mix({"a"}, set()).program).max() == 0

    levels = {lv.source: lv for lv in mixer.levels()}
    assert -13.5 < levels["a"].peak_dbfs < -11.5  # 0.25 full scale, metered before the fader
    assert levels["a"].rms_dbfs < levels["a"].peak_dbfs


def test_a_burst_leaves_no_lasting_delay() -> None:
    """Depth a burst left above the start level (plus one read) is dropped within a window."""
    buf = AudioBuffer(2, start_samples=N, max_samples=12 * N, window_reads=10)
    out = np.empty((N, 2), dtype=np.float32)
    for _ in range(6):  # a stall upstream, then everything at once: 6 frames waiting
        buf.push(tone(500))
    depths = []
    for _ in range(25):  # then the steady pace: one frame in, one frame out
        buf.push(tone(500))
        assert buf.read(N, out)
        depths.append(buf.depth)
    assert depths[0] == 6 * N  # the burst, still waiting
    # Before each read the depth is back at the start level: one frame, read at once.
    assert depths[-1] == 0 and buf.trimmed == 6 * N and buf.underruns == 0
    steady = AudioBuffer(2, start_samples=N, max_samples=12 * N, window_reads=10)
    steady.push(tone(500))
    for _ in range(40):  # at the start level: nothing to trim
        steady.push(tone(500))
        assert steady.read(N, out)
    assert steady.trimmed == 0 and steady.depth == N


def test_buffer_refills_after_running_dry_and_stays_bounded() -> None:
    buf = AudioBuffer(2, start_samples=2 * N, max_samples=4 * N)
    out = np.empty((N, 2), dtype=np.float32)
    buf.push(tone(500))
    assert not buf.read(N, out) and not out.any()  # waiting for two frames
    buf.push(tone(500))
    assert buf.read(N, out) and buf.read(N, out)
    assert not buf.read(N, out) and buf.underruns == 1
    for _ in range(10):
        buf.push(tone(500))
    assert buf.depth == 4 * N and buf.dropped == 6 * N
    mono = np.ones((N, 1), dtype=np.int16)
    buf.push(mono)  # mono sources play on both channels
    assert buf.depth == 4 * N
