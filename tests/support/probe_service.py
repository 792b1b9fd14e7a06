"""A minimal service on the shared skeleton, for testing the glue itself (not a product service).

It stores commands in a key-value bucket and serves a synthetic picture on the media plane whose
pixels are a function of the frame's sequence number, so a receiver can check every byte.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from prometheus_client import Counter

from services.common import errors
from services.common.bus import KvBucket, subject
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.common.lifecycle import BaseService, run
from services.common.media import DropOldestQueue, i420_message
from services.common.media_service import SENT_BYTES_HELP, Feed, MediaService
from services.common.settings import ServiceSettings, load_settings
from services.common.telemetry import configure_logging

PATTERN_HANDLE = "probe/pattern"
PATTERN_FRAMES = 1_000_000
QUEUE_FRAMES = 32


def pattern_luma(sequence: int) -> int:
    return 16 + (sequence * 7) % 220


def pattern_frame(width: int, height: int, sequence: int) -> np.ndarray:
    """Y is a horizontal ramp offset by the sequence; U and V are fixed."""
    image = np.empty((height * 3 // 2, width), dtype=np.uint8)
    ramp = (np.arange(width, dtype=np.uint32) + pattern_luma(sequence)) % 256
    image[:height] = ramp.astype(np.uint8)
    image[height:] = 0
    flat = image.reshape(-1)
    c = (width // 2) * (height // 2)
    flat[width * height : width * height + c] = 90
    flat[width * height + c :] = 200
    return image


@dataclass(frozen=True)
class ProbeSettings(ServiceSettings):
    frame_interval_s: float = 0.0


SENT_BYTES = Counter("baycast_probe_media_sent_bytes_total", SENT_BYTES_HELP, ["handle", "kind"])


class ProbeMedia:
    """The pattern as a feed of the one Media.Subscribe servicer, a frame every interval."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings

    async def open(self, request: media_pb2.SubscribeRequest) -> Feed:
        if request.handle != PATTERN_HANDLE:
            raise errors.NotFound(f"no handle {request.handle!r}")
        width = request.rendition.width or 1920
        height = request.rendition.height or 1080
        queue: DropOldestQueue[media_pb2.MediaFrame] = DropOldestQueue(QUEUE_FRAMES)

        async def produce() -> None:
            for seq in range(PATTERN_FRAMES):
                if queue.closed:
                    return
                image = pattern_frame(width, height, seq)
                queue.put(i420_message(image, pts_us=seq * 40_000, sequence=seq))
                await asyncio.sleep(self.settings.frame_interval_s)

        task = asyncio.create_task(produce())
        return Feed(queue, task.cancel)


class ProbeService(BaseService[ProbeSettings]):
    name = "probe"

    async def setup(self) -> None:
        self.records: KvBucket[control_pb2.SourceState] = await self.bus.kv(
            "probe", control_pb2.SourceState
        )
        await self.bus.serve(
            subject("probe", self.settings.instance, "put"), control_pb2.SourceState, self.put
        )
        self.grpc.add_media(MediaService(ProbeMedia(self.settings).open, SENT_BYTES))

    async def put(self, record: control_pb2.SourceState) -> control_pb2.SourceState:
        if not record.source:
            raise errors.InvalidArgument("source is required", field="source")
        await self.records.put(record.source, record)
        return record


if __name__ == "__main__":
    configure_logging("json", "info")
    run(ProbeService(load_settings(ProbeSettings, "probe")))
