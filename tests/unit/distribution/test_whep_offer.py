"""What a WHEP offer must hold: checked before anything is made for it."""

from __future__ import annotations

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

from services.distribution.whep_offer import OfferError, check_offer


async def offer(
    video_codecs: tuple[str, ...] = ("video/H264", "video/rtx"),
    audio: bool = True,
    direction: str = "recvonly",
) -> str:
    """A real aiortc offer (no candidates: nothing is gathered until setLocalDescription)."""
    pc = RTCPeerConnection()
    try:
        video = pc.addTransceiver("video", direction=direction)
        capabilities = RTCRtpReceiver.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in capabilities if c.mimeType in video_codecs])
        if audio:
            pc.addTransceiver("audio", direction=direction)
        return (await pc.createOffer()).sdp
    finally:
        await pc.close()


async def test_a_browser_like_offer_passes() -> None:
    parsed = check_offer(await offer())
    assert sorted(m.kind for m in parsed.media) == ["audio", "video"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"video_codecs": ("video/VP8", "video/rtx")}, r"no H\.264"),
        ({"audio": False}, "one audio and one video"),
        ({"direction": "sendonly"}, "must be recvonly"),
    ],
)
async def test_what_cannot_be_answered_is_refused_with_the_reason(
    kwargs: dict[str, object], reason: str
) -> None:
    with pytest.raises(OfferError, match=reason):
        check_offer(await offer(**kwargs))  # type: ignore[arg-type]


async def test_h264_without_packetization_mode_1_or_in_high_profile_is_refused() -> None:
    text = await offer()
    high = text.replace("profile-level-id=42e01f", "profile-level-id=640c1f").replace(
        "profile-level-id=42001f", "profile-level-id=640c1f"
    )
    with pytest.raises(OfferError, match=r"no H\.264"):
        check_offer(high)
    mode0 = text.replace("packetization-mode=1", "packetization-mode=0")
    with pytest.raises(OfferError, match=r"no H\.264"):
        check_offer(mode0)


async def test_no_opus_is_refused() -> None:
    text = await offer()
    with pytest.raises(OfferError, match="no Opus"):
        check_offer(text.replace("opus/48000", "PCMA/48000"))


def test_not_sdp_and_malformed_sdp() -> None:
    with pytest.raises(OfferError, match="not SDP"):
        check_offer("hello")
    with pytest.raises(OfferError, match="malformed SDP"):
        check_offer("v=0\r\nm=video x\r\n")
