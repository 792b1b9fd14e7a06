"""Frames between PyAV, numpy and the media plane's protobuf messages, and the fan-out queue.

Video travels as I420 planes (or RGBA for graphics layers). The conversions keep copies to the
one the wire needs: numpy views into received bytes, PyAV planes read through the buffer protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from fractions import Fraction
from typing import Generic, TypeVar

import av
import grpc
import numpy as np
import structlog
from av.video.reformatter import VideoReformatter

from services.common import shared_memory
from services.common.gen.baycast.v1 import media_pb2
from services.common.rpc import ChannelCache
from services.common.shared_memory import READER, RingHolder
from services.common.video_link import LinkDecoder

T = TypeVar("T")
I420 = media_pb2.PIXEL_FORMAT_I420
RGBA = media_pb2.PIXEL_FORMAT_RGBA

log = structlog.get_logger("media")


def now_us() -> int:
    return time.time_ns() // 1000


def pts_us(pts: int, time_base: Fraction) -> int:
    """`pts` in microseconds, truncated as `int(pts * time_base * 1_000_000)` would, in integer
    arithmetic (Fraction arithmetic costs microseconds a frame, on every frame of every source)."""
    scaled = pts * time_base.numerator * 1_000_000
    if scaled >= 0:
        return scaled // time_base.denominator
    return -(-scaled // time_base.denominator)


# -- video ---------------------------------------------------------------------------------------


# Planes are added where they live (`planes.add`): building Plane messages first, or wrapping a
# finished VideoFrame in a MediaFrame, deep-copies every plane (~4.6 ms for a 1080p frame).


class Scaler:
    """Scales and converts the frames of one stream through one swscale context.

    `frame.reformat()` gives every frame a context of its own, and with PyAV's default of
    automatic threads each context also starts a pool of scaling threads that the frame's
    deallocation joins while holding the GIL: on the twelve-contribution demo that took a fifth
    of ingest's event loop. A Scaler keeps its context from frame to frame (swscale rebuilds it
    only when a size or format changes) and scales in the calling thread. One thread at a time.
    """

    def __init__(self, interpolation: str = "BILINEAR") -> None:
        self.interpolation = interpolation
        self._reformatter = VideoReformatter()

    def __call__(
        self, frame: av.VideoFrame, width: int, height: int, format: str | None = None
    ) -> av.VideoFrame:
        """`frame` at `width`x`height` in `format` (its own if None); itself if it already is."""
        return self._reformatter.reformat(
            frame,
            width=width,
            height=height,
            format=format,
            interpolation=self.interpolation,
            threads=1,
        )


def i420_message(
    image: np.ndarray, *, pts_us: int, capture_time_us: int = 0, sequence: int = 0
) -> media_pb2.MediaFrame:
    """A packed I420 image (shape (h*3/2, w), uint8) as a MediaFrame, built in place."""
    message = media_pb2.MediaFrame()
    video = message.video
    height = image.shape[0] * 2 // 3
    width = image.shape[1]
    video.width, video.height, video.pixel_format = width, height, I420
    video.pts_us, video.capture_time_us, video.sequence = pts_us, capture_time_us, sequence
    y_size = width * height
    c = (width // 2) * (height // 2)
    flat = image.reshape(-1)
    video.planes.add(data=flat[:y_size].tobytes(), stride=width)
    video.planes.add(data=flat[y_size : y_size + c].tobytes(), stride=width // 2)
    video.planes.add(data=flat[y_size + c : y_size + 2 * c].tobytes(), stride=width // 2)
    return message


def i420_to_proto(
    image: np.ndarray, *, pts_us: int, capture_time_us: int = 0, sequence: int = 0
) -> media_pb2.VideoFrame:
    """A packed I420 image as a VideoFrame (prefer `i420_message` to send it)."""
    message = i420_message(image, pts_us=pts_us, capture_time_us=capture_time_us, sequence=sequence)
    return message.video


def av_video_message(
    frame: av.VideoFrame, *, pts_us: int, capture_time_us: int = 0, sequence: int = 0
) -> media_pb2.MediaFrame:
    """A PyAV yuv420p, rgba or rgb24 frame as a MediaFrame (planes keep PyAV's row padding)."""
    fmt = {"yuv420p": I420, "rgba": RGBA, "rgb24": media_pb2.PIXEL_FORMAT_RGB24}[frame.format.name]
    message = media_pb2.MediaFrame()
    video = message.video
    video.width, video.height, video.pixel_format = frame.width, frame.height, fmt
    video.pts_us, video.capture_time_us, video.sequence = pts_us, capture_time_us, sequence
    for plane in frame.planes:
        video.planes.add(data=bytes(plane), stride=plane.line_size)
    return message


def av_to_proto(
    frame: av.VideoFrame, *, pts_us: int, capture_time_us: int = 0, sequence: int = 0
) -> media_pb2.VideoFrame:
    """A PyAV frame as a VideoFrame (prefer `av_video_message` to send it)."""
    message = av_video_message(
        frame, pts_us=pts_us, capture_time_us=capture_time_us, sequence=sequence
    )
    return message.video


def shared_video_message(
    holder: RingHolder,
    planes: list[tuple[np.ndarray, int]],
    *,
    width: int,
    height: int,
    pixel_format: media_pb2.PixelFormat.ValueType,
    pts_us: int,
    capture_time_us: int = 0,
    sequence: int = 0,
) -> media_pb2.MediaFrame:
    """A frame whose planes (flat uint8 arrays with their strides) go into a shared ring slot."""
    message = media_pb2.MediaFrame()
    video = message.video
    video.width, video.height, video.pixel_format = width, height, pixel_format
    video.pts_us, video.capture_time_us, video.sequence = pts_us, capture_time_us, sequence
    for _data, stride in planes:
        video.planes.add(stride=stride)
    holder.write([data for data, _stride in planes], video)
    return message


def av_planes(frame: av.VideoFrame) -> list[tuple[np.ndarray, int]]:
    """A PyAV frame's planes as flat uint8 views with their strides (row padding kept)."""
    return [(np.frombuffer(memoryview(p), dtype=np.uint8), p.line_size) for p in frame.planes]


def i420_planes_flat(image: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """A packed (h*3/2, w) I420 image's planes as flat views with their strides."""
    width = image.shape[1]
    strides = (width, width // 2, width // 2)
    return [(p.reshape(-1), s) for p, s in zip(i420_planes(image), strides, strict=True)]


def i420_shared_message(
    holder: RingHolder,
    image: np.ndarray,
    *,
    pts_us: int,
    capture_time_us: int = 0,
    sequence: int = 0,
) -> media_pb2.MediaFrame:
    """A packed I420 image (shape (h*3/2, w)) written into the next slot of `holder`'s ring; the
    message that refers to the slot."""
    return shared_video_message(
        holder,
        i420_planes_flat(image),
        width=image.shape[1],
        height=image.shape[0] * 2 // 3,
        pixel_format=I420,
        pts_us=pts_us,
        capture_time_us=capture_time_us,
        sequence=sequence,
    )


def video_planes(frame: media_pb2.VideoFrame) -> list[np.ndarray]:
    """A VideoFrame's planes as flat uint8 arrays, inline or from shared memory.

    Raises `FrameGone` when the frame's shared slot was reused before it was read (the frame is
    lost, as if dropped), ValueError when the frame is malformed.
    """
    if frame.HasField("shared"):
        if len(frame.shared.lengths) != len(frame.planes):
            raise ValueError("shared frame: one length per plane")
        return READER.read(frame.shared)
    return [np.frombuffer(p.data, dtype=np.uint8) for p in frame.planes]


def inline_video(frame: media_pb2.VideoFrame) -> media_pb2.VideoFrame:
    """`frame` with its planes' bytes inline: for a consumer that keeps frames for later.

    A shared frame must be read before its producer reuses the slot (a few frames later); this
    reads it now (FrameGone if that is already too late).
    """
    if not frame.HasField("shared"):
        return frame
    out = media_pb2.VideoFrame()
    out.CopyFrom(frame)
    out.ClearField("shared")
    for plane, data in zip(out.planes, video_planes(frame), strict=True):
        plane.data = data.tobytes()
    return out


def plane_rows(data: np.ndarray, stride: int, width: int, height: int) -> np.ndarray:
    """Rows of a flat plane as a (height, width) view; ValueError when it is too short."""
    if stride < width or data.size < stride * height:
        raise ValueError(f"a plane of {data.size} bytes cannot hold {height} rows of {stride}")
    return data[: stride * height].reshape(height, stride)[:, :width]


def _packed_shared(frame: media_pb2.VideoFrame) -> bool:
    """Whether the frame's I420 planes lie packed, one after the other, in a shared slot."""
    w, h = frame.width, frame.height
    c = (w // 2) * (h // 2)
    return (
        frame.HasField("shared")
        and [p.stride for p in frame.planes] == [w, w // 2, w // 2]
        and list(frame.shared.lengths) == [w * h, c, c]
    )


def proto_to_i420(frame: media_pb2.VideoFrame) -> np.ndarray:
    """A VideoFrame's I420 planes as one packed (h*3/2, w) array."""
    w, h = frame.width, frame.height
    strides = [p.stride for p in frame.planes]
    c = (w // 2) * (h // 2)
    if _packed_shared(frame):
        return READER.read_all(frame.shared).reshape(h * 3 // 2, w)  # one copy, already packed
    y, u, v = video_planes(frame)
    if strides == [w, w // 2, w // 2] and y.size >= w * h and u.size >= c and v.size >= c:
        return np.concatenate((y[: w * h], u[:c], v[:c])).reshape(h * 3 // 2, w)
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    out[:h] = plane_rows(y, strides[0], w, h)
    flat = out.reshape(-1)
    flat[w * h : w * h + c] = plane_rows(u, strides[1], w // 2, h // 2).reshape(-1)
    flat[w * h + c :] = plane_rows(v, strides[2], w // 2, h // 2).reshape(-1)
    return out


def plane_view(plane: av.video.plane.VideoPlane, rows: int, columns: int) -> np.ndarray:
    """A frame's plane as a (rows, columns) view of its own memory, past the padding at the end
    of its lines (writable: filling it fills the frame)."""
    line = plane.line_size
    return np.frombuffer(memoryview(plane), np.uint8, count=rows * line).reshape(rows, line)[
        :, :columns
    ]


def i420_views(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of a yuv420p frame as views of its memory (see `plane_view`)."""
    w, h = frame.width, frame.height
    y, u, v = frame.planes
    return plane_view(y, h, w), plane_view(u, h // 2, w // 2), plane_view(v, h // 2, w // 2)


def copy_i420(frame: av.VideoFrame) -> av.VideoFrame:
    """A yuv420p frame's copy with memory of its own (for a frame over a buffer that is reused)."""
    out = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for dst, src in zip(i420_views(out), i420_views(frame), strict=True):
        dst[...] = src
    return out


def proto_to_av_i420(frame: media_pb2.VideoFrame) -> av.VideoFrame:
    """A VideoFrame's I420 picture as an av.VideoFrame for an encoder, its planes copied straight
    into the frame's (one copy; a shared slot of padded planes is read out first). ValueError
    (FrameGone) as `proto_to_i420`."""
    out = av.VideoFrame(frame.width, frame.height, "yuv420p")
    if _packed_shared(frame):
        READER.copy_into(frame.shared, i420_views(out))
        return out
    w, h = frame.width, frame.height
    sizes = ((w, h), (w // 2, h // 2), (w // 2, h // 2))
    planes = zip(i420_views(out), video_planes(frame), frame.planes, sizes, strict=True)
    for view, data, plane, (columns, rows) in planes:
        view[...] = plane_rows(data, plane.stride, columns, rows)
    return out


def proto_to_av(frame: media_pb2.VideoFrame) -> av.VideoFrame:
    if frame.pixel_format == RGBA:
        rgba = plane_rows(
            video_planes(frame)[0], frame.planes[0].stride, frame.width * 4, frame.height
        ).reshape(frame.height, frame.width, 4)
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba), format="rgba")
    return proto_to_av_i420(frame)


def i420_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V views of a packed (h*3/2, w) I420 image."""
    height = image.shape[0] * 2 // 3
    width = image.shape[1]
    flat = image.reshape(-1)
    c = (width // 2) * (height // 2)
    y = flat[: width * height].reshape(height, width)
    u = flat[width * height : width * height + c].reshape(height // 2, width // 2)
    v = flat[width * height + c :].reshape(height // 2, width // 2)
    return y, u, v


# -- audio ---------------------------------------------------------------------------------------


def pcm_message(
    samples: np.ndarray,
    sample_rate: int,
    *,
    pts_us: int,
    capture_time_us: int = 0,
    sequence: int = 0,
) -> media_pb2.MediaFrame:
    """Interleaved int16 samples of shape (n, channels) as a MediaFrame, built in place."""
    if samples.ndim == 1:
        samples = samples[:, None]
    message = media_pb2.MediaFrame()
    audio = message.audio
    audio.pcm = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    audio.sample_rate, audio.channels, audio.samples = (
        sample_rate,
        samples.shape[1],
        samples.shape[0],
    )
    audio.pts_us, audio.capture_time_us, audio.sequence = pts_us, capture_time_us, sequence
    return message


def pcm_to_proto(
    samples: np.ndarray,
    sample_rate: int,
    *,
    pts_us: int,
    capture_time_us: int = 0,
    sequence: int = 0,
) -> media_pb2.AudioFrame:
    """Interleaved int16 samples of shape (n, channels) as an AudioFrame."""
    if samples.ndim == 1:
        samples = samples[:, None]
    return media_pb2.AudioFrame(
        pcm=np.ascontiguousarray(samples, dtype="<i2").tobytes(),
        sample_rate=sample_rate,
        channels=samples.shape[1],
        samples=samples.shape[0],
        pts_us=pts_us,
        capture_time_us=capture_time_us,
        sequence=sequence,
    )


def proto_to_pcm(frame: media_pb2.AudioFrame) -> np.ndarray:
    """An AudioFrame's samples as an int16 array of shape (samples, channels)."""
    return np.frombuffer(frame.pcm, dtype="<i2").reshape(-1, max(frame.channels, 1))


def proto_to_av_audio(frame: media_pb2.AudioFrame) -> av.AudioFrame:
    layout = "stereo" if frame.channels == 2 else "mono"
    pcm = proto_to_pcm(frame).reshape(1, -1)
    out = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
    out.sample_rate = frame.sample_rate
    return out


# -- fan-out -------------------------------------------------------------------------------------


class DropOldestQueue(Generic[T]):
    """A bounded queue for one subscriber: when full, the oldest item goes and is counted.

    The producer never waits on a slow consumer, and memory never grows past `maxsize` items.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._event = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def put(self, item: T) -> None:
        if self.closed:
            return
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._event.set()

    def close(self) -> None:
        self.closed = True
        self._event.set()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, timeout: float | None = None) -> T | None:
        """The next item; None on timeout or when closed and empty."""
        while not self._items:
            if self.closed:
                return None
            self._event.clear()
            if timeout is None:  # a hot path: every frame of every subscriber waits here
                await self._event.wait()
                continue
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return None
        return self._items.popleft()


KEEPALIVE_INTERVAL_S = 1.0


async def queue_stream(
    queue: DropOldestQueue[media_pb2.MediaFrame], keepalive_s: float = KEEPALIVE_INTERVAL_S
) -> AsyncIterator[media_pb2.MediaFrame]:
    """A subscriber's queue as a Subscribe response stream, ending when the queue is closed.

    When nothing comes for `keepalive_s`, a Keepalive (with the subscriber's drop count) tells
    the consumer the stream is quiet, not dead.
    """
    while True:
        message = await queue.get(timeout=keepalive_s)
        if message is None:
            if queue.closed:
                return
            message = media_pb2.MediaFrame(
                keepalive=media_pb2.Keepalive(time_us=now_us(), dropped=queue.dropped)
            )
        yield message


async def subscribe(
    channels: ChannelCache,
    locate: Callable[[], Awaitable[str | None]],
    handle: str,
    rendition: media_pb2.Rendition,
    *,
    subscriber: str = "",
    retry_interval: float = 0.5,
    pull: bool = False,
    pull_sound: bool = False,
    compression: media_pb2.Compression | None = None,
) -> AsyncIterator[media_pb2.MediaFrame]:
    """Frames of `handle`, resubscribing forever when the stream breaks.

    `locate` returns the endpoint serving the handle (None: not served now) and is asked again
    before every attempt. The consumer decides what a gap means (hold, slate, fall back); this
    only keeps trying. With `pull`, a producer on this host sends the video's ring (`ring`
    messages) instead of its frames, and the consumer reads the ring at its own clock
    (`PulledVideo`); a producer elsewhere sends frames as usual. With `pull_sound`, likewise the
    sound: a `sound_ring` message, then the consumer reads the chunks (`PulledSound`, ADR 0029).
    With `compression`, a producer on another host sends the video compressed (ADR 0025); it is
    decoded here, in a worker thread, and comes out as inline VideoFrames like any other.
    """
    request = media_pb2.SubscribeRequest(
        handle=handle,
        rendition=rendition,
        subscriber=subscriber,
        shared_memory_host=shared_memory.host_id(),
    )
    request.pull = pull and bool(request.shared_memory_host)
    request.pull_sound = pull_sound and bool(request.shared_memory_host)
    if compression is not None:
        request.compression.CopyFrom(compression)
    decoder = LinkDecoder()
    while True:
        endpoint = await locate()
        if endpoint is None:
            await asyncio.sleep(retry_interval)
            continue
        decoder.reset()
        try:
            call = channels.media(endpoint).Subscribe(request)
            async for frame in call:
                if frame.WhichOneof("body") == "packet":
                    for picture in await asyncio.to_thread(decoded, decoder, frame.packet):
                        yield picture
                    continue
                segment = _segment(frame) if request.shared_memory_host else ""
                if segment:
                    try:
                        READER.open(segment)
                    except FileNotFoundError:
                        pass  # the rendition ended under us: this frame is gone, not the path
                    except OSError as exc:
                        # Same host but not readable (another user, a private /dev/shm): inline.
                        log.warning("shared_memory_unreadable", handle=handle, error=str(exc))
                        request.shared_memory_host = ""
                        request.pull = request.pull_sound = False
                        call.cancel()
                        break
                yield frame
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                log.debug("handle_not_found", handle=handle, endpoint=endpoint)
            elif exc.code() != grpc.StatusCode.UNAVAILABLE:
                log.warning(
                    "subscribe_failed", handle=handle, code=exc.code().name, detail=exc.details()
                )
        await asyncio.sleep(retry_interval)


def decoded(decoder: LinkDecoder, packet: media_pb2.VideoPacket) -> list[media_pb2.MediaFrame]:
    """The pictures a compressed packet completes, as inline I420 frames with its timestamps."""
    return [
        av_video_message(
            picture,
            pts_us=packet.pts_us,
            capture_time_us=packet.capture_time_us,
            sequence=packet.sequence,
        )
        for picture in decoder.decode(packet)
    ]


def _segment(frame: media_pb2.MediaFrame) -> str:
    """The shared-memory segment a message refers to, if any."""
    body = frame.WhichOneof("body")
    if body == "ring":
        return frame.ring.segment
    if body == "sound_ring":
        return frame.sound_ring.segment
    if body == "video" and frame.video.HasField("shared"):
        return frame.video.shared.segment
    return ""


def ring_notice(told: str, frame: media_pb2.MediaFrame) -> media_pb2.MediaFrame | None:
    """What a pulling subscriber that was last told ring `told` gets for the shared `frame`: a
    VideoRing message when the frame lies in another ring, else nothing (it reads the frame
    from the ring at its own clock)."""
    segment = frame.video.shared.segment
    if segment == told:
        return None
    return media_pb2.MediaFrame(ring=media_pb2.VideoRing(segment=segment))


class PulledVideo:
    """A pulling subscriber's view of a rendition's ring: the newest frame at each look.

    `ring` messages of the subscription set the segment (`follow`); `take()` at the consumer's
    own tick returns the frame written since the last look, if any, as a shared VideoFrame to
    read like any other (FrameGone when its slot went before it was read)."""

    def __init__(self) -> None:
        self.segment = ""
        self.stamp = 0

    def follow(self, segment: str) -> None:
        if segment != self.segment:
            self.segment, self.stamp = segment, 0

    def take(self) -> media_pb2.VideoFrame | None:
        if not self.segment:
            return None
        frame = READER.newest(self.segment, self.stamp)
        if frame is not None:
            self.stamp = frame.shared.stamp
        return frame
