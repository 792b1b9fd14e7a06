"""The demo production 启航·大湾区: stations, the show, its graphics, outputs and rundown.

Everything here goes through the same commands an operator would send (`baycast ctl`), so the
demo is also a tour of the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from prometheus_client.parser import text_string_to_metric_families

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import (
    distribution_pb2,
    graphics_pb2,
    ingest_pb2,
    mixer_pb2,
    operators_pb2,
    rundown_pb2,
)
from services.common.media_library import MediaLibrary, MediaNotFound, file_sha256
from services.mixer.layouts import preset_boxes
from services.up.opener import make_opener

R = TypeVar("R")

PRODUCTION = "qihang"
TITLE = "启航·大湾区"
REFERENCE = (1920, 1080)  # graphics positions are given in a 1080p frame


@dataclass(frozen=True)
class Station:
    id: str
    name: str
    city: str
    city_en: str


# The nine cities the case names, and Dongguan as the tenth.
CITIES = (
    Station("gz", "广州台", "广州", "Guangzhou"),
    Station("sz", "深圳台", "深圳", "Shenzhen"),
    Station("fs", "佛山台", "佛山", "Foshan"),
    Station("zh", "珠海台", "珠海", "Zhuhai"),
    Station("zs", "中山台", "中山", "Zhongshan"),
    Station("hz", "惠州台", "惠州", "Huizhou"),
    Station("zq", "肇庆台", "肇庆", "Zhaoqing"),
    Station("jm", "江门台", "江门", "Jiangmen"),
    Station("mo", "澳门台", "澳门", "Macao"),
    Station("dg", "东莞台", "东莞", "Dongguan"),
)
REPORTERS = (
    Station("bj", "北京记者站", "北京", "Beijing"),
    Station("rp1", "大湾区记者", "大湾区", "Bay Area"),
)
FORMATS = {"720p": (1280, 720), "1080p": (1920, 1080)}
OPENER = "opener"
OPENER_SOURCE = f"clip/{OPENER}"
OPENER_BACKSTOP_MS = 8_000
DIRECTOR_ID = "director"
DIRECTOR_NAME = "导演"
SOURCE_GAIN_DB = -17.0
DEMO_HOLD_MS = 1000
DEMO_BACKUP_AFTER_MS = 1500
DEMO_CLEAR_MS = 1500
TICKER = [
    "粤港澳大湾区十城联动直播 Ten Greater Bay Area cities live together",
    "央视新闻矩阵号、新华社花城+同步播出 Live on CCTV News and Xinhua 花城+",
    "启航·大湾区 每日14:00 Set Sail airs daily at 14:00",
]


def stations(count: int) -> list[Station]:
    return [*CITIES[: max(1, min(count, len(CITIES)))], *REPORTERS]


# -- commands ------------------------------------------------------------------------------------


async def _retry(call: Callable[[], Awaitable[R]], what: str, seconds: float = 30.0) -> R:
    """Retry `call()` while its service is not there yet (start-up order)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            return await call()
        except errors.Unavailable:
            if loop.time() > deadline:
                raise RuntimeError(f"{what}: no answer after {seconds:.0f} s") from None
            await asyncio.sleep(0.3)


async def register_stations(
    bus: Bus, plan: list[Station], ingest_http: str
) -> list[dict[str, str]]:
    """Each station with a fresh token (a known station gets its token rotated)."""
    subj = subject("ingest", "station", "cmd")
    out = []
    for st in plan:
        add = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=st.id, name=st.name))
        try:
            reply = await _retry(partial(bus.request, subj, add, ingest_pb2.StationReply), "ingest")
        except errors.AlreadyExists:
            rotate = ingest_pb2.StationCommand(rotate=ingest_pb2.StationRef(id=st.id))
            reply = await bus.request(subj, rotate, ingest_pb2.StationReply)
        out.append(
            {
                "id": st.id,
                "name": st.name,
                "token": reply.token,
                "whip": f"{ingest_http}/whip/{st.id}",
            }
        )
    return out


async def add_director(bus: Bus) -> tuple[str, str]:
    """The demo's director (导演) with a fresh token (a known one gets its token rotated)."""
    subj = subject("operator", "cmd")
    add = operators_pb2.OperatorCommand(
        add=operators_pb2.AddOperator(
            id=DIRECTOR_ID, name=DIRECTOR_NAME, role=operators_pb2.ROLE_DIRECTOR
        )
    )
    try:
        reply = await _retry(
            partial(bus.request, subj, add, operators_pb2.OperatorReply), "control"
        )
    except errors.AlreadyExists:
        rotate = operators_pb2.OperatorCommand(rotate=operators_pb2.OperatorRef(id=DIRECTOR_ID))
        reply = await bus.request(subj, rotate, operators_pb2.OperatorReply)
    return reply.operators[0].id, reply.token


async def add_opener(bus: Bus, state_dir: Path, fmt: str) -> None:
    """The title film, made once per format, into the media library (unless it is there)."""
    width, height = FORMATS[fmt]
    path = await asyncio.to_thread(
        make_opener,
        state_dir / "media" / f"opener-{fmt}-house.mp4",
        width,
        height,
        title=TITLE,
        subtitle="Set Sail · Greater Bay Area",
    )
    library = await MediaLibrary.open(bus, create=True)
    with contextlib.suppress(MediaNotFound):
        item = await library.item(OPENER)
        if item.sha256 == await asyncio.to_thread(file_sha256, path):
            return
    await library.add(path, OPENER, replace=True)


def production(plan: list[Station], fmt: str) -> mixer_pb2.Production:
    width, height = FORMATS[fmt]
    cities = [s.id for s in plan if s in CITIES]
    quad = (cities + cities)[1:5]
    p = mixer_pb2.Production(
        id=PRODUCTION,
        name=TITLE,
        width=width,
        height=height,
        fps=25,
        sample_rate=48_000,
        channels=2,
        # Twelve stations, the platform and the encoder share one laptop: a feed may stall for
        # half a second when the machine is busy. Hold it a little longer before slating it.
        hold_ms=DEMO_HOLD_MS,
        backup_after_ms=DEMO_BACKUP_AFTER_MS,
        clear_ms=DEMO_CLEAR_MS,
    )
    # The title film opens the show; at its end the rundown takes the next segment.
    p.sources.add(id=OPENER_SOURCE, name="开场片头", end=mixer_pb2.CLIP_END_NEXT)
    p.audio.add(source=OPENER_SOURCE, gain_db=0.0, afv=True)
    for st in plan:
        # The field reporter falls back to the Beijing desk if her feed is lost on air.
        p.sources.add(id=st.id, name=st.name, backup="bj" if st.id == "rp1" else "")
        # Sound follows picture; one station's tone reads about -23 LUFS on its own.
        p.audio.add(source=st.id, gain_db=SOURCE_GAIN_DB, afv=True)
    p.layouts.add(name="wall", kind="city_wall", sources=cities)
    p.layouts.add(name="studio", kind="full")
    p.layouts.add(
        name="pip",
        kind="pip",
        sources=["", "bj"],
        pip=mixer_pb2.Box(
            x=0.62, y=0.1, width=0.33, height=0.33, border_px=4, border_color="#FFFFFF"
        ),
    )
    p.layouts.add(name="quad", kind="quad", sources=quad)
    return p


async def create_production(bus: Bus, prod: mixer_pb2.Production) -> None:
    admin = subject("mixer", "production", "cmd")
    delete = mixer_pb2.ProductionCommand(delete=mixer_pb2.ProductionCommand.Delete(id=prod.id))
    with contextlib.suppress(errors.NotFound):
        await _retry(lambda: bus.request(admin, delete, mixer_pb2.ProductionReply), "mixer")
    create = mixer_pb2.ProductionCommand(create=prod)
    await bus.request(admin, create, mixer_pb2.ProductionReply)
    get = mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
    # A mixer instance takes the production's lease within a second or so.
    await _retry(
        lambda: bus.request(subject("prod", prod.id, "mixer", "cmd"), get, mixer_pb2.MixerState),
        "the production's mixer",
    )


async def add_outputs(bus: Bus) -> None:
    subj = subject("prod", PRODUCTION, "dist", "cmd")
    wanted = [
        distribution_pb2.OutputSpec(
            id="web", kind=distribution_pb2.OUTPUT_KIND_HLS, enabled=True, label="HLS"
        ),
        distribution_pb2.OutputSpec(
            id="archive",
            kind=distribution_pb2.OUTPUT_KIND_RECORDING,
            enabled=True,
            label="录像 recording",
        ),
    ]
    for spec in wanted:
        add = distribution_pb2.DistCommand(add=distribution_pb2.AddOutput(output=spec))
        try:
            await _retry(
                partial(bus.request, subj, add, distribution_pb2.DistReply), "distribution"
            )
        except errors.AlreadyExists:
            start = distribution_pb2.DistCommand(start=distribution_pb2.OutputRef(id=spec.id))
            await bus.request(subj, start, distribution_pb2.DistReply)


def _show(template: str, instance: str, layer: int = 0, **fields: str) -> graphics_pb2.GfxCommand:
    return graphics_pb2.GfxCommand(
        show=graphics_pb2.GfxShow(template=template, instance=instance, fields=fields, layer=layer)
    )


def _hide(instance: str) -> graphics_pb2.GfxCommand:
    return graphics_pb2.GfxCommand(hide=graphics_pb2.GfxHide(instance=instance))


async def show_standing_graphics(bus: Bus) -> None:
    """What stays on air the whole show: logo, LIVE badge, clock, ticker."""
    subj = subject("prod", PRODUCTION, "gfx", "cmd")
    ticker = _show("ticker", "ticker", layer=5, items=json.dumps(TICKER, ensure_ascii=False))
    for cue in (
        _show("logo_bug", "logo", 10),
        _show("live_badge", "live", 10),
        _show("clock", "clock", 10),
        ticker,
    ):
        hide = _hide(cue.show.instance)
        # A leftover from an earlier run is taken down first, so the cue plays its animation.
        with contextlib.suppress(errors.NotFound):
            await _retry(partial(bus.request, subj, hide, graphics_pb2.GfxReply), "graphics")
        await bus.request(subj, cue, graphics_pb2.GfxReply)


def city_labels(plan: list[Station]) -> list[graphics_pb2.GfxCommand]:
    """A label at the bottom left of each city-wall box, in 1080p reference pixels."""
    cities = [s for s in plan if s in CITIES]
    boxes = preset_boxes(mixer_pb2.Layout(kind="city_wall", sources=[s.id for s in cities]))
    width, height = REFERENCE
    cues = []
    for st, box in zip(cities, boxes, strict=False):
        x = round(box.x * width) + 8
        y = round((box.y + box.height) * height) - 48 - 8
        label_width = min(300, round(box.width * width) - 16)
        cues.append(
            _show(
                "city_label",
                f"label-{st.id}",
                20,
                city=st.city,
                city_en=st.city_en,
                x=str(x),
                y=str(y),
                width=str(label_width),
            )
        )
    return cues


def rundown(plan: list[Station]) -> rundown_pb2.Rundown:
    """The title film → city wall → 广州 full with a lower third → 北京 in picture-in-picture →
    a quad → again."""
    labels = city_labels(plan)
    first = plan[0].id
    seg = rundown_pb2.RundownSegment
    transition = mixer_pb2.Transition

    def master(gain_db: float) -> mixer_pb2.MixerCommand.Audio:
        """Master gain for a segment: many boxes on air add up their sound."""
        return mixer_pb2.MixerCommand.Audio(source="", gain_db=gain_db)

    return rundown_pb2.Rundown(
        name="启航·大湾区 demo",
        loop=True,
        segments=[
            seg(
                title="开场片头 Opener",
                # The film's end moves on; the duration only if it cannot play.
                duration_ms=OPENER_BACKSTOP_MS,
                layout=mixer_pb2.MixerCommand.SetLayout(name="studio"),
                program=OPENER_SOURCE,
                play=OPENER_SOURCE,
                audio=[master(0)],
            ),
            seg(
                title="城市联播 City wall",
                duration_ms=10_000,
                layout=mixer_pb2.MixerCommand.SetLayout(
                    name="wall", transition=transition(type="mix", duration_ms=500)
                ),
                audio=[master(-10)],
                graphics=labels,
            ),
            seg(
                title="广州 Guangzhou",
                duration_ms=8_000,
                layout=mixer_pb2.MixerCommand.SetLayout(name="studio"),
                program=first,
                transition=transition(type="mix", duration_ms=500),
                audio=[master(0)],
                graphics=[
                    *(_hide(c.show.instance) for c in labels),
                    _show(
                        "lower_third",
                        "lt-studio",
                        15,
                        name="张晓琳",
                        name_en="Zhang Xiaolin",
                        title="主持人",
                        title_en="Presenter",
                        station="广州台",
                        city_en="GUANGZHOU",
                    ),
                ],
            ),
            seg(
                title="北京连线 Beijing",
                duration_ms=8_000,
                layout=mixer_pb2.MixerCommand.SetLayout(
                    name="pip", transition=transition(type="wipe", duration_ms=400)
                ),
                graphics=[
                    _hide("lt-studio"),
                    _show(
                        "lower_third",
                        "lt-bj",
                        15,
                        name="李明",
                        name_en="Li Ming",
                        title="北京记者站记者",
                        title_en="Reporter, Beijing",
                        station="北京",
                        city_en="BEIJING",
                    ),
                ],
            ),
            seg(
                title="四城连线 Four cities",
                duration_ms=8_000,
                layout=mixer_pb2.MixerCommand.SetLayout(
                    name="quad", transition=transition(type="mix", duration_ms=500)
                ),
                audio=[master(-6)],
                graphics=[_hide("lt-bj")],
            ),
        ],
    )


async def start_rundown(bus: Bus, plan: list[Station]) -> None:
    subj = subject("prod", PRODUCTION, "rundown", "cmd")
    cmd = rundown_pb2.RundownCommand
    await bus.request(subj, cmd(load=rundown(plan)), rundown_pb2.RundownStatus, timeout=10)
    await bus.request(subj, cmd(start=cmd.Start()), rundown_pb2.RundownStatus, timeout=10)


# -- keeping an eye on the box -------------------------------------------------------------------


def contribution_drops(metrics_text: str) -> float:
    """Contribution frames ingest dropped on their way to a subscriber that read too slowly."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "baycast_ingest_subscriber_frames_dropped":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def skipped_ticks(metrics_text: str) -> float:
    """Program frames the mixer's clock had to skip (the box could not keep up)."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "baycast_mixer_ticks_skipped":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("production") == PRODUCTION
            )
    return 0.0
