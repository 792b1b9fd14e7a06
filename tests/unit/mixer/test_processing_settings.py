"""Per-source processing and loudness settings: set by command (the fields given change, the
others stay), refused out of range with the field named, and taken by the audio mixer."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import json_format

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer import productions
from services.mixer.audio_mixer import AudioMixer
from services.mixer.switcher import Switcher, initial_state

Cmd = mixer_pb2.MixerCommand


def production(**extra: object) -> mixer_pb2.Production:
    p = mixer_pb2.Production(
        id="qihang", sources=[mixer_pb2.ProductionSource(id=s) for s in ("gz", "sz")]
    )
    json_format.ParseDict(extra, p)
    return productions.normalize(p)


def audio_of(sw: Switcher, source: str) -> mixer_pb2.SourceAudio:
    return next(a for a in sw.state.audio if a.source == source)


def test_a_command_changes_the_fields_it_sets_and_keeps_the_others() -> None:
    p = production()
    sw = Switcher(p, initial_state(p))
    sw.apply(
        Cmd(audio=Cmd.Audio(source="gz", compressor=mixer_pb2.Compressor(enabled=True, ratio=4)))
    )
    sw.apply(Cmd(audio=Cmd.Audio(source="gz", compressor=mixer_pb2.Compressor(threshold_db=-30))))
    sw.apply(Cmd(audio=Cmd.Audio(source="gz", trim_db=6, eq=mixer_pb2.Equalizer(enabled=True))))
    sw.apply(
        Cmd(audio=Cmd.Audio(source="gz", eq=mixer_pb2.Equalizer(mid=mixer_pb2.EqBand(gain_db=3))))
    )
    gz = audio_of(sw, "gz")
    assert gz.compressor.enabled and gz.compressor.ratio == 4 and gz.compressor.threshold_db == -30
    assert gz.trim_db == 6 and gz.eq.enabled and gz.eq.mid.gain_db == 3
    assert not gz.gate.enabled and not gz.high_pass.enabled
    assert audio_of(sw, "sz") == mixer_pb2.SourceAudio(source="sz")  # off by default
    sw.apply(Cmd(audio=Cmd.Audio(source="gz", compressor=mixer_pb2.Compressor(enabled=False))))
    assert not audio_of(sw, "gz").compressor.enabled and audio_of(sw, "gz").compressor.ratio == 4


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (
            Cmd.Audio(source="gz", compressor=mixer_pb2.Compressor(ratio=0.5)),
            "audio.compressor.ratio",
        ),
        (Cmd.Audio(source="gz", gate=mixer_pb2.Gate(threshold_db=6)), "audio.gate.threshold_db"),
        (
            Cmd.Audio(source="gz", eq=mixer_pb2.Equalizer(high=mixer_pb2.EqBand(gain_db=30))),
            "audio.eq.high.gain_db",
        ),
        (
            Cmd.Audio(source="gz", high_pass=mixer_pb2.HighPass(frequency_hz=5)),
            "audio.high_pass.frequency_hz",
        ),
        (Cmd.Audio(source="gz", trim_db=40), "audio.trim_db"),
        (Cmd.Audio(source="", trim_db=3), "audio.source"),
    ],
)
def test_a_value_out_of_range_is_refused_and_changes_nothing(
    command: Cmd.Audio, field: str
) -> None:
    p = production()
    sw = Switcher(p, initial_state(p))
    before = mixer_pb2.SwitcherState()
    before.CopyFrom(sw.state)
    with pytest.raises(errors.InvalidArgument) as caught:
        sw.apply(Cmd(audio=command))
    assert caught.value.field == field
    assert sw.state == before


def test_production_yaml_sets_processing_and_the_loudness_target() -> None:
    p = production(
        audio=[
            {"source": "sz", "trimDb": -3, "highPass": {"enabled": True}, "gate": {"enabled": True}}
        ],
        loudness={"targetLufs": -24},
    )
    sw = Switcher(p, initial_state(p))
    assert audio_of(sw, "sz").high_pass.enabled and audio_of(sw, "sz").trim_db == -3
    assert p.loudness.target_lufs == -24
    with pytest.raises(errors.InvalidArgument) as caught:
        production(loudness={"targetLufs": -5})
    assert caught.value.field == "loudness.target_lufs"
    with pytest.raises(errors.InvalidArgument) as caught:
        production(audio=[{"source": "gz", "compressor": {"attackMs": 0}}])
    assert caught.value.field == "audio[0].compressor.attack_ms"


def test_the_trim_comes_before_the_meter_and_the_processing_after_it() -> None:
    mixer = AudioMixer(["a"], 48_000, 2, 25)
    mixer.configure(
        [
            mixer_pb2.SourceAudio(
                source="a",
                trim_db=6,
                compressor=mixer_pb2.Compressor(
                    enabled=True, threshold_db=-20, ratio=4, attack_ms=1
                ),
            )
        ],
        0.0,
    )
    t = np.arange(48_000) / 48_000
    wave = np.sin(2 * np.pi * 1000 * t) * 32768 * 10 ** (-12 / 20)  # -12 dBFS, +6 = -6
    samples = np.rint(np.stack([wave, wave], axis=1)).astype(np.int16)
    out = []
    for i in range(0, 48_000, 1920):
        mixer.push("a", samples[i : i + 1920])
        out.append(mixer.mix({"a"}, set()).program)
    levels = {level.source: level for level in mixer.levels()}
    assert levels["a"].peak_dbfs == pytest.approx(-6.0, abs=0.1)  # the meter reads the trim
    assert levels["a"].gain_reduction_db == pytest.approx(14 * 0.75, abs=0.5)
    peak = 20 * np.log10(np.abs(np.concatenate(out)[-4800:]).max() / 32768)
    assert peak == pytest.approx(-6.0 - 10.5, abs=1.0)
