"""Regenerate the fuzz seed corpora from real peers (run by hand, not by the tests).

    .venv/bin/python -m tests.fuzz.capture rtmp     # ffmpeg, GStreamer rtmpsink (librtmp, as
                                                    # OBS) and rtmp2sink publish to a recorder
    .venv/bin/python -m tests.fuzz.capture sdp      # WHIP offers of aiortc, Chromium, FFmpeg's
                                                    # muxer, GStreamer webrtcbin, libdatachannel
                                                    # (OBS); WHEP offers of Chromium and aiortc

RTMP: a recorder on loopback answers the handshake and the commands with ingest's own code
(`services.ingest.rtmp.negotiate`), accepts the publish, reads a moment of media and keeps every
byte the client sent. The bytes after C0+C1+C2 go to `corpus/rtmp_chunks/<client>.bin`, the AMF0
bodies of the client's commands and data messages to `corpus/rtmp_amf/<client>-<n>-<name>.amf`.

SDP: each publisher POSTs its offer to a recorder that keeps the body and answers 403, so the
publisher gives up at once. Offers land in `corpus/whip_offer/` and `corpus/whep_offer/`, with
any address other than loopback rewritten into 192.0.2.0/24 (RFC 5737).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from services.ingest import rtmp_amf
from services.ingest.rtmp import RtmpConnection, negotiate
from services.ingest.rtmp_chunks import COMMAND_AMF0, DATA_AMF0, HANDSHAKE_SIZE, ChunkParser

CORPUS = Path(__file__).parent / "corpus"
REPO = Path(__file__).parents[2]
MEDIA_BYTES = 2_500  # metadata, both sequence headers and a few tags; small seeds fuzz fast
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's GObject bindings live there
OBS_PYTHON = REPO / "build/obs-venv/bin/python"


# -- RTMP ----------------------------------------------------------------------------------------


class TappedReader:
    """A StreamReader that keeps a copy of what it reads."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.data = bytearray()

    async def read(self, n: int) -> bytes:
        chunk = await self.reader.read(n)
        self.data += chunk
        return chunk

    async def readexactly(self, n: int) -> bytes:
        chunk = await self.reader.readexactly(n)
        self.data += chunk
        return chunk


async def record_rtmp(client: list[str], seconds: float = 6.0) -> bytes:
    """What `client` (a command with {url}) sends to an RTMP server up to MEDIA_BYTES of media."""
    captured: list[bytes] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tap = TappedReader(reader)
        conn = RtmpConnection(tap, writer)  # type: ignore[arg-type]
        start = 0
        try:
            await conn.handshake()
            _app, _key, stream_id = await negotiate(conn)
            conn.status(stream_id, "status", "NetStream.Publish.Start", "publishing")
            await conn.flush()
            start = len(tap.data)
            while len(tap.data) - start < MEDIA_BYTES:
                if await conn.next_message(seconds) is None:
                    break
        finally:
            captured.append(bytes(tap.data[: start + MEDIA_BYTES]))
            done.set()
            conn.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"rtmp://127.0.0.1:{port}/live/fuzz-seed-key"
    process = await asyncio.create_subprocess_exec(
        *[part.replace("{url}", url) for part in client],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(done.wait(), seconds + 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        server.close()
    return captured[0]


FFMPEG_RTMP = [
    "ffmpeg", "-loglevel", "error", "-re",
    "-f", "lavfi", "-i", "testsrc=size=64x36:rate=10",
    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
    "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "5",
    "-c:a", "aac", "-b:a", "32k", "-f", "flv", "{url}",
]  # fmt: skip
GST_RUN = (
    "import gi, sys; gi.require_version('Gst', '1.0'); from gi.repository import Gst; "
    "Gst.init(None); p = Gst.parse_launch(sys.argv[1]); p.set_state(Gst.State.PLAYING); "
    "p.get_bus().timed_pop_filtered(5 * Gst.SECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS)"
)
GST_FLV = (
    "videotestsrc is-live=true ! video/x-raw,width=64,height=36,framerate=10/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 ! h264parse ! mux. "
    "audiotestsrc is-live=true ! audioconvert ! audioresample ! voaacenc ! aacparse ! mux. "
    "flvmux name=mux streamable=true ! "
)
RTMP_CLIENTS = {
    "ffmpeg-5.1": FFMPEG_RTMP,
    "gst-rtmpsink-librtmp": [
        SYSTEM_PYTHON,
        "-c",
        GST_RUN,
        GST_FLV + 'rtmpsink location="{url} live=1"',
    ],
    "gst-rtmp2sink": [SYSTEM_PYTHON, "-c", GST_RUN, GST_FLV + "rtmp2sink location={url}"],
}


def write_rtmp_seeds(name: str, capture: bytes, seen: set[bytes]) -> None:
    stream = capture[1 + 2 * HANDSHAKE_SIZE :]
    (CORPUS / "rtmp_chunks" / f"{name}.bin").write_bytes(stream)
    parser = ChunkParser()
    amf = [m for m in parser.feed(stream) if m.type_id in (COMMAND_AMF0, DATA_AMF0)]
    fresh = []
    for message in amf:  # a body sent again, or by another client too, is one seed
        if message.payload not in seen:
            seen.add(message.payload)
            fresh.append(message)
    amf = fresh
    for n, message in enumerate(amf):
        first = rtmp_amf.decode(message.payload)[0]
        label = re.sub(r"[^A-Za-z0-9]", "", str(first)) or "value"
        (CORPUS / "rtmp_amf" / f"{name}-{n}-{label}.amf").write_bytes(message.payload)
    print(f"{name}: {len(stream)} bytes after the handshake, {len(amf)} AMF0 bodies")


async def capture_rtmp() -> None:
    for folder in ("rtmp_chunks", "rtmp_amf"):
        (CORPUS / folder).mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    for name, client in RTMP_CLIENTS.items():
        try:
            write_rtmp_seeds(name, await record_rtmp(client), seen)
        except TimeoutError:
            print(f"{name}: published nothing")


# -- SDP -----------------------------------------------------------------------------------------

_IPV4 = re.compile(r"\b(?!127\.0\.0\.1\b|0\.0\.0\.0\b)(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
# IPv6 only where SDP puts an address (hex pairs with colons are fingerprints elsewhere).
_IPV6 = re.compile(
    r"(?<=IN IP6 )[0-9A-Fa-f:]+|(?<=^a=candidate:)(\S+ \S+ \S+ \S+ )([0-9A-Fa-f:]*:[0-9A-Fa-f:]*)",
    re.M,
)


def _ipv6(match: re.Match[str]) -> str:
    prefix, address = (match.group(1), match.group(2)) if match.group(2) else ("", match.group(0))
    return prefix + (address if address in ("::1", "::") else f"2001:db8::{len(address)}")


def scrub(sdp: str) -> str:
    """The offer with every address but loopback moved into the documentation ranges."""
    sdp = _IPV4.sub(lambda m: f"192.0.2.{int(m.group(4)) % 250 + 1}", sdp)
    return _IPV6.sub(_ipv6, sdp)


async def record_offers(publishers: dict[str, list[str]]) -> dict[str, str]:
    """The offers `publishers` (commands with {url}) POST to a WHIP endpoint."""
    offers: dict[str, str] = {}
    current = ""
    arrived = asyncio.Event()

    async def post(request: web.Request) -> web.Response:
        offers[current] = (await request.read()).decode()
        arrived.set()
        return web.Response(status=403, text="recorded\n")

    app = web.Application()
    app.router.add_post("/whip/{station}", post)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/whip/fuzz"
    env = {**os.environ, "BAYCAST_STATION_TOKEN": "fuzz-seed-token", "PYTHONPATH": str(REPO)}
    try:
        for name, command in publishers.items():
            current = name
            arrived.clear()
            process = await asyncio.create_subprocess_exec(
                *[part.replace("{url}", url) for part in command],
                env=env,
                cwd=REPO,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), 20)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            print(f"{name}: {'recorded' if name in offers else 'no offer'}")
    finally:
        await runner.cleanup()
    return offers


WHIP_PUBLISHERS = {
    "ffmpeg-8.1-whip-muxer": [sys.executable, "-m", "tests.support.whip_push", "{url}", "2"],
    "gstreamer-webrtcbin-vp8": [
        *[SYSTEM_PYTHON, "tests/support/gst_whip.py", "{url}", "--codec", "vp8"],
        *["--seconds", "2", "--ice-host", "127.0.0.1"],
    ],
    "gstreamer-webrtcbin-h264": [
        *[SYSTEM_PYTHON, "tests/support/gst_whip.py", "{url}", "--codec", "h264"],
        *["--seconds", "2", "--ice-host", "127.0.0.1"],
    ],
    "obs-libdatachannel": [
        *[str(OBS_PYTHON), "tests/support/obs_whip.py", "{url}"],
        *["--seconds", "2", "--ice-host", "127.0.0.1"],
    ],
}

CHROMIUM_OFFER_JS = """async ([direction, media]) => {
    const pc = new RTCPeerConnection();
    if (media) {
        const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
        for (const track of stream.getTracks()) pc.addTransceiver(track, {direction});
    } else {
        pc.addTransceiver("video", {direction});
        pc.addTransceiver("audio", {direction});
    }
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {
        if (pc.iceGatheringState === "complete") return done();
        pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
        setTimeout(done, 3000);
    });
    return pc.localDescription.sdp;
}"""


async def chromium_offers() -> dict[str, str]:
    from playwright.async_api import async_playwright

    args = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--allow-loopback-in-peer-connection",
        "--disable-background-networking",
        "--no-first-run",
        "--no-sandbox",
    ]
    app = web.Application()  # getUserMedia wants a secure context: http://127.0.0.1 is one
    app.router.add_get(
        "/", lambda _r: web.Response(text="<!doctype html>", content_type="text/html")
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    page_url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    with tempfile.TemporaryDirectory() as profile:
        async with async_playwright() as p:
            browser = await p.chromium.launch_persistent_context(
                profile, executable_path="/usr/bin/chromium", headless=True, args=args
            )
            try:
                page = await browser.new_page()
                await page.goto(page_url)
                whip = await page.evaluate(CHROMIUM_OFFER_JS, ["sendonly", True])
                whep = await page.evaluate(CHROMIUM_OFFER_JS, ["recvonly", False])
            finally:
                await browser.close()
                await runner.cleanup()
    return {"whip_offer/chromium": whip, "whep_offer/chromium": whep}


async def aiortc_offers() -> dict[str, str]:
    from aiortc import RTCPeerConnection

    offers = {}
    for folder, direction in (("whip_offer", "sendonly"), ("whep_offer", "recvonly")):
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction=direction)
        pc.addTransceiver("audio", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        offers[f"{folder}/aiortc-1.16"] = pc.localDescription.sdp
        await pc.close()
    return offers


async def capture_sdp() -> None:
    offers = {f"whip_offer/{k}": v for k, v in (await record_offers(WHIP_PUBLISHERS)).items()}
    offers |= await chromium_offers()
    offers |= await aiortc_offers()
    for name, sdp in offers.items():
        path = CORPUS / f"{name}.sdp"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(scrub(sdp), newline="")
        print(f"{path.parent.name}/{path.name}: {len(sdp)} characters")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("rtmp", "sdp"))
    args = parser.parse_args()
    asyncio.run(capture_rtmp() if args.what == "rtmp" else capture_sdp())


if __name__ == "__main__":
    main()
