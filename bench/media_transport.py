"""Benchmark 6: what a frame costs to move over Media.Subscribe, beside shared memory.

Both sides are separate processes, as between two services. The figure is CPU milliseconds (both
processes together) per MB moved; the reference is a hand-off of the same bytes through shared
memory with a pipe for flow control, measured in the same run.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np

from bench.harness import Result, Stat, free_port, process_cpu_s, self_cpu_s
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import proto_to_i420
from services.common.rpc import ChannelCache

SIZES = {"1080p": (1920, 1080, 150), "tile 384x216": (384, 216, 1500)}


async def _grpc_once(
    port: int, server_pid: int, width: int, height: int, count: int
) -> tuple[float, float]:
    channels = ChannelCache()
    try:
        stub = channels.media(f"127.0.0.1:{port}")
        request = media_pb2.SubscribeRequest(
            handle="bench",
            rendition=media_pb2.Rendition(width=width, height=height),
            subscriber=str(count),
        )
        server_cpu, client_cpu, start = process_cpu_s(server_pid), self_cpu_s(), time.perf_counter()
        moved = 0
        async for frame in stub.Subscribe(request):
            image = proto_to_i420(frame.video)  # what a consumer does with it
            moved += image.nbytes
        wall = time.perf_counter() - start
        cpu = (self_cpu_s() - client_cpu) + (process_cpu_s(server_pid) - server_cpu)
        return cpu * 1000 / (moved / 1e6), moved / 1e6 / wall
    finally:
        await channels.close()


def _shm_once(width: int, height: int, count: int) -> tuple[float, float]:
    size = width * height * 3 // 2
    shm = shared_memory.SharedMemory(create=True, size=2 * size)
    try:
        peer = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.transport_peer",
                "shm",
                shm.name,
                str(width),
                str(height),
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert peer.stdout is not None and peer.stdin is not None
        assert peer.stdout.readline().strip() == "ready"
        slots = np.ndarray((2, size), dtype=np.uint8, buffer=shm.buf)
        out = np.empty(size, dtype=np.uint8)
        server_cpu, client_cpu, start = process_cpu_s(peer.pid), self_cpu_s(), time.perf_counter()
        for _ in range(count):
            seq = int(peer.stdout.readline())
            np.copyto(out, slots[seq % 2])  # the consumer takes its own copy
            peer.stdin.write("\n")
            peer.stdin.flush()
        wall = time.perf_counter() - start
        cpu = (self_cpu_s() - client_cpu) + (process_cpu_s(peer.pid) - server_cpu)
        peer.wait(timeout=10)
        moved = size * count / 1e6
        return cpu * 1000 / moved, moved / wall
    finally:
        shm.close()
        shm.unlink()


def run(runs: int) -> list[Result]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.transport_peer", "grpc", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    results = []
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        for label, (w, h, count) in SIZES.items():
            grpc_runs = [
                asyncio.run(_grpc_once(port, server.pid, w, h, count)) for _ in range(runs)
            ]
            shm_runs = [_shm_once(w, h, count) for _ in range(runs)]
            g_cpu = Stat.of([c for c, _ in grpc_runs])
            g_rate = Stat.of([r for _, r in grpc_runs])
            s_cpu = Stat.of([c for c, _ in shm_runs])
            results.append(
                Result(
                    name=f"Media transport, {label} I420",
                    target="measure (design: ~1.5 CPU-ms/MB by gRPC, ~10x less by shared memory)",
                    measured=f"gRPC {g_cpu.fmt(' CPU-ms/MB')}; {g_rate.fmt(' MB/s', 0)}",
                    reference=f"shared memory {s_cpu.fmt(' CPU-ms/MB')}",
                    ratio=f"{g_cpu.median / s_cpu.median:.1f}x the CPU of shared memory",
                    met=None,
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return results
