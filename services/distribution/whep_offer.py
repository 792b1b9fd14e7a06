"""What a WHEP offer must hold before a peer connection is made for it.

A viewer's offer receives: one audio and one video section, each recvonly (or sendrecv: we
only send), with ICE credentials and a DTLS fingerprint; the video section offers H.264 with
packetization-mode 1 in Constrained Baseline (or Baseline, which decodes it), the audio section
Opus at 48 kHz. The exchange encodes exactly that once per rendition, so an offer without them
is refused with the reason rather than given an encode of its own.
"""

from __future__ import annotations

from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import H264Profile, SessionDescription, parse_h264_profile_level_id

from services.common.sdp_checks import transport_problem

# What the shared encodings are: the offer must take these.
H264_PROFILES = (H264Profile.PROFILE_CONSTRAINED_BASELINE, H264Profile.PROFILE_BASELINE)
# An absent profile-level-id means Constrained Baseline level 3.1 (RFC 6184, and aiortc).
DEFAULT_PROFILE_LEVEL_ID = "42e01f"


Codec = RTCRtpCodecCapability | RTCRtpCodecParameters
# What WebRTC offers carry: media, and a data channel (answered, never used).
SECTION_KINDS = ("audio", "video", "application")


class OfferError(ValueError):
    """The offer cannot be answered; the message says why (for the 400 reply)."""


def check_offer(text: str) -> SessionDescription:
    """Parse a viewer's SDP offer and refuse what cannot work, with a reason."""
    if not text.startswith("v=0"):
        raise OfferError("the body is not SDP (it must start with v=0)")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc raises ValueError, IndexError, KeyError on bad lines
        raise OfferError(f"malformed SDP: {type(exc).__name__}: {exc}") from None
    for section in parsed.media:
        if section.kind not in SECTION_KINDS:  # aiortc would answer it as a data channel
            raise OfferError(f"the offer has a section of kind {section.kind!r} (m={section.kind})")
    media = [m for m in parsed.media if m.kind in ("audio", "video")]
    kinds = sorted(m.kind for m in media)
    if kinds != ["audio", "video"]:
        raise OfferError(
            f"the offer must have one audio and one video section (it has {kinds or 'none'})"
        )
    problem = transport_problem(parsed)
    if problem:
        raise OfferError(problem)
    for section in media:
        if section.direction is None:
            # SDP's default is sendrecv, but aiortc fails to answer a section without one.
            raise OfferError(f"the {section.kind} section has no direction (a=recvonly)")
        if section.direction not in ("recvonly", "sendrecv"):
            raise OfferError(
                f"the {section.kind} section must be recvonly (it is {section.direction})"
            )
        if not (section.ice and section.ice.usernameFragment):
            raise OfferError(f"the {section.kind} section has no ICE credentials (a=ice-ufrag)")
        if section.dtls is None or not section.dtls.fingerprints:
            raise OfferError(f"the {section.kind} section has no DTLS fingerprint")
        codecs = section.rtp.codecs
        if section.kind == "video" and not any(is_shared_h264(c) for c in codecs):
            raise OfferError(
                "the video section offers no H.264 with packetization-mode=1 in Constrained "
                "Baseline (profile-level-id 42e01f): that is what the exchange sends"
            )
        if section.kind == "audio" and not any(is_opus(c) for c in codecs):
            raise OfferError("the audio section offers no Opus: that is what the exchange sends")
    return parsed


def is_shared_h264(codec: Codec) -> bool:
    """H.264 a viewer can decode our Constrained Baseline, packetization-mode 1, stream with."""
    if codec.mimeType.lower() != "video/h264" or codec.clockRate != 90_000:
        return False
    try:
        mode = int(str(codec.parameters.get("packetization-mode", "0")))
        profile_level_id = str(codec.parameters.get("profile-level-id", DEFAULT_PROFILE_LEVEL_ID))
        profile, _level = parse_h264_profile_level_id(profile_level_id)
    except ValueError:
        return False
    return mode == 1 and profile in H264_PROFILES


def is_opus(codec: Codec) -> bool:
    return codec.mimeType.lower() == "audio/opus" and codec.clockRate == 48_000
