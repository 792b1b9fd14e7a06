"""The media library: clips and stills the mixer plays as sources `clip/<id>` (ADR 0022).

It is a JetStream object store, so every mixer replica reads the same library and it lives on
the NATS servers' volumes (a PVC each in Kubernetes); `baycast ctl media` keeps it.

An object is one file, named by its media id. Its description (kind, original name, duration,
picture size, rate, sound, when it was added) is JSON in the object's meta, written in the same
message that commits the object, so it never disagrees with the bytes; the size and the SHA-256
are the store's own. Errors:

    MediaError     (errors.InvalidArgument, ValueError)  not a clip or still we play; a bad id
    MediaNotFound  (errors.NotFound, LookupError)        no such id in the library
    errors.AlreadyExists                                 adding an id the library holds
    errors.PermissionDenied                              the NATS user may not (a mixer writing)
    errors.Unavailable                                   JetStream did not answer or refused
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import av
import av.error
import nats.errors
import nats.js.errors
from nats.js.api import ObjectInfo, ObjectMeta, ObjectMetaOptions, ObjectStoreConfig, StorageType
from nats.js.object_store import ObjectStore

from services.common import errors
from services.common.bus import TRANSIENT, Bus, url_user

MEDIA_BUCKET = "media"
MEDIA_STREAM = f"OBJ_{MEDIA_BUCKET}"
CLIP_PREFIX = "clip/"  # a production's source `clip/<media id>`
MEDIA_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: no trailing newline either
# nats-py's default chunk; never more than the server takes in one message.
CHUNK_BYTES = 128 * 1024
# A fetch that receives no chunk for this long has stalled (the object was replaced or removed
# under it, or the stream lost its leader); the mixer reports the clip failed.
FETCH_IDLE_TIMEOUT_S = 10.0
JETSTREAM_TIMEOUT_S = 5.0  # nats-py's default
STILL_CODECS = ("png", "mjpeg")
CACHE_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")
CHUNKS_SUBJECT = "$O.{bucket}.C.{nuid}"
# A clip prepared in the house format (services/common/house_format.py) says so in its
# container's comment.
HOUSE_COMMENT = "baycast house format 1"
META_SUBJECTS = f"$O.{MEDIA_BUCKET}.M.>"

Progress = Callable[[int, int], None]  # (bytes stored, bytes in all)


class MediaError(errors.InvalidArgument, ValueError):
    """A file the library does not take (not a PNG/JPEG still nor a decodable clip), a bad id."""


class MediaNotFound(errors.NotFound, LookupError):
    """No media of that id in the library."""


@dataclass(frozen=True)
class MediaItem:
    """One clip or still of the library."""

    id: str
    kind: str  # "clip" or "still"
    filename: str  # the name of the file it was added from
    size: int  # bytes
    sha256: str  # hex
    duration_ms: int  # 0 for a still
    width: int
    height: int
    fps: float  # 0 for a still
    has_audio: bool
    added: datetime
    house: bool = False  # a clip in the house format (ADR 0027); items stored before say False

    def cache_name(self) -> str:
        """`opener-0123456789ab.mp4`: a replaced object is a new file in a mixer's cache."""
        suffix = Path(self.filename).suffix.lower()
        return f"{self.id}-{self.sha256[:12]}{suffix if CACHE_SUFFIX.match(suffix) else '.bin'}"

    def description(self) -> str:
        """The JSON stored in the object's meta (what the store does not keep itself)."""
        fields = asdict(self)
        for own in ("id", "size", "sha256"):
            del fields[own]
        fields["added"] = self.added.isoformat()
        return json.dumps(fields, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_info(cls, info: ObjectInfo) -> MediaItem:
        """The item an object's meta describes."""
        try:
            fields: dict[str, Any] = json.loads(info.description or "")
            fields["added"] = datetime.fromisoformat(fields["added"])
            return cls(id=info.name, size=info.size or 0, sha256=hex_digest(info), **fields)
        except (ValueError, TypeError, KeyError) as exc:
            raise MediaError(
                f"{info.name!r} in the media library has no media description: {exc}"
            ) from None


def hex_digest(info: ObjectInfo) -> str:
    """The store's `SHA-256=<base64url>` digest as hex."""
    b64 = (info.digest or "").partition("=")[2]
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()


def check_media_id(media_id: str) -> str:
    if not MEDIA_ID.match(media_id):
        raise MediaError(
            f"a media id is 1-63 lowercase letters, digits, '-' or '_' (starting with a letter or"
            f" digit), got {media_id!r}",
            field="id",
        )
    return media_id


# -- probing --------------------------------------------------------------------------------------


def probe(path: Path, media_id: str) -> MediaItem:
    """Describe the file `path` as media `media_id`: a still (one PNG or JPEG picture) or a clip
    (a video stream whose first frame decodes, in a container that knows its duration). Reads
    the whole file once for its SHA-256. Raises MediaError for anything else."""
    check_media_id(media_id)
    if not path.is_file():
        raise MediaError(f"{path}: no such file", field="file")
    try:
        with av.open(str(path)) as container:
            fields = _describe(container, path)
    except av.error.FFmpegError as exc:
        raise MediaError(
            f"{path}: not a clip or still FFmpeg can read ({exc})", field="file"
        ) from None
    return MediaItem(
        id=media_id,
        filename=path.name,
        size=path.stat().st_size,
        sha256=file_sha256(path),
        added=datetime.now(UTC),
        **fields,
    )


def is_house(container: Any) -> bool:
    """Whether an open container is a clip in the house format."""
    return bool(container.metadata.get("comment") == HOUSE_COMMENT)


def _describe(container: Any, path: Path) -> dict[str, Any]:
    """kind, duration, picture size, rate, sound and format of an open container."""
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream", field="file")
    stream = container.streams.video[0]
    frame = next(container.decode(stream), None)
    if frame is None:
        raise MediaError(f"{path}: its video has no picture that decodes", field="file")
    fields = {"width": frame.width, "height": frame.height}
    # An image demuxer: `png_pipe`, `jpeg_pipe` (a file probed), `image2` (named by its suffix).
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        if stream.codec_context.name not in STILL_CODECS:
            raise MediaError(
                f"{path}: a still is PNG or JPEG, this is {stream.codec_context.name}",
                field="file",
            )
        return {**fields, "kind": "still", "duration_ms": 0, "fps": 0.0, "has_audio": False}
    rate = stream.average_rate or stream.guessed_rate
    if not container.duration or not rate:
        raise MediaError(
            f"{path}: cannot tell the clip's duration or frame rate (remux it into MP4 or MKV)",
            field="file",
        )
    return {
        **fields,
        "kind": "clip",
        "duration_ms": container.duration // 1000,  # AV_TIME_BASE: microseconds
        "fps": round(float(rate), 3),
        "has_audio": bool(container.streams.audio),
        "house": is_house(container),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class _Upload(io.BufferedIOBase):
    """A file as nats-py's `put` reads it (in a worker thread, chunk after chunk): before each
    read, everything read earlier has been stored, which `report` is told on the event loop."""

    def __init__(self, file: io.BufferedReader, total: int, report: Progress) -> None:
        self.file, self.total, self.report = file, total, report
        self.loop = asyncio.get_running_loop()
        self.done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.loop.call_soon_threadsafe(self.report, self.done, self.total)
        n = self.file.readinto(buffer)
        self.done += n
        return n


# -- the library ----------------------------------------------------------------------------------


class MediaLibrary:
    """The `media` object store over a bus's connection; `open` it, then add, list, remove,
    fetch. A library opened before anything was added (the bucket does not exist yet) reads as
    empty until the first `add` creates it."""

    def __init__(self, bus: Bus, timeout_s: float = JETSTREAM_TIMEOUT_S) -> None:
        self._bus = bus
        self._js = bus.nc.jetstream(timeout=timeout_s)
        self._objects: ObjectStore | None = None

    @classmethod
    async def open(
        cls, bus: Bus, create: bool, *, timeout_s: float = JETSTREAM_TIMEOUT_S
    ) -> MediaLibrary:
        """The library; `create`: make the bucket now if it does not exist (the operator's
        tool; a mixer only reads it). `timeout_s`: how long a JetStream call may go unanswered
        (a call the server refuses for want of a grant is only known to fail then)."""
        library = cls(bus, timeout_s)
        await (library._created() if create else library._store())
        return library

    async def add(
        self,
        path: Path,
        media_id: str,
        *,
        replace: bool = False,
        progress: Progress | None = None,
    ) -> MediaItem:
        """Probe `path` and store it as `media_id`, streaming it in chunks (`progress(stored,
        total)` as they go); the id must be new unless `replace`."""
        item = await asyncio.to_thread(probe, path, media_id)
        store = await self._created()
        if not replace and await self._info(store, media_id) is not None:
            raise errors.AlreadyExists(
                f"{media_id!r} is in the media library already (--replace replaces it)",
                field="id",
            )
        meta = ObjectMeta(
            name=media_id,
            description=item.description(),
            options=ObjectMetaOptions(max_chunk_size=min(CHUNK_BYTES, self._bus.nc.max_payload)),
        )
        report = progress or (lambda _stored, _total: None)
        with path.open("rb") as file:
            async with self._jetstream(f"storing {media_id!r}"):
                info = await store.put(media_id, _Upload(file, item.size, report), meta)
        report(item.size, item.size)
        if hex_digest(info) != item.sha256:
            await self.remove(media_id)
            raise errors.Conflict(f"{path} changed while it was being added: add it again")
        return MediaItem.from_info(info)

    async def item(self, media_id: str) -> MediaItem:
        """The item `media_id`; MediaNotFound when the library has none."""
        _store, info = await self._object(media_id)
        return MediaItem.from_info(info)

    async def remove(self, media_id: str) -> MediaItem:
        """Remove `media_id` (MediaNotFound when absent); answer what it was. A mixer that
        fetched it keeps its copy until it restarts."""
        store, info = await self._object(media_id)
        async with self._jetstream(f"removing {media_id!r}"):
            with contextlib.suppress(nats.js.errors.ObjectNotFoundError):  # removed meanwhile
                await store.delete(media_id)
        return MediaItem.from_info(info)

    async def fetch(self, media_id: str, folder: Path) -> Path:
        """A local copy of `media_id` in `folder` (`<id>-<sha256[:12]>.<ext>`), copied unless
        the folder holds it already; written to a temporary file and renamed once its SHA-256
        is checked, so a file of that name is always whole. MediaNotFound when absent."""
        _store, info = await self._object(media_id)
        item = MediaItem.from_info(info)
        target = folder / item.cache_name()
        if target.is_file() and target.stat().st_size == item.size:
            return target
        with _whole_file(target) as out:
            if await self._copy(info, out) != item.sha256:
                raise errors.Conflict(
                    f"the copy of {media_id!r} does not match its SHA-256 (was it replaced"
                    " meanwhile?): fetch it again"
                )
        return target

    async def list(self) -> list[MediaItem]:
        """Every item, by id."""
        store = await self._store()
        if store is None:
            return []
        async with self._jetstream("listing the media library"):
            stream = await self._js.stream_info(MEDIA_STREAM, subjects_filter=META_SUBJECTS)
        names = sorted(_meta_name(s) for s in (stream.state.subjects or {}))
        infos = [await self._info(store, name) for name in names]
        return [MediaItem.from_info(info) for info in infos if info is not None]

    # -- JetStream ------------------------------------------------------------------------------

    async def _store(self) -> ObjectStore | None:
        """The bucket, opened once; None while it does not exist."""
        if self._objects is None:
            async with self._jetstream("opening the media library"):
                with contextlib.suppress(nats.js.errors.BucketNotFoundError):
                    self._objects = await self._js.object_store(MEDIA_BUCKET)
        return self._objects

    async def _created(self) -> ObjectStore:
        """The bucket, made if it does not exist, at the bus's replica count."""
        store = await self._store()
        async with self._jetstream("creating the media library"):
            if store is None:
                config = ObjectStoreConfig(
                    description="clips and stills (baycast ctl media)",
                    storage=StorageType.FILE,
                    replicas=self._bus.replicas,
                )
                store = self._objects = await self._js.create_object_store(MEDIA_BUCKET, config)
            await self._bus.ensure_replicas(MEDIA_STREAM)
        return store

    async def _info(self, store: ObjectStore, media_id: str) -> ObjectInfo | None:
        async with self._jetstream(f"reading {media_id!r}"):
            try:
                return await store.get_info(media_id)
            except nats.js.errors.ObjectNotFoundError:
                return None

    async def _copy(self, info: ObjectInfo, out: BinaryIO) -> str:
        """Write the object's chunks to `out`; answer their SHA-256.

        Not nats-py's `ObjectStore.get`: it looks the stream up by subject
        (`$JS.API.STREAM.NAMES`, which no user is granted) and waits for a stalled copy forever.
        """
        digest = hashlib.sha256()

        def write(data: bytes) -> None:
            out.write(data)
            digest.update(data)

        chunks = CHUNKS_SUBJECT.format(bucket=MEDIA_BUCKET, nuid=info.nuid)
        async with self._jetstream(f"fetching {info.name!r}"):
            sub = await self._js.subscribe(chunks, stream=MEDIA_STREAM, ordered_consumer=True)
        try:
            pending, copied = 1, 0
            while pending:
                try:
                    msg = await sub.next_msg(timeout=FETCH_IDLE_TIMEOUT_S)
                except nats.errors.TimeoutError:
                    raise errors.Unavailable(
                        f"fetching {info.name!r} stalled after {copied} of {info.size} bytes"
                    ) from None
                await asyncio.to_thread(write, msg.data)
                copied += len(msg.data)
                pending = msg.metadata.num_pending
        finally:
            with contextlib.suppress(*TRANSIENT):
                await sub.unsubscribe()
        return digest.hexdigest()

    async def _object(self, media_id: str) -> tuple[ObjectStore, ObjectInfo]:
        """The bucket and the meta of object `media_id`; MediaNotFound when it has none."""
        store = await self._store()
        info = await self._info(store, media_id) if store is not None else None
        if store is None or info is None:
            raise MediaNotFound(f"{media_id!r} is not in the media library", field="id")
        return store, info

    @contextlib.asynccontextmanager
    async def _jetstream(self, what: str) -> AsyncIterator[None]:
        """What NATS raises, as the platform's errors naming what failed. A request the server
        refuses for want of a grant goes unanswered: the refusal arrives as the client's last
        error while the request times out."""
        before = self._bus.nc.last_error
        try:
            yield
        except nats.errors.TimeoutError:
            refusal = self._bus.nc.last_error
            if refusal is not before and "permissions violation" in str(refusal).lower():
                user = url_user(self._bus.url) or "(anonymous)"
                raise errors.PermissionDenied(
                    f"{what}: the NATS user {user} may not ({refusal})"
                ) from None
            raise errors.Unavailable(f"{what}: NATS did not answer in time") from None
        except TRANSIENT as exc:
            raise errors.Unavailable(
                f"{what}: JetStream refused it ({type(exc).__name__}): its store may be full"
                " (jetstream.maxFileStore) or electing a leader"
            ) from None
        except nats.js.errors.APIError as exc:
            raise errors.Unavailable(f"{what}: {exc.description}") from None


@contextlib.contextmanager
def _whole_file(target: Path) -> Iterator[BinaryIO]:
    """A temporary file beside `target`, renamed to it when the block ends, removed when it
    raises: a file named `target` is always whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise


def _meta_name(subject: str) -> str:
    """`$O.media.M.<base64url name>` -> the name."""
    return base64.urlsafe_b64decode(subject.rpartition(".")[2]).decode()
