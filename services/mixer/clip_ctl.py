"""`baycast ctl clip`: a clip's transport (cue, play, pause, stop, seek) and where the
production's clips stand.

    baycast ctl clip qihang clip/opener play
    baycast ctl clip qihang clip/opener seek --at 12.5
    baycast ctl clip qihang clip/opener cue --loop --end next
    baycast ctl clip qihang            # every clip: state, position, remaining
"""

from __future__ import annotations

import argparse

from services.common import errors
from services.common.bus import subject
from services.common.ctl import Ctl, run_verb
from services.common.gen.baycast.v1 import mixer_pb2

Cmd = mixer_pb2.MixerCommand
ACTIONS = {
    "cue": mixer_pb2.TRANSPORT_ACTION_CUE,
    "play": mixer_pb2.TRANSPORT_ACTION_PLAY,
    "pause": mixer_pb2.TRANSPORT_ACTION_PAUSE,
    "stop": mixer_pb2.TRANSPORT_ACTION_STOP,
    "seek": mixer_pb2.TRANSPORT_ACTION_SEEK,
}
ENDS = {
    "hold": mixer_pb2.CLIP_END_HOLD,
    "slate": mixer_pb2.CLIP_END_SLATE,
    "next": mixer_pb2.CLIP_END_NEXT,
}


def clock(ms: int) -> str:
    seconds = ms // 1000
    return f"{seconds // 60}:{seconds % 60:02d}.{ms % 1000 // 100}"


def describe(clip: mixer_pb2.ClipState) -> str:
    state = mixer_pb2.ClipRunState.Name(clip.state).removeprefix("CLIP_RUN_STATE_").lower()
    end = mixer_pb2.ClipEnd.Name(clip.end).removeprefix("CLIP_END_").lower()
    line = f"{clip.source} {state}"
    if clip.duration_ms:
        line += (
            f" at {clock(clip.position_ms)} of {clock(clip.duration_ms)}"
            f" remaining {clock(clip.remaining_ms)}"
        )
    line += f" loop={'on' if clip.loop else 'off'} end={end}"
    return line + (f" error={clip.error}" if clip.error else "")


def command(args: argparse.Namespace) -> Cmd.Transport:
    transport = Cmd.Transport(source=args.source, action=ACTIONS[args.action])
    if args.at is not None:
        if args.action not in ("cue", "seek"):
            raise errors.InvalidArgument("--at goes with cue or seek", field="position_ms")
        if args.at < 0:
            raise errors.InvalidArgument("--at is seconds from the start", field="position_ms")
        transport.position_ms = round(args.at * 1000)
    elif args.action == "seek":
        raise errors.InvalidArgument("seek needs --at SECONDS", field="position_ms")
    if args.loop is not None:
        transport.loop = args.loop
    if args.end:
        transport.end = ENDS[args.end]
    return transport


async def _clip(ctl: Ctl, args: argparse.Namespace) -> int:
    cmd_subject = subject("prod", args.prod, "mixer", "cmd")
    if args.source is None:
        state = await ctl.command(cmd_subject, Cmd(get=Cmd.Get()), mixer_pb2.MixerState)
    else:
        if args.action is None:
            raise errors.InvalidArgument(f"an action: {', '.join(ACTIONS)}", field="action")
        state = await ctl.command(cmd_subject, Cmd(transport=command(args)), mixer_pb2.MixerState)
    clips = [c for c in state.clips if args.source in (None, c.source)]
    for clip in clips:
        print(describe(clip))
    if not clips:
        print(f"{args.prod} has no clips")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "clip",
        help="a clip's transport, or where the production's clips stand",
        description=__doc__,
    )
    p.set_defaults(run=lambda args: run_verb(args, _clip))
    p.add_argument("prod")
    p.add_argument("source", nargs="?", help="clip/<media id>")
    p.add_argument("action", nargs="?", choices=list(ACTIONS))
    p.add_argument("--at", type=float, help="seconds from the start (cue, seek)")
    p.add_argument("--loop", dest="loop", action="store_true", default=None)
    p.add_argument("--no-loop", dest="loop", action="store_false")
    p.add_argument("--end", choices=list(ENDS), help="what the clip does at its end")
