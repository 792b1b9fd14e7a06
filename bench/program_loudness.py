"""Benchmark: the loudness leveler and the true-peak limiter on the program bus.

A minute of program sound a frame (1920 samples, 25 fps) at a time through the mixer's
loudness control (services/mixer/loudness_control.py): 20 s of speech-like sound at -35 LUFS,
20 s at -15 LUFS (the leveler cuts 8 dB, the limiter catches its peaks), 20 s of noise bursts
peaking at 0 dBFS (the limiter at work every frame). The figure is this process's CPU-seconds
per second of sound. The reference is Debian ffmpeg doing the like in C on the same samples:
`ebur128=peak=true` (BS.1770 loudness with 4x true peak) and `alimiter`, its CPU from the
child's rusage.
"""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from bench.harness import Result, Stat
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.loudness_control import LoudnessControl
from tests.unit.mixer.r128 import RATE, speech_like

FPS = 25
FRAME = RATE // FPS
TARGET_CORES = 0.02
RETURNS = 10


def program_sound() -> np.ndarray:
    rng = np.random.default_rng(7)
    bursts = rng.standard_normal((20 * RATE, 2))
    bursts *= (np.arange(20 * RATE) // (RATE // 2) % 2 == 0)[:, None]  # half a second on, off
    bursts *= 32767 / np.abs(bursts).max()
    parts = (speech_like(20, -35.0, seed=1), speech_like(20, -15.0, seed=2), bursts)
    return np.clip(np.concatenate(parts), -32768, 32767).astype(np.float32)


def cores(sound: np.ndarray, returns: int = 0) -> float:
    """CPU-seconds per second of sound of the leveler and limiter (and `returns` returns that
    differ from the program, each with a limiter of its own)."""
    control = LoudnessControl(RATE, 2, FPS)
    control.configure(mixer_pb2.Loudness())
    start = time.process_time()
    for i in range(0, len(sound) - FRAME + 1, FRAME):
        frame = sound[i : i + FRAME]
        gained = frame * control.gain(frame)
        control.limit_program(gained)
        for station in range(returns):
            control.limit_return(str(station), gained * 0.7)
        control.end_frame()
    return (time.process_time() - start) / (len(sound) / RATE)


def ffmpeg_cores(sound: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "program.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(np.rint(sound).astype("<i2").tobytes())
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(
            ["ffmpeg", "-nostats", "-hide_banner", "-i", str(path), "-af",
             "ebur128=peak=true,alimiter=limit=0.89:attack=1.5", "-f", "null", "-"],
            capture_output=True,
            check=True,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / (len(sound) / RATE)


def run(runs: int) -> list[Result]:
    sound = program_sound()
    measured = Stat.of([cores(sound) for _ in range(runs)])
    with_returns = Stat.of([cores(sound, RETURNS) for _ in range(runs)])
    reference = Stat.of([ffmpeg_cores(sound) for _ in range(runs)])
    return [
        Result(
            name="Program loudness: the leveler and true-peak limiter on the program bus",
            target=f"≤ {TARGET_CORES} core",
            measured=f"{measured.fmt(' core', 4)}",
            reference=f"Debian ffmpeg ebur128=peak=true + alimiter: {reference.fmt(' core', 4)}",
            ratio=f"{measured.median / reference.median:.1f}x ffmpeg",
            met=measured.median <= TARGET_CORES,
            notes=[
                "A minute of 48 kHz stereo a 25 fps frame at a time: speech-like sound at -35 "
                "and at -15 LUFS, then noise bursts peaking at 0 dBFS (the limiter at work every "
                "frame); this process's CPU per second of sound. A frame whose samples cannot "
                "reach the ceiling skips the 4x interpolation. With ten returns that differ "
                f"from the program (each its own limiter, the leveler shared): "
                f"{with_returns.fmt(' core', 4)}. ffmpeg measures with its own 4x resampler "
                "and limits without reading true peaks.",
            ],
        )
    ]
