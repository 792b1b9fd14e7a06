"""A receiver reading at half the bitrate: its queue stays bounded and drops to keyframes; the
encoder and the other outputs keep full rate."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from tests.integration.distribution.conftest import FPS, Show
from tests.integration.distribution.media_check import largest_gap, video_times
from tests.integration.distribution.slow_proxy import SlowProxy
from tests.support.rtmp import RtmpServer, probe

# Every output's bound (the setting is per show): about 1.3 s of the 800 kbit/s noise, so the
# recording and the fast push ride out a scheduling hiccup of the loaded test machine, while the
# slow receiver, 50 kB/s short for good, overflows its queue within a few seconds.
QUEUE_PACKETS = 80
QUEUE_BYTES = 128 * 1024


@pytest.mark.parametrize(
    "show",
    [
        {
            "noisy": True,
            "video_bitrate_kbps": 800,
            "output_queue_packets": QUEUE_PACKETS,
            "output_queue_bytes": QUEUE_BYTES,
            "send_buffer_bytes": 32 * 1024,
        }
    ],
    indirect=True,
)
async def test_slow_receiver_drops_alone(show: Show, rtmp: RtmpServer) -> None:
    await show.add(id="archive", kind=dist.OUTPUT_KIND_RECORDING, segment_seconds=60)
    await show.wait_status("archive", dist.OUTPUT_STATUS_LIVE)
    await asyncio.sleep(3)
    full_rate = (await show.state("archive")).bitrate_kbps * 1000 / 8  # bytes per second
    assert full_rate > 30_000  # noise at up to 800 kbit/s: a real bitrate to halve

    proxy = SlowProxy(rtmp.port, rate=full_rate / 2).start()
    try:
        slow_url = f"rtmp://127.0.0.1:{proxy.port}/live"
        fast_url = rtmp.app_url()
        await show.add(id="slow", kind=dist.OUTPUT_KIND_RTMP, url=slow_url, stream_key="slow")
        await show.add(id="fast", kind=dist.OUTPUT_KIND_RTMP, url=fast_url, stream_key="fast")
        await show.wait_status("fast", dist.OUTPUT_STATUS_LIVE)
        slow = show.output("slow")
        largest_queue = largest_bytes = 0
        for _ in range(120):  # 12 s
            largest_queue = max(largest_queue, len(slow.queue))
            largest_bytes = max(largest_bytes, slow.queue.nbytes)
            await asyncio.sleep(0.1)
            if slow.queue.dropped > 50 and _ > 60:
                break
        states = {
            name: (await show.command(stop=dist.OutputRef(id=name))).outputs[0]
            for name in ("fast", "archive", "slow")
        }
    finally:
        proxy.stop()

    assert largest_queue <= QUEUE_PACKETS and largest_bytes <= QUEUE_BYTES
    assert states["slow"].dropped_packets > 0
    assert states["fast"].dropped_packets == 0 and states["archive"].dropped_packets == 0
    assert states["slow"].reconnects == 0 and states["fast"].reconnects == 0
    # The slow receiver got about half of what the others did.
    assert states["slow"].bytes_sent < 0.8 * states["fast"].bytes_sent
    await asyncio.sleep(1.5)  # the metrics are sampled once a second
    labels = {"production": show.prod}
    dropped = REGISTRY.get_sample_value(
        "baycast_distribution_output_dropped_packets_total", {**labels, "output": "slow"}
    )
    assert dropped == states["slow"].dropped_packets

    # The fast push and the recording have every frame.
    fast = probe(rtmp.wait_recording("fast"))
    video = next(s for s in fast["streams"] if s["codec_type"] == "video")
    duration = float(fast["format"]["duration"])
    assert abs(int(video["nb_read_frames"]) - duration * FPS) <= 3
    assert abs(duration - states["fast"].media_seconds) < 0.5
    (recording,) = (show.data_dir / "recordings" / show.prod / "archive").glob("*.ts")
    times = video_times([recording])
    assert largest_gap(times) <= 1.5 / FPS
    assert abs(len(times) / FPS - states["archive"].media_seconds) < 0.5
    # What reached the slow receiver still decodes (it restarts on keyframes).
    slow_info = probe(rtmp.wait_recording("slow"))
    assert (
        int(next(s for s in slow_info["streams"] if s["codec_type"] == "video")["nb_read_frames"])
        > 0
    )
