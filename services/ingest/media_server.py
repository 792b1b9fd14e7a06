"""`Media.Subscribe` for `source/<id>` handles: frames of a live source at the rendition asked."""

from __future__ import annotations

from services.common import errors, shared_memory
from services.common.gen.baycast.v1 import media_pb2
from services.common.media_service import Feed
from services.common.renditions import rendition_problem
from services.common.video_link import compression_problem
from services.ingest import metrics
from services.ingest.sources import SourceRegistry


class SourceFeeds:
    def __init__(self, sources: SourceRegistry) -> None:
        self.sources = sources

    async def open(self, request: media_pb2.SubscribeRequest) -> Feed:
        kind, _, source_id = request.handle.partition("/")
        hub = self.sources.hub(source_id) if kind == "source" else None
        if hub is None:
            raise errors.NotFound(f"no live handle {request.handle!r}")
        compression = request.compression if request.HasField("compression") else None
        problem = rendition_problem(request.rendition)
        if not problem and compression is not None:
            problem = compression_problem(compression)
        if problem:
            raise errors.InvalidArgument(problem)
        sub = hub.fanout.add(
            request.rendition,
            request.subscriber,
            shared=shared_memory.accepts(request),
            pull=request.pull,
            pull_sound=request.pull_sound,
            compression=compression,
        )
        gauge = metrics.SUBSCRIBERS.labels(source_id)
        gauge.inc()

        def close() -> None:
            gauge.dec()
            hub.fanout.remove(sub)

        return Feed(sub.queue, close)
