"""Talkback: who hears which talk source, and what the mixer makes of it, measured with FFTs."""

from __future__ import annotations

import numpy as np
import pytest

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.audio_mixer import TALKBACK_DUCK_DB, AudioMixer
from services.mixer.talkback import MAX_TALK_SOURCES, TalkRoster

RATE = 48_000
N = 1920  # one 25 fps frame: 25 Hz bins, so tones on multiples of 25 Hz fall on a bin exactly
SOURCES = {"a": 500.0, "b": 750.0, "c": 1000.0}
TALK = {"talk_zhang": 1250.0, "talk_li": 1500.0}
AMPLITUDE = 0.1
Talk = mixer_pb2.MixerCommand.Talk


class Tones:
    """Phase-continuous stereo tones, one frame at a time."""

    def __init__(self) -> None:
        self.sample = 0

    def frame(self, hz: float) -> np.ndarray:
        t = (self.sample + np.arange(N)) / RATE
        mono = np.rint(np.sin(2 * np.pi * hz * t) * AMPLITUDE * 32767).astype(np.int16)
        return np.repeat(mono[:, None], 2, axis=1)


class Show:
    """A mixer with three sources and two talk inputs, fed one frame per `run` step."""

    def __init__(self) -> None:
        self.mixer = AudioMixer(list(SOURCES), RATE, 2, 25)
        for source in TALK:
            self.mixer.add_talk_input(source)
        self.roster = TalkRoster(
            mixer_pb2.Production(
                id="qh", sources=[mixer_pb2.ProductionSource(id=s) for s in SOURCES]
            )
        )
        self.tones = Tones()
        for _ in range(2):  # the jitter buffers start playing with two frames in hand
            self._push()

    def _push(self) -> None:
        for source, hz in {**SOURCES, **TALK}.items():
            self.mixer.push(source, self.tones.frame(hz))
        self.tones.sample += N

    def talk(self, **kw: object) -> None:
        self.roster.apply(Talk(**kw), "zhang", 1)  # type: ignore[arg-type]

    def run(self, frames: int) -> dict[str, np.ndarray]:
        """Mix `frames` frames: the program and the mix-minus of a and b, each concatenated."""
        out: dict[str, list[np.ndarray]] = {"program": [], "a": [], "b": []}
        for _ in range(frames):
            self._push()
            result = self.mixer.mix(set(SOURCES), {"a", "b"}, self.roster.heard)
            out["program"].append(result.program)
            for station in ("a", "b"):
                out[station].append(result.mixminus[station])
        return {k: np.concatenate(v) for k, v in out.items()}


def level_db(samples: np.ndarray, hz: float) -> float:
    """RMS level (dBFS) of the tone at `hz` in the left channel, from its FFT bin."""
    left = samples[:, 0].astype(np.float64)
    spectrum = np.fft.rfft(left) / len(left)
    k = round(hz * len(left) / RATE)
    rms = abs(spectrum[k]) * np.sqrt(2) / 32768
    return float(20 * np.log10(max(rms, 1e-12)))


FULL_DB = 20 * np.log10(AMPLITUDE / np.sqrt(2))  # every tone's level before any fader


def test_talk_is_heard_by_the_addressed_station_only_over_its_ducked_mixminus() -> None:
    show, ref = Show(), Show()  # the same show, without talkback: what must not change
    before = show.run(10)
    ref.run(10)
    assert level_db(before["a"], SOURCES["b"]) == pytest.approx(FULL_DB, abs=0.1)
    assert level_db(before["a"], SOURCES["a"]) < FULL_DB - 60  # mix-minus: no station itself

    show.talk(source="talk_zhang", stations=["a"], on=True)
    show.run(1)  # the ramp frame
    ref.run(1)
    during, plain = show.run(10), ref.run(10)
    a, b, program = during["a"], during["b"], during["program"]
    talk_hz = TALK["talk_zhang"]
    assert level_db(a, talk_hz) == pytest.approx(FULL_DB, abs=0.5)
    for hz in (SOURCES["b"], SOURCES["c"]):
        ducked = level_db(a, hz) - level_db(plain["a"], hz)
        assert ducked == pytest.approx(-TALKBACK_DUCK_DB, abs=0.5)
    # Station b hears neither the talk nor a duck; the program never carries talk.
    assert level_db(b, talk_hz) < level_db(a, talk_hz) - 60
    np.testing.assert_array_equal(b, plain["b"])
    np.testing.assert_array_equal(program, plain["program"])
    assert level_db(program, talk_hz) < FULL_DB - 60

    show.talk(source="talk_zhang", stations=["a"], on=False)
    show.run(1)
    ref.run(1)
    after, plain = show.run(10), ref.run(10)
    assert level_db(after["a"], talk_hz) < FULL_DB - 60
    for hz in (SOURCES["b"], SOURCES["c"]):
        assert level_db(after["a"], hz) == pytest.approx(level_db(before["a"], hz), abs=0.05)
    np.testing.assert_array_equal(after["a"], plain["a"])  # exactly the plain mix-minus again


def test_all_and_two_talk_sources_add_up() -> None:
    show = Show()
    before = show.run(10)
    show.talk(source="talk_zhang", all=True, on=True)
    show.talk(source="talk_li", stations=["b"], on=True)
    assert show.roster.heard == {
        "a": {"talk_zhang"},
        "b": {"talk_zhang", "talk_li"},
        "c": {"talk_zhang"},
    }
    show.run(1)
    during = show.run(10)
    for station in ("a", "b"):
        assert level_db(during[station], TALK["talk_zhang"]) == pytest.approx(FULL_DB, abs=0.5)
        other = next(s for s in SOURCES if s != station)
        ducked = level_db(during[station], SOURCES[other]) - level_db(
            before[station], SOURCES[other]
        )
        assert ducked == pytest.approx(-TALKBACK_DUCK_DB, abs=0.5)
    assert level_db(during["b"], TALK["talk_li"]) == pytest.approx(FULL_DB, abs=0.5)
    assert level_db(during["a"], TALK["talk_li"]) < FULL_DB - 60
    assert level_db(during["program"], TALK["talk_zhang"]) < FULL_DB - 60

    show.talk(source="talk_zhang", all=True, on=False)  # b still hears li, ducked
    show.run(1)
    partly = show.run(10)
    assert level_db(partly["a"], SOURCES["b"]) == pytest.approx(FULL_DB, abs=0.05)
    assert level_db(partly["b"], TALK["talk_zhang"]) < FULL_DB - 60
    ducked = level_db(partly["b"], SOURCES["a"]) - level_db(before["b"], SOURCES["a"])
    assert ducked == pytest.approx(-TALKBACK_DUCK_DB, abs=0.5)


def test_gains_ramp_over_one_frame_without_a_click() -> None:
    show = Show()
    steady = show.run(5)["a"].astype(np.int32)
    show.talk(source="talk_zhang", stations=["a"], on=True)
    ramp = show.run(3)["a"].astype(np.int32)
    show.talk(source="talk_zhang", stations=["a"], on=False)
    release = show.run(3)["a"].astype(np.int32)
    # The biggest step between neighbouring samples: a click would be far above the tones' own.
    tones_step = 2 * np.pi * max({**SOURCES, **TALK}.values()) / RATE * AMPLITUDE * 32767 * 3
    for signal in (steady, ramp, release):
        assert np.abs(np.diff(signal[:, 0])).max() <= tones_step
    edge = np.concatenate([steady[-1:], ramp[:1]])  # the press lands on a frame boundary
    assert np.abs(np.diff(edge[:, 0])).max() <= tones_step


def test_talk_is_mixed_only_once_its_buffer_has_audio() -> None:
    mixer = AudioMixer(["a", "b"], RATE, 2, 25)
    mixer.add_talk_input("talk_zhang")
    tones = Tones()
    heard = {"a": frozenset({"talk_zhang"})}

    def frame(*sources: str) -> None:
        for source, hz in (("b", 750.0), ("talk_zhang", 1250.0)):
            if source in sources:
                mixer.push(source, tones.frame(hz))
        tones.sample += N

    for _ in range(3):
        frame("b")
    mixer.mix({"a", "b"}, {"a"}, heard)  # the ramp frame
    silent = mixer.mix({"a", "b"}, {"a"}, heard).mixminus["a"]
    assert level_db(silent, 750) == pytest.approx(FULL_DB - TALKBACK_DUCK_DB, abs=0.5)
    assert level_db(silent, 1250) < FULL_DB - 60  # the director is silent: ducked, no voice
    frame("b", "talk_zhang")
    frame("b", "talk_zhang")  # two frames in hand: the talk buffer starts playing
    mixer.mix({"a", "b"}, {"a"}, heard)
    speaking = mixer.mix({"a", "b"}, {"a"}, heard).mixminus["a"]
    assert level_db(speaking, 1250) == pytest.approx(FULL_DB, abs=0.5)


def test_roster_validates_and_reports_talks() -> None:
    roster = TalkRoster(
        mixer_pb2.Production(id="qh", sources=[mixer_pb2.ProductionSource(id=s) for s in SOURCES])
    )
    refusals = [
        (Talk(source="Talk Zhang", stations=["a"], on=True), "talk.source"),
        (Talk(source="talk_zhang", stations=["x"], on=True), "talk.stations"),
        (Talk(source="talk_zhang", on=True), "talk.stations"),
        (Talk(source="talk_zhang", stations=["a"], all=True, on=True), "talk.all"),
    ]
    for talk, field in refusals:
        with pytest.raises(errors.InvalidArgument) as caught:
            roster.apply(talk, "zhang", 1)
        assert caught.value.field == field
    assert roster.states() == [] and not roster.used

    change = roster.apply(Talk(source="talk_zhang", stations=["a", "b"], on=True), "zhang", 7)
    assert change.started == ["a", "b"] and not change.ended
    assert not roster.apply(Talk(source="talk_zhang", stations=["a"], on=True), "zhang", 8)
    assert not roster.apply(Talk(source="talk_li", stations=["c"], on=False), "li", 9)
    (state,) = roster.states()
    assert (state.source, list(state.stations), state.since_us, state.operator) == (
        "talk_zhang",
        ["a", "b"],
        7,
        "zhang",
    )
    change = roster.apply(Talk(source="talk_zhang", stations=["a"], on=False), "zhang", 10)
    assert change.ended == ["a"] and list(roster.states()[0].stations) == ["b"]
    assert roster.heard == {"b": {"talk_zhang"}}
    change = roster.apply(Talk(source="talk_zhang", all=True, on=False), "zhang", 11)
    assert change.ended == ["b"] and roster.states() == [] and roster.heard == {}

    for i in range(MAX_TALK_SOURCES - len(roster.used)):
        roster.apply(Talk(source=f"talk_{i}", stations=["a"], on=False), "", 12)
    with pytest.raises(errors.ResourceExhausted):
        roster.apply(Talk(source="talk_one_more", stations=["a"], on=True), "", 13)
