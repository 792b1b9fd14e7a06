"""`baycast ctl audio`: the audio operator's controls of one source (fader, mute, audio follows
video, input trim, high-pass filter, gate, compressor, three-band EQ) or of the master.

Each flag sets one field of `MixerCommand.Audio`; the mixer changes the fields given and keeps
the others, so `--comp-ratio 4` alone leaves the threshold where it was. The reply prints the
source's settings as they now stand."""

from __future__ import annotations

import argparse

from services.common import errors
from services.common.bus import subject
from services.common.ctl import Ctl, print_message, run_verb
from services.common.gen.baycast.v1 import mixer_pb2

Cmd = mixer_pb2.MixerCommand
# (flag, message field) of each processing block's numbers.
GATE_FLAGS = (
    ("gate_threshold_db", "threshold_db"),
    ("gate_range_db", "range_db"),
    ("gate_attack_ms", "attack_ms"),
    ("gate_release_ms", "release_ms"),
)
COMP_FLAGS = (
    ("comp_threshold_db", "threshold_db"),
    ("comp_ratio", "ratio"),
    ("comp_attack_ms", "attack_ms"),
    ("comp_release_ms", "release_ms"),
    ("comp_makeup_db", "makeup_db"),
)


def parse_band(text: str, field: str) -> mixer_pb2.EqBand:
    """`GAIN_DB[@HZ[/Q]]`, e.g. `-3`, `4@2500`, `4@2500/1.4`."""
    gain, _, rest = text.partition("@")
    hz, _, q = rest.partition("/")
    try:
        band = mixer_pb2.EqBand(gain_db=float(gain))
        if hz:
            band.frequency_hz = float(hz)
        if q:
            band.q = float(q)
    except ValueError:
        raise errors.InvalidArgument(f"{field} is GAIN_DB[@HZ[/Q]], got {text!r}") from None
    return band


def command(args: argparse.Namespace) -> Cmd.Audio:
    """The command the flags ask for."""
    out = Cmd.Audio(source=args.source or "")
    for name in ("gain_db", "mute", "afv", "trim_db"):
        if getattr(args, name) is not None:
            setattr(out, name, getattr(args, name))
    if args.hpf is not None or args.hpf_hz is not None:
        out.high_pass.SetInParent()
        if args.hpf is not None:
            out.high_pass.enabled = args.hpf
        if args.hpf_hz is not None:
            out.high_pass.frequency_hz = args.hpf_hz
    for block, switch, flags in (("gate", "gate", GATE_FLAGS), ("compressor", "comp", COMP_FLAGS)):
        message = getattr(out, block)
        if getattr(args, switch) is not None:
            message.enabled = getattr(args, switch)
        for flag, name in flags:
            if getattr(args, flag) is not None:
                setattr(message, name, getattr(args, flag))
    if args.eq is not None:
        out.eq.enabled = args.eq
    for band in ("low", "mid", "high"):
        text = getattr(args, f"eq_{band}")
        if text is not None:
            getattr(out.eq, band).CopyFrom(parse_band(text, f"--eq-{band}"))
    return out


async def _audio(ctl: Ctl, args: argparse.Namespace) -> int:
    state = await ctl.command(
        subject("prod", args.prod, "mixer", "cmd"), Cmd(audio=command(args)), mixer_pb2.MixerState
    )
    if not args.source:
        print(f"master_gain_db={state.switcher.master_gain_db:g}")
        return 0
    for audio in state.switcher.audio:
        if audio.source == args.source:
            print_message(audio)
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "audio",
        help="set a source's (or, without source, the master's) fader and processing",
        description=__doc__,
    )
    p.set_defaults(run=lambda args: run_verb(args, _audio))
    p.add_argument("prod")
    p.add_argument("source", nargs="?")
    p.add_argument("--gain-db", type=float, help="the fader")
    p.add_argument("--mute", dest="mute", action="store_true", default=None)
    p.add_argument("--unmute", dest="mute", action="store_false")
    p.add_argument("--afv", dest="afv", action="store_true", default=None)
    p.add_argument("--no-afv", dest="afv", action="store_false")
    p.add_argument("--trim-db", type=float, help="input trim, before the meter (-24..24)")

    def switch(name: str, what: str) -> None:
        p.add_argument(f"--{name}", dest=name, action="store_true", default=None, help=what)
        p.add_argument(f"--no-{name}", dest=name, action="store_false")

    switch("hpf", "the high-pass filter on")
    p.add_argument("--hpf-hz", type=float, help="its frequency (default 80)")
    switch("gate", "the gate on")
    p.add_argument("--gate-threshold-db", type=float, help="dBFS (default -50)")
    p.add_argument("--gate-range-db", type=float, help="attenuation when closed (default 40)")
    p.add_argument("--gate-attack-ms", type=float, help="default 1")
    p.add_argument("--gate-release-ms", type=float, help="to close 10 dB (default 150)")
    switch("comp", "the compressor on")
    p.add_argument("--comp-threshold-db", type=float, help="dBFS (default -20)")
    p.add_argument("--comp-ratio", type=float, help="default 3")
    p.add_argument("--comp-attack-ms", type=float, help="default 10")
    p.add_argument("--comp-release-ms", type=float, help="to recover 10 dB (default 150)")
    p.add_argument("--comp-makeup-db", type=float, help="default 0")
    switch("eq", "the EQ on")
    p.add_argument("--eq-low", metavar="DB[@HZ]", help="low shelf (default corner 120 Hz)")
    p.add_argument("--eq-mid", metavar="DB[@HZ[/Q]]", help="peak (default 1000 Hz, Q 1)")
    p.add_argument("--eq-high", metavar="DB[@HZ]", help="high shelf (default corner 8000 Hz)")
