"""The DTLS certificate of baycast's WebRTC peers, for remote peers with RSA certificates.

A WHIP or WHEP offer says `a=setup:actpass` and aiortc answers `active`: ingest and distribution
are the DTLS client and the remote peer's certificate decides the family of cipher suite.
aiortc 1.16 offers ECDHE-ECDSA suites only, so a peer with an RSA certificate (GStreamer's
webrtcbin makes an RSA-2048 one, hence gst-plugins-rs `whipsink`, `whipclientsink`, `whepsrc`)
failed the handshake with "no shared cipher" right after ICE connected. Offering the ECDHE-RSA
twins as well, as browsers do, fixes that; as the DTLS server nothing changes (our certificate
stays ECDSA, so only ECDSA suites can be chosen). aiortc has no option for its DTLS settings:
the SSL context this class makes for each connection is the one place to change them.
"""

from __future__ import annotations

from typing import TypeVar

from aiortc import RTCCertificate, RTCPeerConnection
from aiortc.rtcdtlstransport import SRTPProtectionProfile
from OpenSSL import SSL

# aiortc's ECDHE-ECDSA suites, each followed by its ECDHE-RSA twin.
DTLS_CIPHERS = b":".join(
    [
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-RSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES256-SHA",
    ]
)


class PeerCertificate(RTCCertificate):
    """aiortc's certificate (ECDSA P-256) whose DTLS client also offers ECDHE-RSA suites."""

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(DTLS_CIPHERS)
        return context


C = TypeVar("C", bound=PeerCertificate)


def use_peer_certificate(pc: RTCPeerConnection, kind: type[C] = PeerCertificate) -> C:  # type: ignore[assignment]
    """Give `pc` a certificate of `kind` before any offer or answer (aiortc has no option for it:
    its peer connection makes its certificate in `__init__` and keeps it in a private list)."""
    certificate = kind.generateCertificate()
    assert isinstance(certificate, kind)
    attribute = "_RTCPeerConnection__certificates"
    if not isinstance(getattr(pc, attribute, None), list):
        raise RuntimeError(f"aiortc changed: RTCPeerConnection has no {attribute} list")
    setattr(pc, attribute, [certificate])
    return certificate
