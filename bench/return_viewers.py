"""WHEP viewers as a load for a benchmark: `python -m bench.return_viewers < plan.json`.

Each viewer is a real WebRTC peer (ICE, DTLS, SRTP, RTCP receiver reports) that receives one
return and counts its frames without decoding them: a station's decoder runs on the station's
machine, not on the platform's, and decoding twelve returns here would take the two cores the
platform is measured on. The plan (WHEP URLs, tokens) comes on standard input so tokens never
show in a process list. It prints `ready <n>` once every viewer is connected, then a line of
frame counts every second, and ends on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import signal
import sys
import threading
from typing import Any

import aiohttp
import aiortc.rtcrtpreceiver
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

from services.common import ice

_FRAMES: dict[str, int] = {"audio": 0, "video": 0}
_LOCK = threading.Lock()


def _counting_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    """aiortc's decoder thread, counting the encoded frames it is handed instead of decoding."""
    del decode_error
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
            return
        codec, _frame = task
        with _LOCK:
            _FRAMES[codec.mimeType.split("/")[0]] += 1


async def _viewer(http: aiohttp.ClientSession, url: str, token: str) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    codecs = RTCRtpReceiver.getCapabilities("video").codecs
    video.setCodecPreferences([c for c in codecs if c.mimeType == "video/H264"])
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with http.post(url, data=pc.localDescription.sdp.encode(), headers=headers) as resp:
        answer = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"WHEP {url} answered {resp.status}: {answer.strip()}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 20)
    return pc


async def _main(plan: dict[str, Any]) -> None:
    ice.configure(("127.0.0.1",))
    aiortc.rtcrtpreceiver.decoder_worker = _counting_worker  # type: ignore[assignment]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with aiohttp.ClientSession() as http:
        peers = [await _viewer(http, v["url"], v["token"]) for v in plan["viewers"]]
        print(f"ready {len(peers)}", flush=True)
        while not stop.is_set():
            with _LOCK:
                print(json.dumps(_FRAMES), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        for pc in peers:
            await pc.close()


def main() -> None:
    asyncio.run(_main(json.load(sys.stdin)))


if __name__ == "__main__":
    main()
