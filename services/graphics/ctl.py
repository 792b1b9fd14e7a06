"""`baycast ctl gfx ...`: put graphics on air, change them, take them off, list templates."""

from __future__ import annotations

import argparse
from typing import Any

from services.common import errors
from services.common.bus import subject
from services.common.ctl import Ctl, print_message, print_table, run_verb
from services.common.gen.baycast.v1 import graphics_pb2


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise errors.InvalidArgument(f"{flag} takes NAME=VALUE, not {item!r}", field=flag)
        out[key] = value
    return out


def _bindings(values: list[str] | None) -> list[graphics_pb2.GfxBinding]:
    """`FIELD=file:PATH[#key.path]` or `FIELD=URL[#key.path]`."""
    out = []
    for field, source in _pairs(values, "--bind").items():
        source, _, path = source.partition("#")
        binding = graphics_pb2.GfxBinding(field=field, path=path)
        if source.startswith(("http://", "https://")):
            binding.url = source
        else:
            binding.file = source.removeprefix("file:")
        out.append(binding)
    return out


async def _send(
    ctl: Ctl, production: str, command: graphics_pb2.GfxCommand
) -> graphics_pb2.GfxReply:
    return await ctl.command(
        subject("prod", production, "gfx", "cmd"), command, graphics_pb2.GfxReply
    )


async def _show(ctl: Ctl, args: argparse.Namespace) -> int:
    cmd = graphics_pb2.GfxShow(
        template=args.template,
        instance=args.id or "",
        fields=_pairs(args.field, "--field"),
        layer=args.layer,
        bindings=_bindings(args.bind),
        cut=args.cut,
    )
    print_message(await _send(ctl, args.production, graphics_pb2.GfxCommand(show=cmd)))
    return 0


async def _hide(ctl: Ctl, args: argparse.Namespace) -> int:
    cmd = graphics_pb2.GfxHide(instance=args.instance, cut=args.cut)
    print_message(await _send(ctl, args.production, graphics_pb2.GfxCommand(hide=cmd)))
    return 0


async def _update(ctl: Ctl, args: argparse.Namespace) -> int:
    cmd = graphics_pb2.GfxUpdate(
        instance=args.instance, fields=_pairs(args.field, "--field"), bindings=_bindings(args.bind)
    )
    print_message(await _send(ctl, args.production, graphics_pb2.GfxCommand(update=cmd)))
    return 0


async def _ticker_add(ctl: Ctl, args: argparse.Namespace) -> int:
    cmd = graphics_pb2.GfxTickerAdd(instance=args.instance, item=args.item, field=args.list_field)
    print_message(await _send(ctl, args.production, graphics_pb2.GfxCommand(ticker_add=cmd)))
    return 0


async def _list(ctl: Ctl, args: argparse.Namespace) -> int:
    reply = await _send(ctl, args.production, graphics_pb2.GfxCommand(list=graphics_pb2.GfxList()))
    rows: list[dict[str, Any]] = [
        {
            "instance": i.id,
            "template": i.template,
            "layer": i.layer,
            "revision": i.revision,
            "fields": ", ".join(f"{k}={v}" for k, v in sorted(i.fields.items())),
        }
        for i in reply.instances
    ]
    print_table(rows, ["instance", "template", "layer", "revision", "fields"])
    return 0


async def _templates(ctl: Ctl, args: argparse.Namespace) -> int:
    command = graphics_pb2.GfxCommand(templates=graphics_pb2.GfxTemplates(reload=args.reload))
    reply = await _send(ctl, args.production, command)
    rows: list[dict[str, Any]] = [
        {
            "template": t.name,
            "file": t.file,
            "fields": ", ".join(f.name for f in t.fields),
            "description": t.description,
        }
        for t in reply.templates
    ]
    print_table(rows, ["template", "file", "fields", "description"])
    for e in reply.template_errors:
        print(f"rejected: {e.file}: {e.field}: {e.message}")
    return 1 if reply.template_errors else 0


def register(verbs: argparse._SubParsersAction) -> None:
    gfx = verbs.add_parser("gfx", help="graphics: show, hide, update, list, templates, ticker-add")
    sub = gfx.add_subparsers(dest="gfx_verb", required=True, metavar="ACTION")

    def add(name: str, help_text: str, verb: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("production", help="production id, e.g. qihang")
        p.set_defaults(run=lambda args: run_verb(args, verb))
        return p

    p = add("show", "put a template instance on air", _show)
    p.add_argument("template")
    p.add_argument("--id", help="instance id (default: the template's name)")
    p.add_argument("--field", "-f", action="append", metavar="NAME=VALUE")
    p.add_argument("--layer", type=int, default=0, help="z order, higher on top")
    p.add_argument(
        "--bind",
        action="append",
        metavar="FIELD=SOURCE",
        help="SOURCE: file:PATH or URL, #key.path",
    )
    p.add_argument("--cut", action="store_true", help="no in-animation")

    p = add("hide", "take an instance off air", _hide)
    p.add_argument("instance")
    p.add_argument("--cut", action="store_true", help="no out-animation")

    p = add("update", "change fields of an instance on air", _update)
    p.add_argument("instance")
    p.add_argument("--field", "-f", action="append", metavar="NAME=VALUE")
    p.add_argument("--bind", action="append", metavar="FIELD=SOURCE")

    p = add("ticker-add", "append a headline to a ticker on air", _ticker_add)
    p.add_argument("instance")
    p.add_argument("item")
    p.add_argument("--list-field", default="", help="the list field (default: items)")

    add("list", "instances on air", _list)
    p = add("templates", "templates available (and files refused)", _templates)
    p.add_argument("--reload", action="store_true", help="scan the template folders first")
