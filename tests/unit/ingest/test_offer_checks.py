from __future__ import annotations

import pytest

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
