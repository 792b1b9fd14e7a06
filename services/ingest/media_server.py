"""`Media.Subscribe` for `source/<id>` handles: frames of a live source at the rendition asked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.common import shared_memory
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.media import queue_stream
from services.ingest import metrics
from services.ingest.sources import SourceRegistry

MAX_WIDTH, MAX_HEIGHT = 3840, 2160


def rendition_problem(r: media_pb2.Rendition) -> str:
    """Why a rendition cannot be served, or '' if it can."""
    if bool(r.width) != bool(r.height):
        return "width and height are given together or not at all"
    if r.width % 2 or r.height % 2 or r.width > MAX_WIDTH or r.height > MAX_HEIGHT:
        return f"width and height must be even and at most {MAX_WIDTH}x{MAX_HEIGHT}"
    if r.pixel_format not in media_pb2.PixelFormat.values():
        return "unknown pixel format"
    if r.audio_channels not in (0, 1, 2):
        return "audio_channels must be 1 or 2"
    if r.audio_sample_rate and not 8000 <= r.audio_sample_rate <= 96000:
        return "audio_sample_rate must be between 8000 and 96000"
    if r.no_video and r.no_audio:
        return "no_video and no_audio leave nothing to send"
    return ""


class SourceMedia(media_pb2_grpc.MediaServicer):
    def __init__(self, sources: SourceRegistry) -> None:
        self.sources = sources

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        kind, _, source_id = request.handle.partition("/")
        hub = self.sources.hub(source_id) if kind == "source" else None
        if hub is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no live handle {request.handle!r}")
            return
        problem = rendition_problem(request.rendition)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            return
        sub = hub.subscribe(
            request.rendition,
            request.subscriber,
            shared=shared_memory.accepts(request),
            pull=request.pull,
        )
        gauge = metrics.SUBSCRIBERS.labels(source_id)
        gauge.inc()
        try:
            async for frame in queue_stream(sub.queue):
                yield frame
        finally:
            gauge.dec()
            hub.unsubscribe(sub)
