"""Publish to a WHIP endpoint with GStreamer's own WebRTC stack (webrtcbin, GStreamer ≥ 1.22).

    BAYCAST_STATION_TOKEN=T /usr/bin/python3 tests/support/gst_whip.py URL [--codec vp8|h264]
        [--seconds 10] [--size 320x180] [--tone-hz 660] [--ice-host 127.0.0.1]

Run with the system Python and its GObject bindings (Debian: python3-gi,
gir1.2-gst-plugins-base-1.0, gir1.2-gst-plugins-bad-1.0, and the elements of
gstreamer1.0-plugins-{base,good,bad,ugly} and gstreamer1.0-nice), not the project's venv: it
imports nothing of baycast, only its sibling whip_http.py. It does what gst-plugins-rs's
`whipsink` does, on the same webrtcbin:

    videotestsrc pattern=smpte100 ┐ (bars above,
    videotestsrc pattern=ball ────┴→ compositor  a moving ball below) → vp8enc | x264enc
        → rtpvp8pay | rtph264pay ─┐
    audiotestsrc wave=sine → opusenc → rtpopuspay ─┴→ webrtcbin

webrtcbin (bundle-policy max-bundle, both transceivers sendonly) makes the offer; with no trickle
ICE in WHIP the script waits for ICE gathering to complete, POSTs the offer with
`Authorization: Bearer <token>` and `Content-Type: application/sdp`, expects 201 with a Location
and the answer, applies the answer and publishes until `--seconds` pass or SIGTERM/SIGINT comes,
then DELETEs the Location. `--ice-host` gathers on that address only (libnice leaves loopback out
unless told). Each step prints one JSON line on stdout; a failure prints a reason on stderr and
exits 1.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC  # noqa: E402
from whip_http import Failed, Resource, arguments, main, say, stop_event  # noqa: E402

VIDEO = {
    # Constrained baseline, packetization-mode 1: what aiortc (and browsers) decode. The
    # payloader derives profile-level-id from the stream's SPS.
    "h264": (
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bframes=0"
        " ! video/x-h264,profile=constrained-baseline"
        " ! rtph264pay config-interval=-1 aggregate-mode=zero-latency pt=102"
        " ! application/x-rtp,media=video,encoding-name=H264,payload=102,clock-rate=90000,"
        "packetization-mode=(string)1"
    ),
    "vp8": (
        "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=25 target-bitrate=800000"
        " ! rtpvp8pay pt=96"
        " ! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000"
    ),
}
ELEMENTS = {
    "webrtcbin": "gstreamer1.0-plugins-bad",
    "nicesrc": "gstreamer1.0-nice",
    "dtlssrtpenc": "gstreamer1.0-plugins-bad",
    "videotestsrc": "gstreamer1.0-plugins-base",
    "compositor": "gstreamer1.0-plugins-base",
    "audiotestsrc": "gstreamer1.0-plugins-base",
    "opusenc": "gstreamer1.0-plugins-base",
    "rtpopuspay": "gstreamer1.0-plugins-good",
    "vp8enc": "gstreamer1.0-plugins-good",
    "rtpvp8pay": "gstreamer1.0-plugins-good",
    "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}
TIMEOUT_S = 15.0


def pipeline_text(codec: str, width: int, height: int, fps: int, tone_hz: float) -> str:
    """SMPTE 100 % bars over the top five sixths, a moving ball on black in the strip below."""
    raw = f"video/x-raw,format=I420,framerate={fps}/1,colorimetry=bt601"
    strip = height // 6
    return (
        "webrtcbin name=webrtc bundle-policy=max-bundle"
        f" compositor name=mix background=black sink_1::ypos={height - strip}"
        f" ! {raw},width={width},height={height} ! queue ! {VIDEO[codec]} ! webrtc."
        " videotestsrc is-live=true pattern=smpte100"
        f" ! {raw},width={width},height={height - strip} ! mix.sink_0"
        " videotestsrc is-live=true pattern=ball motion=wavy"
        f" ! {raw},width={width},height={strip} ! mix.sink_1"
        f" audiotestsrc is-live=true wave=sine freq={tone_hz} volume=0.3"
        " ! audio/x-raw,rate=48000,channels=2 ! audioconvert ! queue"
        " ! opusenc bitrate=64000 ! rtpopuspay pt=111"
        " ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111,clock-rate=48000"
        " ! webrtc."
    )


def check_elements(codec: str) -> None:
    unwanted = {"vp8": ("x264enc", "rtph264pay"), "h264": ("vp8enc", "rtpvp8pay")}[codec]
    missing = sorted(
        f"{name} ({package})"
        for name, package in ELEMENTS.items()
        if name not in unwanted and Gst.ElementFactory.find(name) is None
    )
    if missing:
        raise Failed("GStreamer elements missing: " + ", ".join(missing))


def wait_promise(promise: Gst.Promise, what: str) -> Gst.Structure | None:
    if promise.wait() != Gst.PromiseResult.REPLIED:
        raise Failed(f"{what}: webrtcbin did not reply")
    reply = promise.get_reply()
    if reply is not None and reply.has_field("error"):
        raise Failed(f"{what}: {reply.get_value('error')}")
    return reply


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise Failed(f"{what} after {timeout_s:.0f} s")
        time.sleep(0.02)


class Publisher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.resource = Resource(args.url, args.token)
        width, height = (int(v) for v in args.size.split("x"))
        self.pipeline = Gst.parse_launch(
            pipeline_text(args.codec, width, height, args.fps, args.tone_hz)
        )
        self.webrtc = self.pipeline.get_by_name("webrtc")
        self.negotiation_needed = threading.Event()
        self.webrtc.connect("on-negotiation-needed", lambda _e: self.negotiation_needed.set())
        # Kept for the pipeline's lifetime: GStreamer 1.22's webrtcbin hands its ICE agent out
        # without a reference of the caller's own, so dropping the Python wrapper would free it.
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.set_property("ice-tcp", False)  # WHIP servers here listen on UDP only
        for host in args.ice_host:
            if not self.ice.emit("add-local-ip-address", host):
                raise Failed(f"webrtcbin refused the ICE address {host}")
        for transceiver in self.transceivers():
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)

    def transceivers(self) -> list[GstWebRTC.WebRTCRTPTransceiver]:
        found = []
        while (item := self.webrtc.emit("get-transceiver", len(found))) is not None:
            found.append(item)
        return found

    def bus_error(self) -> str:
        message = self.pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if message is None:
            return ""
        error, debug = message.parse_error()
        return f"{message.src.get_name()}: {error.message} ({debug})"

    def offer(self) -> str:
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise Failed(f"the pipeline does not start: {self.bus_error() or 'no reason given'}")
        if not self.negotiation_needed.wait(TIMEOUT_S):
            raise Failed(
                f"webrtcbin never asked for negotiation: {self.bus_error() or 'no reason'}"
            )
        reply = wait_promise(self._emit_promise("create-offer", None), "create-offer")
        assert reply is not None
        offer = reply.get_value("offer")
        wait_promise(self._emit_promise("set-local-description", offer), "set-local-description")
        wait_for(
            lambda: (
                self.webrtc.get_property("ice-gathering-state")
                == GstWebRTC.WebRTCICEGatheringState.COMPLETE
            ),
            "ICE gathering did not complete",
        )
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        if "a=candidate:" not in sdp:
            raise Failed("no ICE candidate gathered (check --ice-host)")
        return str(sdp)

    def _emit_promise(self, signal_name: str, arg: Any) -> Gst.Promise:
        promise = Gst.Promise.new()
        if arg is None:
            self.webrtc.emit(signal_name, None, promise)
        else:
            self.webrtc.emit(signal_name, arg, promise)
        return promise

    def apply(self, answer: str) -> None:
        result, message = GstSdp.SDPMessage.new_from_text(answer)
        if result != GstSdp.SDPResult.OK:
            raise Failed(f"the answer is not SDP ({result})")
        description = GstWebRTC.WebRTCSessionDescription.new(
            GstWebRTC.WebRTCSDPType.ANSWER, message
        )
        wait_promise(self._emit_promise("set-remote-description", description), "the answer")

    def connected(self) -> bool:
        state = self.webrtc.get_property("connection-state")
        if state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            raise Failed("the WebRTC connection failed (ICE or DTLS)")
        error = self.bus_error()
        if error:
            raise Failed(error)
        return bool(state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED)

    def stats(self) -> list[dict[str, int]]:
        """Packets and bytes sent per outgoing RTP stream (SSRC), from webrtcbin's get-stats.

        Per stream only: with max-bundle, GStreamer 1.22 labels every outbound stream with the
        kind and codec of the last transceiver.
        """
        reply = wait_promise(self._emit_promise("get-stats", None), "get-stats")
        sent: list[dict[str, int]] = []

        def each(_field: int, value: Any, _user: Any) -> bool:
            if isinstance(value, Gst.Structure) and value.get_name() == "outbound-rtp":
                sent.append(
                    {
                        "ssrc": int(value.get_value("ssrc")),
                        "packets": int(value.get_value("packets-sent")),
                        "bytes": int(value.get_value("bytes-sent")),
                    }
                )
            return True

        if reply is not None:
            reply.foreach(each, None)
        return sorted(sent, key=lambda item: item["ssrc"])

    def certificate(self) -> str:
        """The PEM certificate webrtcbin's DTLS presents (GStreamer makes an RSA-2048 one)."""
        transport = self.transceivers()[0].get_property("sender").get_property("transport")
        pem = str(transport.get_property("certificate") or "")
        end = "-----END CERTIFICATE-----"
        return pem[: pem.index(end) + len(end)] if end in pem else ""

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


def publish(args: argparse.Namespace) -> None:
    Gst.init(None)
    check_elements(args.codec)
    stop = stop_event()
    publisher = Publisher(args)
    try:
        with publisher.resource.deleted_after():
            offer = publisher.offer()
            say("offered", offer=offer)
            publisher.apply(publisher.resource.post(offer))
            started = time.monotonic()
            wait_for(publisher.connected, "not connected (ICE or DTLS)")
            say(
                "connected",
                after_s=round(time.monotonic() - started, 3),
                certificate=publisher.certificate(),
            )
            deadline = started + args.seconds
            while not stop.is_set() and (args.seconds <= 0 or time.monotonic() < deadline):
                stop.wait(0.2)
                publisher.connected()
            say("sent", streams=publisher.stats())
    finally:
        publisher.stop()


def parser() -> argparse.ArgumentParser:
    options = arguments(__doc__.split("\n")[0], tone_hz=660.0)
    options.prog = "gst_whip"
    options.add_argument("--codec", choices=sorted(VIDEO), default="vp8")
    return options


if __name__ == "__main__":
    sys.exit(main(parser(), publish))
