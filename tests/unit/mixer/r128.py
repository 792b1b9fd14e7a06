"""An EBU R128 meter for the tests, written from ITU-R BS.1770-4 alone (its own K-weighting
coefficients at 48 kHz, 400 ms blocks every 100 ms, the -70 LUFS and -10 LU gates) and sharing
no code with the mixer; true peak by scipy's own 4x polyphase resampler."""

from __future__ import annotations

import numpy as np
from scipy import signal

RATE = 48_000
FULL = 32768.0
K_WEIGHTING = np.array(
    [
        [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241],
        [1.0, -2.0, 1.0, 1.0, -1.99004745483398],
    ]
)
K_SOS = np.column_stack((K_WEIGHTING, [0.73248077421585, 0.99007225036621]))


def _block_energies(samples: np.ndarray, block_s: float) -> np.ndarray:
    weighted = signal.sosfilt(K_SOS, np.asarray(samples, dtype=np.float64) / FULL, axis=0)
    energy = np.concatenate(([0.0], np.cumsum(np.square(weighted).sum(axis=1))))
    size, hop = round(block_s * RATE), round(0.1 * RATE)
    starts = np.arange(0, len(weighted) - size + 1, hop)
    return (energy[starts + size] - energy[starts]) / size


def _lufs(energy: np.ndarray | float) -> np.ndarray:
    return -0.691 + 10 * np.log10(np.maximum(energy, 1e-30))


def integrated(samples: np.ndarray) -> float:
    """Gated integrated loudness (LUFS) of int16-scale samples (n, channels)."""
    blocks = _block_energies(samples, 0.4)
    blocks = blocks[_lufs(blocks) > -70]
    relative = float(_lufs(blocks.mean())) - 10
    return float(_lufs(blocks[_lufs(blocks) > relative].mean()))


def short_term(samples: np.ndarray) -> np.ndarray:
    """Short-term loudness (3 s) every 100 ms."""
    return _lufs(_block_energies(samples, 3.0))


def true_peak_dbtp(samples: np.ndarray) -> float:
    up = signal.resample_poly(np.asarray(samples, dtype=np.float64) / FULL, 4, 1, axis=0)
    return float(20 * np.log10(np.abs(up).max()))


def speech_like(seconds: float, lufs: float, seed: int, pauses: bool = False) -> np.ndarray:
    """Band-limited noise with syllable-rate swells (and, with `pauses`, silences of ~2 s),
    scaled to `lufs` integrated: int16-scale float64 (n, 2)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    band = signal.butter(2, [150, 4000], "bandpass", fs=RATE, output="sos")
    voice = signal.sosfilt(band, rng.standard_normal((n, 2)), axis=0)
    t = np.arange(n) / RATE
    swell = 0.8 * np.sin(2 * np.pi * 3.3 * t) + 0.3 * np.sin(2 * np.pi * 0.7 * t) + 0.2
    envelope = np.clip(swell, 0, None)
    if pauses:
        envelope *= np.sin(2 * np.pi * 0.05 * t) > -0.3
    out = voice * envelope[:, None] * 1000
    return out * 10 ** ((lufs - integrated(out)) / 20)
