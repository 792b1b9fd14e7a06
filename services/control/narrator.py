"""As-run sentences: what an operator's command did, in words, with the names people use.

"张导 cut to 深圳台" reads better in a log than `mixer.cut sz`: sources are named as the
production names them, the operator by its name. Where the reply says what happened (the program
after a take, fade to black on or off), the sentence uses the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from google.protobuf.message import Message

from services.common.gen.baycast.v1 import (
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    rundown_pb2,
)

Names = Mapping[str, str]


def _name(names: Names, source: str) -> str:
    return names.get(source, source) if source else "the bus source"


def _stations(names: Names, stations: list[str], all_: bool) -> str:
    return "every station" if all_ else ", ".join(_name(names, s) for s in stations) or "nobody"


# How each setting of a processing block reads: (field, words before the value, its format).
_SETTINGS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "HighPass": (("frequency_hz", "", "{:g} Hz"),),
    "Gate": (
        ("threshold_db", "threshold ", "{:+.1f} dB"),
        ("range_db", "range ", "{:.1f} dB"),
        ("attack_ms", "attack ", "{:g} ms"),
        ("release_ms", "release ", "{:g} ms"),
    ),
    "Compressor": (
        ("threshold_db", "threshold ", "{:+.1f} dB"),
        ("ratio", "ratio ", "{:g}:1"),
        ("attack_ms", "attack ", "{:g} ms"),
        ("release_ms", "release ", "{:g} ms"),
        ("makeup_db", "make-up ", "{:+.1f} dB"),
    ),
}


def _band(name: str, band: mixer_pb2.EqBand) -> str:
    words = [name]
    if band.HasField("gain_db"):
        words.append(f"{band.gain_db:+.1f} dB")
    if band.HasField("frequency_hz"):
        words.append(f"at {band.frequency_hz:g} Hz")
    if band.HasField("q"):
        words.append(f"Q {band.q:g}")
    return " ".join(words)


def _block(
    name: str,
    block: mixer_pb2.HighPass | mixer_pb2.Equalizer | mixer_pb2.Gate | mixer_pb2.Compressor,
) -> str:
    """A processing block of an audio command: switched on or off, and the settings it moves
    ("compressor on (threshold -50.0 dB, ratio 10:1)"), so the as-run log says what was set."""
    if isinstance(block, mixer_pb2.Equalizer):
        settings = [
            _band(b, getattr(block, b)) for b in ("low", "mid", "high") if block.HasField(b)
        ]
    else:
        message: Message = block  # fields named by the table, not by the type checker
        settings = [
            f"{words}{form.format(getattr(message, field))}"
            for field, words, form in _SETTINGS[message.DESCRIPTOR.name]
            if message.HasField(field)
        ]
    said = [name]
    if block.HasField("enabled"):
        said.append("on" if block.enabled else "off")
    if settings:
        said.append(f"({', '.join(settings)})")
    return " ".join(said) if len(said) > 1 else f"{name} adjusted"


def _gain(audio: mixer_pb2.MixerCommand.Audio) -> str:
    parts = []
    if audio.HasField("gain_db"):
        parts.append(f"to {audio.gain_db:+.1f} dB")
    if audio.HasField("mute"):
        parts.append("muted" if audio.mute else "unmuted")
    if audio.HasField("afv"):
        parts.append("audio-follows-video " + ("on" if audio.afv else "off"))
    if audio.HasField("trim_db"):
        parts.append(f"trim {audio.trim_db:+.1f} dB")
    if audio.HasField("high_pass"):
        parts.append(_block("high-pass", audio.high_pass))
    if audio.HasField("eq"):
        parts.append(_block("EQ", audio.eq))
    if audio.HasField("gate"):
        parts.append(_block("gate", audio.gate))
    if audio.HasField("compressor"):
        parts.append(_block("compressor", audio.compressor))
    return ", ".join(parts) or "unchanged"


def _mixer(who: str, c: Message, reply: Message | None, names: Names) -> str:
    assert isinstance(c, mixer_pb2.MixerCommand)
    state = reply if isinstance(reply, mixer_pb2.MixerState) else None
    program = state.switcher.program if state else ""
    verb = c.WhichOneof("command")
    if verb == "cut":
        return f"{who} cut to {_name(names, c.cut.source or program)}"
    if verb == "take":
        return f"{who} took {_name(names, program)} to program" if program else f"{who} took"
    if verb == "auto":
        kind = c.auto.transition.type or "mix"
        target = c.auto.source or program
        return f"{who} ran a {kind} to {_name(names, target)}" if target else f"{who} ran a {kind}"
    if verb == "preview":
        return f"{who} previewed {_name(names, c.preview.source)}"
    if verb == "layout":
        layout = c.layout.name or c.layout.layout.name or c.layout.layout.kind or "a layout"
        return f"{who} set the layout {layout}"
    if verb == "audio":
        what = _name(names, c.audio.source) if c.audio.source else "the master"
        return f"{who} set {what} {_gain(c.audio)}"
    if verb == "ftb":
        black = state.switcher.ftb if state else c.ftb.on
        return f"{who} faded to black" if black else f"{who} faded up from black"
    if verb == "manual":
        if c.manual.position >= 1:
            return f"{who} took {_name(names, program)} with the T-bar"
        return f"{who} pulled the T-bar back"
    if verb == "talk":
        to = _stations(names, list(c.talk.stations), c.talk.all)
        return f"{who} talks to {to}" if c.talk.on else f"{who} stopped talking to {to}"
    return f"{who} sent mixer {verb}"


def _rundown(who: str, c: Message, _reply: Message | None, _names: Names) -> str:
    assert isinstance(c, rundown_pb2.RundownCommand)
    verb = c.WhichOneof("command")
    if verb == "load":
        return f"{who} loaded the rundown {c.load.name or '(unnamed)'}"
    if verb == "start":
        return f"{who} started the rundown at segment {c.start.segment}"
    words = {"next": "went to the next segment", "prev": "went back a segment"}
    return f"{who} {words.get(verb or '', 'stopped the rundown')}"


def _gfx(who: str, c: Message, _reply: Message | None, _names: Names) -> str:
    assert isinstance(c, graphics_pb2.GfxCommand)
    verb = c.WhichOneof("command")
    if verb == "show":
        instance = c.show.instance or c.show.template
        return f"{who} showed {c.show.template} as {instance}"
    if verb == "hide":
        return f"{who} took {c.hide.instance} off air"
    if verb == "update":
        return f"{who} updated {c.update.instance}"
    if verb == "ticker_add":
        return f"{who} added “{c.ticker_add.item}” to {c.ticker_add.instance}"
    return f"{who} sent graphics {verb}"


def _dist(who: str, c: Message, _reply: Message | None, _names: Names) -> str:
    assert isinstance(c, distribution_pb2.DistCommand)
    verb = c.WhichOneof("command")
    if verb == "add":
        kind = distribution_pb2.OutputKind.Name(c.add.output.kind).removeprefix("OUTPUT_KIND_")
        return f"{who} added the output {c.add.output.id} ({kind.lower()})"
    ref: distribution_pb2.OutputRef = getattr(c, verb or "remove")
    words = {"remove": "removed", "start": "started", "stop": "stopped"}
    return f"{who} {words.get(verb or '', verb)} the output {ref.id}"


def _exchange(who: str, c: Message, _reply: Message | None, names: Names) -> str:
    assert isinstance(c, exchange_pb2.ExchangeCommand)
    if c.WhichOneof("command") == "cue":
        to = _stations(names, list(c.cue.stations), c.cue.all)
        return f"{who} cued {to}: “{c.cue.text}”"
    return f"{who} cleared the cue {c.clear.id}"


NARRATORS: dict[str, Callable[[str, Message, Message | None, Names], str]] = {
    "mixer": _mixer,
    "rundown": _rundown,
    "gfx": _gfx,
    "dist": _dist,
    "exchange": _exchange,
}


def describe(kind: str, who: str, command: Message, reply: Message | None, names: Names) -> str:
    """The sentence for command `kind` sent by `who`; `reply` is None when it was refused."""
    service = kind.partition(".")[0]
    return NARRATORS[service](who, command, reply, names)
