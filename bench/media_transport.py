"""Benchmark 6: what a frame costs to move over Media.Subscribe, beside shared memory, and the
1080p program between hosts compressed (ADR 0025) beside raw.

Both sides are separate processes, as between two services. The figure is CPU milliseconds (both
processes together) per MB moved; the reference is a hand-off of the same bytes through shared
memory with a pipe for flow control, measured in the same run.

The link: 8 s of Debian ffmpeg's moving `testsrc2` pattern with film grain at 1080p25 (grain is
the hardest a link carries), each picture through the mixer's `LinkEncoder` at its default rate
and back through the consumer's `LinkDecoder` into the client's message. Figures: its Mbit/s, and
the CPU of the encode and the decode per second of program; the reference is the same pictures
raw over gRPC, at the CPU-ms/MB measured above in the same run.
"""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

import av
import numpy as np

from bench.harness import Result, Stat, free_port, process_cpu_s, self_cpu_s
from services.common.gen.baycast.v1 import media_pb2
from services.common.media import decoded, proto_to_i420
from services.common.rpc import ChannelCache
from services.common.video_link import LinkDecoder, LinkEncoder, link_kbps

SIZES = {"1080p": (1920, 1080, 150), "tile 384x216": (384, 216, 1500)}
LINK_W, LINK_H, LINK_FPS, LINK_SECONDS = 1920, 1080, 25, 8
LINK_TARGET_MBPS = 10.0


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


def _grain(path: Path) -> np.ndarray:
    """LINK_SECONDS of 1080p25 moving pattern with grain, as packed I420 pictures on disk."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size={LINK_W}x{LINK_H}:rate={LINK_FPS},noise=alls=12:allf=t",
         "-frames:v", str(LINK_SECONDS * LINK_FPS), "-pix_fmt", "yuv420p", "-f", "rawvideo",
         str(path)],
        check=True,
    )  # fmt: skip
    return np.memmap(path, dtype=np.uint8, mode="r").reshape(-1, LINK_H * 3 // 2, LINK_W)


def _link_once(pictures: np.ndarray) -> tuple[float, float, float]:
    """(Mbit/s, encode cores, decode cores) of the pictures through the link, a second of
    program at a time as the encoder keeps up (each picture waits for its packet)."""
    for picture in pictures:  # into the page cache, so the encode does not pay for the disk
        picture.sum(dtype=np.uint64)
    kbps = link_kbps(media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264), LINK_W, LINK_H)
    packets: queue.Queue[media_pb2.VideoPacket] = queue.Queue()
    encoder = LinkEncoder(LINK_W, LINK_H, LINK_FPS, kbps, packets.put, name="bench")
    sent = []
    start = self_cpu_s()
    for n, picture in enumerate(pictures):
        encoder.submit(
            av.VideoFrame.from_ndarray(picture, format="yuv420p"), n * 1_000_000 // LINK_FPS, 0
        )
        packet = packets.get(timeout=10)
        packet.sequence = n
        sent.append(packet)
    encode = self_cpu_s() - start
    encoder.close()
    encoder.join(10)
    decoder, start = LinkDecoder(), self_cpu_s()
    made = sum(len(decoded(decoder, packet)) for packet in sent)
    decode = self_cpu_s() - start
    assert made == len(pictures), (made, len(pictures))
    seconds = len(pictures) / LINK_FPS
    mbps = sum(len(p.data) for p in sent) * 8 / seconds / 1e6
    return mbps, encode / seconds, decode / seconds


def _link_results(runs: int, raw_cpu_ms_per_mb: Stat) -> Result:
    with tempfile.TemporaryDirectory() as folder:
        pictures = _grain(Path(folder) / "grain.yuv")
        measured = [_link_once(pictures) for _ in range(runs)]
        del pictures
    mbps = Stat.of([m for m, _e, _d in measured])
    cores = Stat.of([e + d for _m, e, d in measured])
    encode = Stat.of([e for _m, e, _d in measured])
    decode = Stat.of([d for _m, _e, d in measured])
    raw_mb_s = LINK_W * LINK_H * 3 / 2 * LINK_FPS / 1e6
    raw_cores = raw_cpu_ms_per_mb.median * raw_mb_s / 1000
    return Result(
        name="Program between hosts, 1080p25 H.264 link (mixer encodes, consumer decodes)",
        target=f"≤ {LINK_TARGET_MBPS:g} Mbit/s",
        measured=(
            f"{mbps.fmt(' Mbit/s')}; {cores.fmt(' core')}: encode {encode.median:.3f}, "
            f"decode {decode.median:.3f}"
        ),
        reference=(
            f"raw I420 over gRPC: {raw_mb_s * 8:.0f} Mbit/s, {raw_cores:.3f} core "
            f"({raw_cpu_ms_per_mb.median:.2f} CPU-ms/MB above)"
        ),
        ratio=(
            f"{raw_mb_s * 8 / mbps.median:.0f}x fewer bytes for "
            f"{cores.median / raw_cores:.1f}x the CPU"
        ),
        met=mbps.high <= LINK_TARGET_MBPS,
        notes=[
            f"{LINK_SECONDS} s of Debian ffmpeg's moving testsrc2 pattern with film grain at "
            "1080p25, the hardest picture a link carries, each picture through the mixer's "
            "LinkEncoder (libx264 ultrafast, zerolatency, no B-frames, keyframes every second, "
            "a half-second rate buffer) and back through the consumer's LinkDecoder (one "
            "thread). CPU per second of program, this process. A studio picture costs the "
            "encoder less. Between pods this replaces raw's serialisation and parsing "
            "(ADR 0025); on one host the ring serves the program and nothing is encoded."
        ],
    )


def run(runs: int) -> list[Result]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.transport_peer", "grpc", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    results = []
    raw_1080p: Stat | None = None
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
            if (w, h) == (LINK_W, LINK_H):
                raw_1080p = g_cpu
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
    assert raw_1080p is not None
    results.append(_link_results(runs, raw_1080p))
    return results
