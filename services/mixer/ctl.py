"""`baycast ctl` verbs of the mixer: productions, switching, the T-bar, audio, fade, snapshots,
talkback."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import yaml
from google.protobuf import json_format

from services.common import errors
from services.common.bus import subject
from services.common.ctl import Ctl, operator_tls, print_message, print_table, run_verb
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.media import proto_to_av
from services.common.rpc import ChannelCache
from services.mixer import audio_ctl, clip_ctl, media_ctl, rundown_ctl, talk_ctl

Cmd = mixer_pb2.MixerCommand
PCmd = mixer_pb2.ProductionCommand
SNAPSHOT_TIMEOUT_S = 10.0
Verb = Callable[[Ctl, argparse.Namespace], Awaitable[int]]


async def _admin(ctl: Ctl, command: mixer_pb2.ProductionCommand) -> mixer_pb2.ProductionReply:
    return await ctl.command(
        subject("mixer", "production", "cmd"), command, mixer_pb2.ProductionReply
    )


async def _mixer(ctl: Ctl, prod: str, command: mixer_pb2.MixerCommand) -> int:
    state = await ctl.command(subject("prod", prod, "mixer", "cmd"), command, mixer_pb2.MixerState)
    s, t = state.switcher, state.transition
    transition = f" transition={t.transition.type}" if t.active else ""
    if t.manual:
        transition += f" tbar={t.position:.2f}"
    print(
        f"program={s.program} preview={s.preview} layout={s.layout.name or s.layout.kind} "
        f"ftb={'on' if s.ftb else 'off'}{transition}"
    )
    return 0


def _parse_source(text: str) -> mixer_pb2.ProductionSource:
    """`id[=name][@backup]`"""
    rest, _, backup = text.partition("@")
    source_id, _, name = rest.partition("=")
    return mixer_pb2.ProductionSource(id=source_id, name=name, backup=backup)


async def _create(ctl: Ctl, args: argparse.Namespace) -> int:
    production = mixer_pb2.Production()
    if args.file:
        text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
        data = yaml.safe_load(text) or {}
        json_format.ParseDict(data, production)
    if args.id:
        production.id = args.id
    if args.name:
        production.name = args.name
    if args.format:
        w, _, h = args.format.partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise errors.InvalidArgument("--format is WIDTHxHEIGHT", field="width")
        production.width, production.height = int(w), int(h)
    if args.fps:
        production.fps = args.fps
    production.sources.extend(_parse_source(s) for s in args.source)
    reply = await _admin(ctl, PCmd(create=production))
    print_message(reply.productions[0])
    return 0


async def _edit(ctl: Ctl, args: argparse.Namespace) -> int:
    """`update` (a whole new definition from a file) or a source added or removed: the running
    production takes it without stopping (ProductionCommand.update)."""
    production = mixer_pb2.Production()
    if args.production_verb == "update":
        text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
        json_format.ParseDict(yaml.safe_load(text) or {}, production)
        production.id = args.id
    else:
        current = await _admin(ctl, PCmd(show=PCmd.Show(id=args.id)))
        production.CopyFrom(current.productions[0])
        if args.production_verb == "add-source":
            production.sources.append(_parse_source(args.source))
        else:
            kept = [s for s in production.sources if s.id != args.source]
            if len(kept) == len(production.sources):
                raise errors.NotFound(f"{args.id} has no source {args.source!r}", field="source")
            for source in kept:
                if source.backup == args.source:
                    source.backup = ""
            del production.sources[:]
            production.sources.extend(kept)
            for layout in production.layouts:
                names = [s for s in layout.sources if s != args.source]
                del layout.sources[:]
                layout.sources.extend(names)
            kept_audio = [a for a in production.audio if a.source != args.source]
            del production.audio[:]
            production.audio.extend(kept_audio)
    reply = await _admin(ctl, PCmd(update=production))
    print_message(reply.productions[0])
    return 0


async def _list(ctl: Ctl, _args: argparse.Namespace) -> int:
    reply = await _admin(ctl, PCmd(list=PCmd.List()))
    rows = [
        {
            "id": p.id,
            "name": p.name,
            "format": f"{p.width}x{p.height}@{p.fps}",
            "sources": len(p.sources),
            "owner": reply.owners.get(p.id, "-"),
        }
        for p in reply.productions
    ]
    print_table(rows, ["id", "name", "format", "sources", "owner"])
    return 0


async def _show(ctl: Ctl, args: argparse.Namespace) -> int:
    reply = await _admin(ctl, PCmd(show=PCmd.Show(id=args.id)))
    print_message(reply.productions[0])
    print(f"owner: {reply.owners.get(args.id, '-')}")
    return 0


async def _delete(ctl: Ctl, args: argparse.Namespace) -> int:
    await _admin(ctl, PCmd(delete=PCmd.Delete(id=args.id)))
    print(f"deleted {args.id}")
    return 0


def _transition(args: argparse.Namespace) -> mixer_pb2.Transition:
    return mixer_pb2.Transition(
        type=args.type or "", duration_ms=args.duration_ms or 0, color=args.color or ""
    )


async def _take(ctl: Ctl, args: argparse.Namespace) -> int:
    return await _mixer(ctl, args.prod, Cmd(take=Cmd.Take()))


async def _cut(ctl: Ctl, args: argparse.Namespace) -> int:
    return await _mixer(ctl, args.prod, Cmd(cut=Cmd.Cut(source=args.source or "")))


async def _auto(ctl: Ctl, args: argparse.Namespace) -> int:
    auto = Cmd.Auto(transition=_transition(args), source=args.source or "")
    return await _mixer(ctl, args.prod, Cmd(auto=auto))


async def _tbar(ctl: Ctl, args: argparse.Namespace) -> int:
    transition = mixer_pb2.Transition(type=args.type or "", color=args.color or "")
    manual = Cmd.Manual(position=args.position, transition=transition)
    return await _mixer(ctl, args.prod, Cmd(manual=manual))


async def _preview(ctl: Ctl, args: argparse.Namespace) -> int:
    return await _mixer(ctl, args.prod, Cmd(preview=Cmd.Preview(source=args.source)))


async def _layout(ctl: Ctl, args: argparse.Namespace) -> int:
    command = Cmd.SetLayout(transition=_transition(args))
    if args.sources is not None:
        command.layout.CopyFrom(
            mixer_pb2.Layout(name=args.name, kind=args.name, sources=args.sources.split(","))
        )
    else:
        command.name = args.name
    return await _mixer(ctl, args.prod, Cmd(layout=command))


async def _ftb(ctl: Ctl, args: argparse.Namespace) -> int:
    command = Cmd.Ftb(duration_ms=args.duration_ms or 0)
    if args.on is not None:
        command.on = args.on
    return await _mixer(ctl, args.prod, Cmd(ftb=command))


async def grab(
    ctl: Ctl, handle: str, rendition: media_pb2.Rendition, timeout: float = SNAPSHOT_TIMEOUT_S
) -> media_pb2.VideoFrame:
    """One current video frame of a handle, over Media.Subscribe."""
    endpoint = await HandleDirectory(ctl.bus).resolve(handle)
    if endpoint is None:
        raise errors.NotFound(f"nobody serves {handle}", field="handle")
    channels = ChannelCache(operator_tls().grpc_channel_credentials())
    request = media_pb2.SubscribeRequest(handle=handle, rendition=rendition, subscriber="ctl")
    try:
        call = channels.media(endpoint).Subscribe(request, timeout=timeout)
        async for message in call:
            if message.WhichOneof("body") == "video":
                call.cancel()
                return message.video
    except grpc.aio.AioRpcError as exc:
        raise errors.Unavailable(f"{handle}: {exc.code().name} {exc.details()}") from None
    finally:
        await channels.close()
    raise errors.Unavailable(f"{handle} ended without a frame")


async def _snapshot(ctl: Ctl, args: argparse.Namespace) -> int:
    handle = f"prod/{args.prod}/{args.which}"
    rendition = media_pb2.Rendition(width=args.width, height=args.height, no_audio=True)
    frame = await grab(ctl, handle, rendition)
    image = proto_to_av(frame).to_image()
    await asyncio.to_thread(image.save, args.output, format="PNG")
    print(
        json.dumps(
            {
                "handle": handle,
                "width": frame.width,
                "height": frame.height,
                "pts_us": frame.pts_us,
                "file": str(args.output),
            }
        )
    )
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    rundown_ctl.register(verbs)
    talk_ctl.register(verbs)
    media_ctl.register(verbs)

    def verb(name: str, help_text: str, fn: Verb) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = verbs.add_parser(name, help=help_text)
        p.set_defaults(run=lambda args: run_verb(args, fn))
        return p

    prod = verbs.add_parser("production", help="create, list, show, update or delete productions")
    pverbs = prod.add_subparsers(dest="production_verb", required=True, metavar="VERB")
    p = pverbs.add_parser("create", help="create a production")
    p.add_argument("id", nargs="?", default="")
    p.add_argument("--name", help="display name, e.g. 启航·大湾区")
    p.add_argument("--format", help="1920x1080 (default) or 1280x720")
    p.add_argument("--fps", type=int, help="25 (default) or 30")
    p.add_argument("--source", action="append", default=[], metavar="ID[=NAME][@BACKUP]")
    p.add_argument("-f", "--file", help="a Production as YAML or JSON (flags override it)")
    p.set_defaults(run=lambda args: run_verb(args, _create))
    p = pverbs.add_parser(
        "update", help="replace a production's definition; a running one takes it without a gap"
    )
    p.add_argument("id")
    p.add_argument("-f", "--file", required=True, help="the Production as YAML or JSON")
    p.set_defaults(run=lambda args: run_verb(args, _edit))
    p = pverbs.add_parser("add-source", help="add a source (a late station) to a production")
    p.add_argument("id")
    p.add_argument("source", metavar="ID[=NAME][@BACKUP]")
    p.set_defaults(run=lambda args: run_verb(args, _edit))
    p = pverbs.add_parser("remove-source", help="remove a source that is not on program")
    p.add_argument("id")
    p.add_argument("source")
    p.set_defaults(run=lambda args: run_verb(args, _edit))
    p = pverbs.add_parser("list", help="list productions and which mixer runs each")
    p.set_defaults(run=lambda args: run_verb(args, _list))
    for name, fn in (("show", _show), ("delete", _delete)):
        p = pverbs.add_parser(name, help=f"{name} a production")
        p.add_argument("id")
        p.set_defaults(run=lambda args, fn=fn: run_verb(args, fn))

    p = verb("take", "swap preview and program (a cut)", _take)
    p.add_argument("prod")
    p = verb("cut", "cut a source to program (default: take)", _cut)
    p.add_argument("prod")
    p.add_argument("source", nargs="?")
    p = verb("auto", "transition preview (or --source) to program", _auto)
    p.add_argument("prod")
    p.add_argument("--source")
    p.add_argument("--type", choices=["mix", "wipe", "dip", "cut"])
    p.add_argument("--duration-ms", type=int)
    p.add_argument("--color", help="dip colour #RRGGBB")
    p = verb(
        "tbar",
        "hold a transition from program to preview at a position, as a T-bar does "
        "(1 completes it, 0 abandons it)",
        _tbar,
    )
    p.add_argument("prod")
    p.add_argument("position", type=float, help="0..1")
    p.add_argument("--type", choices=["mix", "wipe", "dip"], help="default mix")
    p.add_argument("--color", help="dip colour #RRGGBB")
    p = verb("preview", "put a source on preview", _preview)
    p.add_argument("prod")
    p.add_argument("source")
    p = verb("layout", "switch layout (a production layout, or a kind with --sources)", _layout)
    p.add_argument("prod")
    p.add_argument("name", help="layout name, or full|side_by_side|pip|quad|grid3x3|city_wall")
    p.add_argument("--sources", help="comma-separated sources in box order ('' = the bus)")
    p.add_argument("--type", choices=["mix", "wipe", "dip", "cut"])
    p.add_argument("--duration-ms", type=int)
    p.add_argument("--color")
    audio_ctl.register(verbs)
    clip_ctl.register(verbs)
    p = verb("ftb", "fade to black (toggle, or --on/--off)", _ftb)
    p.add_argument("prod")
    p.add_argument("--on", dest="on", action="store_true", default=None)
    p.add_argument("--off", dest="on", action="store_false")
    p.add_argument("--duration-ms", type=int)
    p = verb("snapshot", "write the current frame of a mixer handle as PNG", _snapshot)
    p.add_argument("prod")
    p.add_argument("which", choices=["program", "clean", "preview", "multiview"])
    p.add_argument("-o", "--output", required=True, type=Path)
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--height", type=int, default=0)
