"""The control room benchmark's scene, run in a loopback-only network namespace (the browser's
WebRTC sees no other address): `python -m bench.control_room_scene OUT` under `unshare -n`.

A nats-server, the mixer with three cards, graphics, monitoring and the control service
(`tests/support/control_room.py`'s studio) and distribution sharing a media grant secret with
it; headless Chromium logged in as a director plays the multiview over WHEP. Cuts alternate
between two cards of different colours:

* command → switched frame: each cut sent as the control room's HTTP API request (a bearer
  token), or as the NATS command `baycast ctl` sends, timed to the first program frame with the
  new colour at a media-plane subscriber;
* multiview behind the program: the page records every multiview picture it presents
  (`requestVideoFrameCallback`, the program's quarter of the multiview) with the wall time; the
  first showing the new colour is compared with the program frame's arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media import proto_to_i420
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from tests.support.control_room import SMALL, centre, chromium, log_in, running_studio, wait_true
from tests.support.control_room_scene import expected_rgb
from tests.support.loopback_scene import scene_main
from tests.support.mixer import frames
from tests.support.nats import NatsServer
from tests.support.services import running_service

CUTS = 12
CUT_GAP_S = 1.5
TIMEOUT_S = 5.0
Cmd = mixer_pb2.MixerCommand

# Every picture the page presents: the wall time and the colour at the centre of the program's
# quarter of the multiview (the top right: preview left, program right).
SAMPLER = """() => {
  const video = document.querySelector('#multiview');
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', { willReadFrequently: true });
  window.benchSamples = [];
  const tick = () => {
    if (video.videoWidth) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      context.drawImage(video, 0, 0);
      const d = context.getImageData(Math.floor(0.75 * canvas.width),
                                     Math.floor(0.25 * canvas.height), 1, 1).data;
      window.benchSamples.push([Date.now() / 1000, d[0], d[1], d[2]]);
    }
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}"""


class Program:
    """Program frames as they arrive at a media-plane subscriber: (wall time, centre YUV)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, tuple[int, int, int]]] = []

    async def follow(self, endpoint: str, handle: str) -> None:
        async for message in frames(endpoint, handle, SMALL):
            if message.WhichOneof("body") == "video":
                self.seen.append((time.time(), centre(proto_to_i420(message.video))))

    async def first(self, since: float, yuv: tuple[int, int, int]) -> float:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for t, got in self.seen:
                if t >= since and all(abs(a - b) <= 4 for a, b in zip(got, yuv, strict=True)):
                    return t
            await asyncio.sleep(0.002)
        raise TimeoutError("the program never showed the cut")


async def page_first(page: Any, since: float, rgb: list[int]) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        samples = await page.evaluate("window.benchSamples.splice(0)")
        for t, r, g, b in samples:
            if t >= since and all(abs(x - y) <= 40 for x, y in zip((r, g, b), rgb, strict=True)):
                return float(t)
        await asyncio.sleep(0.01)
    raise TimeoutError("the page's multiview never showed the cut")


async def drive(out: dict[str, Any], _path: Path) -> None:
    nats = NatsServer().start()
    secret = secrets.token_urlsafe(32)
    try:
        with tempfile.TemporaryDirectory(prefix="baycast-bench-room-") as data_dir:
            async with contextlib.AsyncExitStack() as stack:
                dist = await stack.enter_async_context(
                    running_service(
                        DistributionService,
                        DistributionSettings,
                        nats.url,
                        data_dir=data_dir,
                        media_grant_secret=secret,
                    )
                )
                studio = await stack.enter_async_context(
                    running_studio(
                        nats.url, exchange_url=dist.base_url(), media_grant_secret=secret
                    )
                )
                await measure(studio, out)
    finally:
        nats.cleanup()


async def measure(studio: Any, out: dict[str, Any]) -> None:
    a, b = studio.sources[:2]
    program = Program()
    follower = asyncio.create_task(
        program.follow(studio.mixer.grpc_endpoint, f"prod/{studio.id}/program")
    )
    _operator, token = await studio.add_operator("director", "导演")
    api = f"{studio.url}/api/productions/{studio.id}/mixer"
    headers = {"Authorization": f"Bearer {token}"}
    out.update(api_ms=[], bus_ms=[], behind_ms=[])
    try:
        async with chromium() as browser, aiohttp.ClientSession() as http:
            page, _console = await log_in(browser, studio, token)
            await wait_true(page, "document.querySelector('#multiview').videoWidth > 0", 40)
            await page.evaluate(SAMPLER)
            await studio.switch(Cmd(cut=Cmd.Cut(source=a)))
            await asyncio.sleep(2)  # steady state
            for i in range(CUTS):
                source = b if i % 2 == 0 else a
                yuv = studio.colour(source)
                sent = time.time()
                if i % 2 == 0:
                    body = {"cut": {"source": source}}
                    async with http.post(api, json=body, headers=headers) as resp:
                        assert resp.status == 200, await resp.text()
                    key = "api_ms"
                else:
                    await studio.switch(Cmd(cut=Cmd.Cut(source=source)))
                    key = "bus_ms"
                on_program = await program.first(sent, yuv)
                out[key].append((on_program - sent) * 1000)
                on_page = await page_first(page, sent, expected_rgb(yuv))
                out["behind_ms"].append((on_page - on_program) * 1000)
                await asyncio.sleep(CUT_GAP_S)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


if __name__ == "__main__":
    scene_main(drive, 240)
