"""`baycast ctl talk`: what it sends (silence, then the file or tone, on one timeline) and where
its settings come from."""

from __future__ import annotations

import argparse
import asyncio
import fractions
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from services.common import errors
from services.mixer import talk_ctl
from services.mixer.talk_ctl import FRAME_SAMPLES, SAMPLE_RATE, TalkTrack, program_track


def write_tone_wav(path: Path, hz: float, seconds: float) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        mono = (np.sin(2 * np.pi * hz * t) * 0.25 * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(mono.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = 0
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def args(**kw: Any) -> argparse.Namespace:
    values: dict[str, Any] = {
        "file": None,
        "tone": None,
        "mic": None,
        "operator": None,
        "token": None,
        "ingest": None,
    }
    values.update(kw)
    return argparse.Namespace(**values)


async def test_silence_then_the_file_then_silence_on_one_timeline(tmp_path: Path) -> None:
    wav = tmp_path / "cue.wav"
    write_tone_wav(wav, 1000.0, 0.3)
    track = TalkTrack()
    frames = [await track.recv() for _ in range(3)]
    assert all(not f.to_ndarray().any() for f in frames)  # nothing plays before the talk is on
    track.play(program_track(args(file=str(wav))))
    played = []
    for _ in range(50):
        frame = await track.recv()
        frames.append(frame)
        if track.finished.is_set():
            break
        played.append(frame.to_ndarray())
    assert track.finished.is_set()  # the file's end, after about 0.3 s of it
    sound = np.concatenate(played, axis=1)
    assert abs(sound.shape[1] / 2 - 0.3 * SAMPLE_RATE) <= FRAME_SAMPLES
    assert np.abs(sound).max() > 0.15 * 32767  # mono spread over two channels: -3 dB each
    assert not frames[-1].to_ndarray().any()  # silence again, until the talk is off
    assert [f.pts for f in frames] == list(range(0, len(frames) * FRAME_SAMPLES, FRAME_SAMPLES))
    assert {(f.sample_rate, f.layout.name, f.format.name) for f in frames} == {
        (SAMPLE_RATE, "stereo", "s16")
    }
    track.stop()


async def test_a_microphone_is_captured_live_through_ffmpeg() -> None:
    """FFmpeg's virtual input stands in for a microphone: the same capture path as ALSA's."""
    assert talk_ctl.capture_device("default") == ("alsa", "default")
    assert talk_ctl.capture_device("alsa:hw:1") == ("alsa", "hw:1")
    assert talk_ctl.capture_device("pulse:") == ("pulse", "default")
    track = TalkTrack()
    track.play(program_track(args(mic="lavfi:sine=frequency=1000:sample_rate=48000")))
    frames = [(await track.recv()).to_ndarray() for _ in range(25)]
    left = np.concatenate(frames, axis=1).reshape(-1, 2)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
    assert round(np.argmax(spectrum) * SAMPLE_RATE / len(left)) in range(990, 1011)
    track.stop()
    with pytest.raises(errors.BaycastError):
        program_track(args(mic="alsa:no-such-device"))


async def test_tone_plays_until_hushed() -> None:
    track = TalkTrack()
    track.play(program_track(args(tone=1250.0)))
    samples = np.concatenate([(await track.recv()).to_ndarray() for _ in range(5)], axis=1)
    left = samples[0, ::2].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left))
    assert np.argmax(spectrum) == round(1250.0 * len(left) / SAMPLE_RATE)
    track.hush()
    assert not (await track.recv()).to_ndarray().any()
    track.stop()
    with pytest.raises(Exception):  # noqa: B017 - aiortc's MediaStreamError
        await asyncio.wait_for(track.recv(), 1)


def test_settings_from_flags_environment_and_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = {
        "operator_id": "zhang",
        "operator_token": "from-file",
        "services": {"ingest": {"http": "http://127.0.0.1:8101/"}},
    }
    monkeypatch.setattr(talk_ctl, "read_endpoints", lambda: endpoints)
    monkeypatch.delenv(talk_ctl.TOKEN_ENV, raising=False)
    assert talk_ctl._settings(args()) == (
        "zhang",
        "from-file",
        "http://127.0.0.1:8101/whip/talk/zhang",
    )
    monkeypatch.setenv(talk_ctl.TOKEN_ENV, "from-env")
    assert talk_ctl._settings(args(operator="li"))[:2] == ("li", "from-env")
    got = talk_ctl._settings(args(token="flag", ingest="http://ingest:8101"))
    assert got[1:] == ("flag", "http://ingest:8101/whip/talk/zhang")
    monkeypatch.setattr(talk_ctl, "read_endpoints", dict)
    with pytest.raises(errors.InvalidArgument) as caught:
        talk_ctl._settings(args(token="t", ingest="http://x"))
    assert caught.value.field == "operator"
    with pytest.raises(errors.InvalidArgument) as caught:
        talk_ctl._settings(args(operator="zhang", token="t"))
    assert caught.value.field == "ingest"


def test_refusals_keep_ingests_code() -> None:
    assert isinstance(talk_ctl._refusal(403, "PERMISSION_DENIED: no\n"), errors.PermissionDenied)
    assert isinstance(talk_ctl._refusal(401, "UNAUTHENTICATED: no"), errors.Unauthenticated)
    assert isinstance(talk_ctl._refusal(409, "CONFLICT: busy"), errors.Conflict)
    assert type(talk_ctl._refusal(502, "<html>bad gateway</html>")) is errors.BaycastError
