"""The P-224 TLS group that ingest grafts into the `cryptography` wheel's OpenSSL (ADR 0013).

FFmpeg 8.1's WHIP muxer (GnuTLS) makes its own DTLS certificate on P-224, and OpenSSL, as the
DTLS client, accepts it only if P-224 is one of its groups. These tests pin the two facts the
graft rests on, so that the day either changes a test fails and points at the ADR.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from aiortc.rtcdtlstransport import SRTP_PROFILES, SRTPProtectionProfile
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from OpenSSL._util import lib

from services.ingest import dtls_p224
from services.ingest.webrtc_source import WhipCertificate
from tests.unit.ingest.test_dtls_ciphers import handshake, server_context


def test_the_wheels_openssl_has_no_p224_group_of_its_own() -> None:
    """In a fresh process (the graft is process-wide), before any graft: "P-224" is refused in
    a groups list. If this fails, the OpenSSL of the `cryptography` wheel has the groups RFC 8422
    deprecates again (built with enable-tls-deprecated-ec): `dtls_p224` can go (ADR 0013)."""
    code = (
        "from OpenSSL import SSL; from OpenSSL._util import lib; "
        "ctx = SSL.Context(SSL.DTLS_METHOD); "
        "print(lib.SSL_CTX_set1_curves_list(ctx._context, b'P-224'), "
        "lib.SSL_CTX_set1_curves_list(ctx._context, b'P-256'), "
        "SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["0", "1"], f"P-224 is a TLS group of {' '.join(out[2:])}: see ADR 0013"


def test_the_graft_makes_p224_a_group() -> None:
    """If this fails, the graft could not reach OpenSSL's provider API in the wheel (a stripped
    or different wheel, see the warning `dtls_p224_unavailable`): FFmpeg's own certificate is
    refused again, and the README's `-cert_file/-key_file` pair is the way (ADR 0013)."""
    assert dtls_p224.available()
    assert dtls_p224.accepts_p224()
    context = WhipCertificate.generateCertificate()._create_ssl_context(SRTP_PROFILES)
    connection = SSL.Connection(context)
    assert dtls_p224.allow_on(connection)


class AdvertisingP224(WhipCertificate):
    """Ingest's context with P-224 among the groups of its ClientHello (ingest does not do that)."""

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        assert lib.SSL_CTX_set1_curves_list(context._context, b"DEFAULT:P-224") == 1
        return context


def test_a_p224_server_certificate_is_taken_once_p224_is_a_group() -> None:
    """OpenSSL as the client checks the curve of the server's certificate against its groups
    (`tls12_check_peer_sigalg`); with the grafted group that check passes, in DTLS 1.2."""
    assert dtls_p224.available()
    server = server_context(ec.generate_private_key(ec.SECP224R1()))
    assert handshake(AdvertisingP224.generateCertificate(), server).startswith("ECDHE-ECDSA-")


def test_ingest_does_not_offer_p224_in_its_client_hello() -> None:
    """Ingest adds P-224 to a connection's groups only once the publisher's certificate is on
    P-224 (GnuTLS, FFmpeg's, sends it whatever the ClientHello lists). An OpenSSL server uses a
    P-224 certificate only if the ClientHello lists P-224, so against one the handshake fails:
    what every other publisher sees of ingest's groups has not changed."""
    assert dtls_p224.available()
    server = server_context(ec.generate_private_key(ec.SECP224R1()))
    with pytest.raises(SSL.Error, match="no shared cipher"):
        handshake(WhipCertificate.generateCertificate(), server)
