"""Commands over NATS: validation, production admin, state events, FTB, preview and multiview."""

from __future__ import annotations

import asyncio

import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.mixer.multiview import PREVIEW_TALLY_YUV, PROGRAM_TALLY_YUV
from services.mixer.service import STATE_BUCKET, MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import (
    admin,
    cards,
    close_to,
    command,
    next_video,
    production,
    unique,
    yuv_at,
)

Cmd = mixer_pb2.MixerCommand
PCmd = mixer_pb2.ProductionCommand
SMALL = media_pb2.Rendition(width=320, height=180, no_audio=True)


async def test_invalid_commands_name_the_field_and_change_nothing(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("valid")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    await create_production(production(prod_id, [a, b]))
    before = await command(bus, prod_id, Cmd(get=Cmd.Get()))
    bad = [
        (Cmd(cut=Cmd.Cut(source="nowhere")), "cut.source"),
        (Cmd(preview=Cmd.Preview(source="")), "preview.source"),
        (Cmd(auto=Cmd.Auto(transition=mixer_pb2.Transition(type="spin"))), "auto.transition.type"),
        (
            Cmd(auto=Cmd.Auto(transition=mixer_pb2.Transition(duration_ms=60_000))),
            "auto.transition.duration_ms",
        ),
        (
            Cmd(auto=Cmd.Auto(transition=mixer_pb2.Transition(type="dip", color="red"))),
            "auto.transition.color",
        ),
        (Cmd(layout=Cmd.SetLayout(name="nope")), "layout.name"),
        (
            Cmd(layout=Cmd.SetLayout(layout=mixer_pb2.Layout(kind="quad", sources=["x"]))),
            "layout.layout.sources",
        ),
        (
            Cmd(
                layout=Cmd.SetLayout(
                    layout=mixer_pb2.Layout(
                        kind="custom", boxes=[mixer_pb2.Box(x=0.9, width=0.5, height=0.5)]
                    )
                )
            ),
            "layout.layout.boxes[0].x",
        ),
        (Cmd(audio=Cmd.Audio(source=a.name.removeprefix("source/"), gain_db=40)), "audio.gain_db"),
        (Cmd(audio=Cmd.Audio(source="nowhere", mute=True)), "audio.source"),
        (Cmd(ftb=Cmd.Ftb(duration_ms=99_999)), "ftb.duration_ms"),
        (Cmd(), "command"),
    ]
    for cmd, field in bad:
        with pytest.raises(errors.InvalidArgument) as info:
            await command(bus, prod_id, cmd)
        assert info.value.field == field, (cmd, info.value.field, info.value.message)
    # A malformed payload never reaches the handler.
    cut = subject("prod", prod_id, "mixer", "cmd", "cut")
    reply = await bus.nc.request(cut, b'{"cut": {"sauce": 1}}')
    assert b"INVALID_ARGUMENT" in reply.data and b"sauce" in reply.data
    after = await command(bus, prod_id, Cmd(get=Cmd.Get()))
    assert after.switcher == before.switcher
    stored = await (await bus.kv(STATE_BUCKET, mixer_pb2.SwitcherState)).get(prod_id)
    assert stored is None or stored.value == before.switcher


async def test_production_admin_validates_and_lists(
    bus: Bus, mixer: MixerService, create_production: CreateProduction
) -> None:
    bad = [
        (mixer_pb2.Production(id="Bad Id"), "id"),
        (mixer_pb2.Production(id="p1", width=1000, height=500), "width"),
        (mixer_pb2.Production(id="p1", fps=50), "fps"),
        (
            mixer_pb2.Production(
                id="p1", sources=[mixer_pb2.ProductionSource(id="a", backup="zz")]
            ),
            "sources[0].backup",
        ),
        (
            mixer_pb2.Production(id="p1", layouts=[mixer_pb2.Layout(name="x", kind="hex")]),
            "layouts[0].kind",
        ),
    ]
    for prod, field in bad:
        with pytest.raises(errors.InvalidArgument) as info:
            await admin(bus, PCmd(create=prod))
        assert info.value.field == field
    prod_id = unique("admin")
    created = await create_production(
        mixer_pb2.Production(
            id=prod_id, name="启航·大湾区", sources=[mixer_pb2.ProductionSource(id="gz")]
        )
    )
    assert (created.width, created.height, created.fps, created.sample_rate, created.channels) == (
        1920,
        1080,
        25,
        48000,
        2,
    )
    assert created.hold_ms == 500 and created.backup_after_ms == 1000
    with pytest.raises(errors.AlreadyExists):
        await admin(bus, PCmd(create=created))
    shown = await admin(bus, PCmd(show=PCmd.Show(id=prod_id)))
    assert (
        shown.productions[0].name == "启航·大湾区"
        and shown.owners[prod_id] == mixer.settings.instance
    )
    with pytest.raises(errors.NotFound):
        await admin(bus, PCmd(show=PCmd.Show(id="missing-prod")))
    await admin(bus, PCmd(delete=PCmd.Delete(id=prod_id)))
    for _ in range(30):  # the owner stops a deleted production
        if prod_id not in mixer.running:
            break
        await asyncio.sleep(0.1)
    assert prod_id not in mixer.running


async def test_state_events_ftb_preview_and_multiview(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("ftb")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    await create_production(production(prod_id, [a, b]))
    sa, sb = (c.name.removeprefix("source/") for c in (a, b))
    states: list[mixer_pb2.MixerState] = []
    tallies: list[mixer_pb2.Tally] = []

    async def on_state(state: mixer_pb2.MixerState, _s: str) -> None:
        states.append(state)

    async def on_tally(tally: mixer_pb2.Tally, _s: str) -> None:
        tallies.append(tally)

    subs = [
        await bus.subscribe(
            subject("prod", prod_id, "mixer", "state"), mixer_pb2.MixerState, on_state
        ),
        await bus.subscribe(subject("prod", prod_id, "tally"), mixer_pb2.Tally, on_tally),
    ]
    try:
        await command(bus, prod_id, Cmd(take=Cmd.Take()))
        await asyncio.sleep(0.3)
        assert states and states[-1].switcher.program == sb
        assert tallies and {t.source: t.program for t in tallies[-1].sources} == {
            sa: False,
            sb: True,
        }

        # Preview shows the preview bus; multiview shows both plus every source with tally.
        _, preview = await next_video(
            mixer.grpc_endpoint,
            f"prod/{prod_id}/preview",
            SMALL,
            accept=lambda im: close_to(yuv_at(im, 160, 90), a.yuv),
        )
        assert close_to(yuv_at(preview, 5, 5), a.yuv)
        _, mv = await next_video(
            mixer.grpc_endpoint,
            f"prod/{prod_id}/multiview",
            accept=lambda im: (
                close_to(yuv_at(im, 160, 90), a.yuv) and close_to(yuv_at(im, 960, 90), b.yuv)
            ),
        )
        # bottom half: tiles in source order (a, b) with a red tally border around b (program)
        # and a green one around a (preview)
        assert close_to(yuv_at(mv, 100, 500), a.yuv) and close_to(yuv_at(mv, 740, 500), b.yuv)
        assert close_to(yuv_at(mv, 700, 365), PROGRAM_TALLY_YUV, 2)
        assert close_to(yuv_at(mv, 100, 365), PREVIEW_TALLY_YUV, 2)

        # Fade to black: the program goes black, but only when asked; then back.
        state = await command(bus, prod_id, Cmd(ftb=Cmd.Ftb(on=True, duration_ms=200)))
        assert state.switcher.ftb
        _, black = await next_video(
            mixer.grpc_endpoint,
            f"prod/{prod_id}/program",
            SMALL,
            accept=lambda im: close_to(yuv_at(im, 160, 90), (16, 128, 128), 1),
        )
        assert close_to(yuv_at(black, 5, 5), (16, 128, 128), 1)
        await command(bus, prod_id, Cmd(ftb=Cmd.Ftb(on=False, duration_ms=200)))
        await next_video(
            mixer.grpc_endpoint,
            f"prod/{prod_id}/program",
            SMALL,
            accept=lambda im: close_to(yuv_at(im, 160, 90), b.yuv),
        )
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def test_multiview_tiles_off_air_take_the_watchers_rate(
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("mvrate")
    a, b, c = (media.add(card) for card in cards(prod_id, 3))
    await announce()
    await create_production(production(prod_id, [a, b, c]))  # a on program, b on preview
    # A monitor once a second. c's tile (the third of one row, centred at 83 %, 67 % of the
    # picture) comes from a feed of c's own at tile size: live, though it is on neither bus.
    await next_video(
        mixer.grpc_endpoint,
        f"prod/{prod_id}/multiview",
        media_pb2.Rendition(width=640, height=360, fps=1, no_audio=True),
        accept=lambda im: close_to(yuv_at(im, 532, 240), c.yuv),
        timeout=15,
    )
    pictures = [r.rendition for r in media.requests if r.handle == c.name]
    pictures = [r for r in pictures if not r.no_video]
    # Asked at the 418x234 tile size and 6 frames a second (three within the 500 ms hold), not
    # at the production's 25.
    assert [(r.width, r.height, r.fps) for r in pictures] == [(418, 234, 6)]
    # a's and b's tiles are thumbnails of their program and preview feeds: no feed of their own
    # at tile size.
    for card in (a, b):
        sizes = {
            (r.rendition.width, r.rendition.height)
            for r in media.requests
            if r.handle == card.name and not r.rendition.no_video
        }
        assert sizes == {(1280, 720)}, sizes
