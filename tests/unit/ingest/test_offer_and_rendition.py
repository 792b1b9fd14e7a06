from __future__ import annotations

import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.ingest.media_server import rendition_problem
from services.ingest.webrtc_source import SdpError, check_offer

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
    "a=rtpmap:96 VP8/90000\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
)


def test_a_plain_sendonly_offer_passes() -> None:
    assert [m.kind for m in check_offer(OFFER).media] == ["video"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("hello", "not SDP"),
        ("v=0\r\ns=-\r\n", "no audio or video"),
        (OFFER.replace("a=sendonly", "a=recvonly"), "sendonly"),
        (OFFER.replace("a=ice-ufrag:abcd\r\n", ""), "ICE"),
        (OFFER.replace("a=fingerprint", "a=x-fingerprint"), "DTLS"),
    ],
)
def test_bad_offers_say_why(body: str, reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        check_offer(body)


@pytest.mark.parametrize(
    "rendition",
    [
        media_pb2.Rendition(width=320),
        media_pb2.Rendition(width=321, height=180),
        media_pb2.Rendition(width=8000, height=4000),
        media_pb2.Rendition(audio_channels=6),
        media_pb2.Rendition(audio_sample_rate=1000),
        media_pb2.Rendition(no_video=True, no_audio=True),
    ],
)
def test_renditions_that_cannot_be_served(rendition: media_pb2.Rendition) -> None:
    assert rendition_problem(rendition)


def test_renditions_that_can() -> None:
    assert rendition_problem(media_pb2.Rendition()) == ""
    assert rendition_problem(media_pb2.Rendition(width=320, height=180, fps=10)) == ""
