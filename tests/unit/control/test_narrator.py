"""As-run sentences name people and sources as people know them."""

from __future__ import annotations

from services.common.gen.baycast.v1 import (
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    rundown_pb2,
)
from services.control.narrator import describe

Cmd = mixer_pb2.MixerCommand
NAMES = {"sz": "深圳台", "gz": "广州台", "mo": "澳门台"}


def state(program: str, ftb: bool = False) -> mixer_pb2.MixerState:
    return mixer_pb2.MixerState(switcher=mixer_pb2.SwitcherState(program=program, ftb=ftb))


def test_switcher_sentences() -> None:
    cut = Cmd(cut=Cmd.Cut(source="sz"))
    assert describe("mixer.cut", "张导", cut, state("sz"), NAMES) == "张导 cut to 深圳台"
    take = Cmd(take=Cmd.Take())
    assert describe("mixer.take", "张导", take, state("gz"), NAMES) == "张导 took 广州台 to program"
    auto = Cmd(auto=Cmd.Auto(transition=mixer_pb2.Transition(type="wipe")))
    assert describe("mixer.auto", "张导", auto, state("mo"), NAMES) == "张导 ran a wipe to 澳门台"
    audio = Cmd(audio=Cmd.Audio(source="gz", gain_db=-6, mute=True))
    assert (
        describe("mixer.audio", "李工", audio, None, NAMES) == "李工 set 广州台 to -6.0 dB, muted"
    )
    strip = Cmd.Audio(source="sz", trim_db=3, compressor=mixer_pb2.Compressor(enabled=True))
    strip.eq.mid.gain_db = 2
    assert describe("mixer.audio", "李工", Cmd(audio=strip), None, NAMES) == (
        "李工 set 深圳台 trim +3.0 dB, EQ (mid +2.0 dB), compressor on"
    )
    # A knob's move says what it set, so the as-run log reads back the strip.
    moves = Cmd.Audio(
        source="gz",
        high_pass=mixer_pb2.HighPass(frequency_hz=141),
        gate=mixer_pb2.Gate(enabled=True, threshold_db=-50),
        compressor=mixer_pb2.Compressor(threshold_db=-30, ratio=2.5, makeup_db=3),
        eq=mixer_pb2.Equalizer(low=mixer_pb2.EqBand(gain_db=-3, frequency_hz=150)),
    )
    assert describe("mixer.audio", "李工", Cmd(audio=moves), None, NAMES) == (
        "李工 set 广州台 high-pass (141 Hz), EQ (low -3.0 dB at 150 Hz),"
        " gate on (threshold -50.0 dB),"
        " compressor (threshold -30.0 dB, ratio 2.5:1, make-up +3.0 dB)"
    )
    empty = Cmd.Audio(source="gz", compressor=mixer_pb2.Compressor())
    assert describe("mixer.audio", "李工", Cmd(audio=empty), None, NAMES) == (
        "李工 set 广州台 compressor adjusted"
    )
    master = Cmd(audio=Cmd.Audio(afv=True))
    assert describe("mixer.audio", "李工", master, None, NAMES) == (
        "李工 set the master audio-follows-video on"
    )
    ftb = Cmd(ftb=Cmd.Ftb())
    assert describe("mixer.ftb", "张导", ftb, state("sz", ftb=True), NAMES) == "张导 faded to black"
    talk = Cmd(talk=Cmd.Talk(source="talk_zhang", stations=["gz", "sz"], on=True))
    assert describe("mixer.talk", "张导", talk, None, NAMES) == "张导 talks to 广州台, 深圳台"
    # Refused: no reply, the command says what was asked; unknown ids stay ids.
    assert (
        describe("mixer.cut", "张导", Cmd(cut=Cmd.Cut(source="xx")), None, NAMES)
        == "张导 cut to xx"
    )


def test_other_services_sentences() -> None:
    show = graphics_pb2.GfxCommand(show=graphics_pb2.GfxShow(template="lower_third", instance="lt"))
    assert describe("gfx.show", "王美", show, None, {}) == "王美 showed lower_third as lt"
    nxt = rundown_pb2.RundownCommand(next=rundown_pb2.RundownCommand.Next())
    assert describe("rundown.next", "张导", nxt, None, {}) == "张导 went to the next segment"
    add = distribution_pb2.DistCommand(
        add=distribution_pb2.AddOutput(
            output=distribution_pb2.OutputSpec(id="cctv", kind=distribution_pb2.OUTPUT_KIND_RTMP)
        )
    )
    assert describe("dist.add", "张导", add, None, {}) == "张导 added the output cctv (rtmp)"
    cue = exchange_pb2.ExchangeCommand(
        cue=exchange_pb2.ExchangeCommand.SendCue(all=True, text="30 秒后上场")
    )
    assert (
        describe("exchange.cue", "张导", cue, None, {}) == "张导 cued every station: “30 秒后上场”"
    )
