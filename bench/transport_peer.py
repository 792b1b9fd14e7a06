"""The producing side of the media-transport benchmark, run as its own process.

    python -m bench.transport_peer grpc PORT           serve Media.Subscribe as fast as asked
    python -m bench.transport_peer shm NAME W H COUNT  write COUNT frames into shared memory

The frames are I420 images built once; each send goes through what a real producer does
(`i420_message`, serialisation) or, for shared memory, one copy into the shared buffer.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from multiprocessing import resource_tracker, shared_memory

import grpc
import numpy as np

from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.media import i420_message
from services.common.rpc import SERVER_OPTIONS

FRAMES_PER_REQUEST = 200


class Producer(media_pb2_grpc.MediaServicer):
    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        w, h = request.rendition.width, request.rendition.height
        image = np.random.default_rng(0).integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)
        count = int(request.subscriber or FRAMES_PER_REQUEST)
        for seq in range(count):
            yield i420_message(image, pts_us=seq * 40_000, sequence=seq)


async def serve(port: int) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    media_pb2_grpc.add_MediaServicer_to_server(Producer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def shm_produce(name: str, width: int, height: int, count: int) -> None:
    """Write frames into slot 0/1 of a shared buffer; the consumer acks each over stdin."""
    size = width * height * 3 // 2
    shm = shared_memory.SharedMemory(name=name)
    # Python 3.11 would unlink the creator's segment when this process exits: it is not ours.
    resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
    try:
        slots = np.ndarray((2, size), dtype=np.uint8, buffer=shm.buf)
        image = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
        print("ready", flush=True)
        for seq in range(count):
            slots[seq % 2] = image
            print(seq, flush=True)
            sys.stdin.readline()
    finally:
        shm.close()


if __name__ == "__main__":
    if sys.argv[1] == "grpc":
        asyncio.run(serve(int(sys.argv[2])))
    else:
        shm_produce(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
