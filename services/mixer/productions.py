"""Productions (shows): defaults, validation and the key-value store that keeps them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import nats.js.errors

from services.common import errors
from services.common.bus import PRODUCTIONS_BUCKET, Bus, KvBucket, encode
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media_library import CLIP_PREFIX, MEDIA_ID
from services.mixer import processing_settings

BUCKET = PRODUCTIONS_BUCKET
FORMATS = {(1920, 1080), (1280, 720)}
FRAME_RATES = {25, 30}
SAMPLE_RATE = 48_000
CHANNELS = 2
DEFAULT_HOLD_MS = 500
DEFAULT_BACKUP_AFTER_MS = 1000
DEFAULT_CLEAR_MS = 3000
LAYOUT_KINDS = ("full", "side_by_side", "pip", "quad", "grid3x3", "city_wall", "custom")
TRANSITION_TYPES = ("cut", "mix", "wipe", "dip")
MAX_TRANSITION_MS = 10_000
MAX_SOURCES = 32
MAX_BOXES = 32
MAX_GAIN_DB = 20.0
MIN_GAIN_DB = -96.0
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


def check_id(value: str, field: str) -> None:
    if not _ID.match(value):
        raise errors.InvalidArgument(
            f"{field} must be 1-48 lowercase letters, digits, '-' or '_', got {value!r}",
            field=field,
        )


def check_source(source: mixer_pb2.ProductionSource, field: str) -> None:
    """A station (an ingest source id) or a clip of the media library (`clip/<media id>`);
    only a clip loops or has an end."""
    clip = source.id.startswith(CLIP_PREFIX)
    if not clip:
        check_id(source.id, f"{field}.id")
        if source.loop or source.end:
            raise errors.InvalidArgument(
                f"{field}: only a clip ({CLIP_PREFIX}<media id>) has loop and end", field=field
            )
    elif not MEDIA_ID.match(source.id.removeprefix(CLIP_PREFIX)):
        raise errors.InvalidArgument(
            f"{field}.id must be {CLIP_PREFIX} and a media id (lowercase letters, digits, '-' or"
            f" '_'), got {source.id!r}",
            field=f"{field}.id",
        )


def check_color(value: str, field: str) -> None:
    if value and not _COLOR.match(value):
        raise errors.InvalidArgument(f"{field} must look like #RRGGBB, got {value!r}", field=field)


def check_gain(value: float, field: str) -> None:
    if not MIN_GAIN_DB <= value <= MAX_GAIN_DB:
        raise errors.InvalidArgument(
            f"{field} must be between {MIN_GAIN_DB:g} and {MAX_GAIN_DB:g} dB", field=field
        )


def check_transition(t: mixer_pb2.Transition, field: str) -> None:
    if t.type and t.type not in TRANSITION_TYPES:
        raise errors.InvalidArgument(
            f"{field}.type must be one of {', '.join(TRANSITION_TYPES)}", field=f"{field}.type"
        )
    if t.duration_ms > MAX_TRANSITION_MS:
        raise errors.InvalidArgument(
            f"{field}.duration_ms must be at most {MAX_TRANSITION_MS}", field=f"{field}.duration_ms"
        )
    check_color(t.color, f"{field}.color")


def check_box(box: mixer_pb2.Box, field: str, sources: set[str]) -> None:
    if box.source and box.source not in sources:
        raise errors.InvalidArgument(f"{field}.source {box.source!r} is not a source", field=field)
    for name in ("x", "y", "width", "height"):
        value = getattr(box, name)
        if not 0 <= value <= 1:
            raise errors.InvalidArgument(f"{field}.{name} must be in 0..1", field=f"{field}.{name}")
    if box.width <= 0 or box.height <= 0:
        raise errors.InvalidArgument(f"{field} needs a width and a height", field=f"{field}.width")
    if box.x + box.width > 1.0001 or box.y + box.height > 1.0001:
        raise errors.InvalidArgument(f"{field} reaches outside the frame", field=f"{field}.x")
    for name in ("crop_left", "crop_top", "crop_right", "crop_bottom"):
        if not 0 <= getattr(box, name) < 1:
            raise errors.InvalidArgument(f"{field}.{name} must be in 0..1", field=f"{field}.{name}")
    if box.crop_left + box.crop_right >= 0.95 or box.crop_top + box.crop_bottom >= 0.95:
        raise errors.InvalidArgument(f"{field} crops away the picture", field=f"{field}.crop_left")
    if box.border_px > 32:
        raise errors.InvalidArgument(f"{field}.border_px must be <= 32", field=f"{field}.border_px")
    check_color(box.border_color, f"{field}.border_color")


def check_layout(layout: mixer_pb2.Layout, field: str, sources: set[str]) -> None:
    if layout.kind not in LAYOUT_KINDS:
        raise errors.InvalidArgument(
            f"{field}.kind must be one of {', '.join(LAYOUT_KINDS)}", field=f"{field}.kind"
        )
    for i, source in enumerate(layout.sources):
        if source and source not in sources:
            raise errors.InvalidArgument(
                f"{field}.sources[{i}] {source!r} is not a source of the production",
                field=f"{field}.sources",
            )
    if layout.kind == "custom" and not layout.boxes:
        raise errors.InvalidArgument(f"{field}.boxes: a custom layout needs boxes", field=field)
    if len(layout.boxes) > MAX_BOXES:
        raise errors.InvalidArgument(f"{field}.boxes: at most {MAX_BOXES}", field=f"{field}.boxes")
    for i, box in enumerate(layout.boxes):
        check_box(box, f"{field}.boxes[{i}]", sources)
    if layout.HasField("pip"):
        check_box(layout.pip, f"{field}.pip", sources)


def normalize(production: mixer_pb2.Production) -> mixer_pb2.Production:
    """A validated copy with defaults filled in; raises InvalidArgument naming the field."""
    p = mixer_pb2.Production()
    p.CopyFrom(production)
    check_id(p.id, "id")
    if not p.name:
        p.name = p.id
    if len(p.name) > 100:
        raise errors.InvalidArgument("name is longer than 100 characters", field="name")
    if not p.width and not p.height:
        p.width, p.height = 1920, 1080
    if (p.width, p.height) not in FORMATS:
        raise errors.InvalidArgument("width×height must be 1920×1080 or 1280×720", field="width")
    p.fps = p.fps or 25
    if p.fps not in FRAME_RATES:
        raise errors.InvalidArgument("fps must be 25 or 30", field="fps")
    p.sample_rate = p.sample_rate or SAMPLE_RATE
    if p.sample_rate != SAMPLE_RATE:
        raise errors.InvalidArgument("sample_rate must be 48000", field="sample_rate")
    p.channels = p.channels or CHANNELS
    if p.channels != CHANNELS:
        raise errors.InvalidArgument("channels must be 2", field="channels")
    p.hold_ms = p.hold_ms or DEFAULT_HOLD_MS
    p.backup_after_ms = p.backup_after_ms or DEFAULT_BACKUP_AFTER_MS
    p.clear_ms = p.clear_ms or DEFAULT_CLEAR_MS
    if not 40 <= p.hold_ms <= 10_000:
        raise errors.InvalidArgument("hold_ms must be between 40 and 10000", field="hold_ms")
    if not 40 <= p.backup_after_ms <= 60_000:
        raise errors.InvalidArgument(
            "backup_after_ms must be between 40 and 60000", field="backup_after_ms"
        )
    if not 40 <= p.clear_ms <= 60_000:
        raise errors.InvalidArgument("clear_ms must be between 40 and 60000", field="clear_ms")
    if len(p.sources) > MAX_SOURCES:
        raise errors.InvalidArgument(f"at most {MAX_SOURCES} sources", field="sources")
    ids: set[str] = set()
    for i, source in enumerate(p.sources):
        check_source(source, f"sources[{i}]")
        if source.id in ids:
            raise errors.InvalidArgument(f"source {source.id!r} twice", field=f"sources[{i}].id")
        ids.add(source.id)
        if not source.name:
            source.name = source.id
    for i, source in enumerate(p.sources):
        if source.backup and (source.backup not in ids or source.backup == source.id):
            raise errors.InvalidArgument(
                f"sources[{i}].backup must be another source of the production",
                field=f"sources[{i}].backup",
            )
    names: set[str] = set()
    for i, layout in enumerate(p.layouts):
        if not layout.name or layout.name in names:
            raise errors.InvalidArgument(
                f"layouts[{i}].name must be set and unique", field=f"layouts[{i}].name"
            )
        names.add(layout.name)
        check_layout(layout, f"layouts[{i}]", ids)
    for i, audio in enumerate(p.audio):
        if audio.source not in ids:
            raise errors.InvalidArgument(
                f"audio[{i}].source is not a source", field=f"audio[{i}].source"
            )
        check_gain(audio.gain_db, f"audio[{i}].gain_db")
        processing_settings.check_trim(audio.trim_db, f"audio[{i}].trim_db")
        processing_settings.check_processing(audio, f"audio[{i}]")
    check_gain(p.master_gain_db, "master_gain_db")
    processing_settings.check_loudness(p.loudness, "loudness")
    return p


def source_ids(production: mixer_pb2.Production) -> list[str]:
    return [s.id for s in production.sources]


class ProductionStore:
    """Productions in the JetStream key-value bucket `mixer-productions`, keyed by id."""

    def __init__(self, bucket: KvBucket[mixer_pb2.Production]) -> None:
        self.bucket = bucket

    @classmethod
    async def open(cls, bus: Bus) -> ProductionStore:
        return cls(await bus.kv(BUCKET, mixer_pb2.Production))

    async def create(self, production: mixer_pb2.Production) -> mixer_pb2.Production:
        p = normalize(production)
        await self.bucket.create(p.id, p)
        return p

    async def update(
        self,
        production: mixer_pb2.Production,
        check: Callable[[mixer_pb2.Production, mixer_pb2.Production], Awaitable[None]],
    ) -> mixer_pb2.Production:
        """Replace an existing production's definition; `check(old, new)` may refuse it."""
        new = normalize(production)
        entry = await self.bucket.get(new.id)
        if entry is None:
            raise errors.NotFound(f"no production {new.id!r}", field="update.id")
        old = entry.value
        for name in ("width", "height", "fps", "sample_rate", "channels"):
            if getattr(old, name) != getattr(new, name):
                raise errors.InvalidArgument(
                    f"update.{name}: a production's format cannot change "
                    f"({getattr(old, name)} -> {getattr(new, name)}); create another one",
                    field=f"update.{name}",
                )
        await check(old, new)
        try:
            await self.bucket.store.update(new.id, encode(new), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise errors.Conflict(
                f"production {new.id!r} changed meanwhile: read it again", field="update"
            ) from None
        return new

    async def get(self, prod_id: str) -> mixer_pb2.Production:
        entry = await self.bucket.get(prod_id)
        if entry is None:
            raise errors.NotFound(f"no production {prod_id!r}", field="id")
        return entry.value

    async def all(self) -> dict[str, mixer_pb2.Production]:
        return await self.bucket.items()

    async def delete(self, prod_id: str) -> None:
        await self.get(prod_id)
        await self.bucket.delete(prod_id)
