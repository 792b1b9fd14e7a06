"""`Media.Subscribe` for `source/<id>` handles: frames of a live source at the rendition asked."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from services.common import shared_memory
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.media import queue_stream
from services.common.renditions import rendition_problem
from services.ingest import metrics
from services.ingest.sources import SourceRegistry


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
