"""Ingest's DTLS handshake with publishers whose certificate is RSA (GStreamer) or ECDSA.

Ingest answers WHIP offers `a=setup:active`, so it is the DTLS client and the publisher's
certificate decides the cipher suite. The server here is OpenSSL set up as GStreamer's
dtlsagent is (cipher list "ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH", SRTP, a client certificate asked
for); the two ends talk through memory BIOs.
"""

from __future__ import annotations

import datetime

import pytest
from aiortc import RTCCertificate
from aiortc.rtcdtlstransport import SRTP_PROFILES
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from services.ingest.webrtc_source import WhipCertificate, WhipSource

GSTREAMER_CIPHERS = b"ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH"


def server_context(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> SSL.Context:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "publisher")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    ctx = SSL.Context(SSL.DTLS_METHOD)
    ctx.use_certificate(crypto.X509.from_cryptography(cert))
    ctx.use_privatekey(crypto.PKey.from_cryptography_key(key))
    ctx.set_cipher_list(GSTREAMER_CIPHERS)
    ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_args: True)
    return ctx


def handshake(client_certificate: RTCCertificate, server: SSL.Context) -> str:
    """Run the DTLS handshake (ingest the client); return the negotiated cipher suite."""
    client = SSL.Connection(client_certificate._create_ssl_context(srtp_profiles=SRTP_PROFILES))
    client.set_connect_state()
    peer = SSL.Connection(server)
    peer.set_accept_state()
    done: set[int] = set()
    for _ in range(20):
        for end in (client, peer):
            try:
                end.do_handshake()
                done.add(id(end))
            except SSL.WantReadError:
                pass
        for source, target in ((client, peer), (peer, client)):
            while True:
                try:
                    target.bio_write(source.bio_read(65536))
                except SSL.WantReadError:
                    break
        if len(done) == 2:
            return str(client.get_cipher_name())
    raise AssertionError("the handshake did not finish")


def test_an_rsa_certificate_publisher_completes_the_handshake() -> None:
    # GStreamer's webrtcbin makes an RSA-2048 certificate for every peer connection.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cipher = handshake(WhipCertificate.generateCertificate(), server_context(key))
    assert cipher.startswith("ECDHE-RSA-")


def test_an_ecdsa_certificate_publisher_still_gets_an_ecdsa_suite() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cipher = handshake(WhipCertificate.generateCertificate(), server_context(key))
    assert cipher.startswith("ECDHE-ECDSA-")


def test_aiortc_own_certificate_fails_with_rsa_publishers() -> None:
    """Why WhipCertificate exists: aiortc 1.16 offers ECDHE-ECDSA suites only. If this fails
    after an aiortc upgrade, aiortc accepts RSA peers itself and WhipCertificate can go."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(SSL.Error, match="no shared cipher"):
        handshake(RTCCertificate.generateCertificate(), server_context(key))


async def test_whip_sources_use_the_whip_certificate() -> None:
    source = WhipSource("gz", "gz", "广州台")
    try:
        certificates = source.pc._RTCPeerConnection__certificates  # type: ignore[attr-defined]
        assert [type(c) for c in certificates] == [WhipCertificate]
    finally:
        await source.close()


async def test_an_audio_receiver_holds_back_one_packet_not_four() -> None:
    from aiortc import RTCPeerConnection

    from services.ingest.webrtc_source import AUDIO_PREFETCH_PACKETS, shorten_audio_prefetch

    pc = RTCPeerConnection()
    try:
        audio = pc.addTransceiver("audio", direction="recvonly")
        buffer = audio.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert buffer._prefetch == 4  # aiortc's own
        shorten_audio_prefetch(audio.receiver)
        assert buffer._prefetch == AUDIO_PREFETCH_PACKETS == 1
    finally:
        await pc.close()
