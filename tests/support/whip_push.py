"""Publish the test card with FFmpeg's own WHIP muxer (PyAV's FFmpeg 8.1), as a non-aiortc peer.

Run as a process (`python -m tests.support.whip_push URL SECONDS [--own-certificate]
[--dtls-active]`, token in BAYCAST_STATION_TOKEN): PyAV holds the GIL while the muxer does its
HTTP exchange, so it cannot share a process with the server it talks to. By default the muxer is
given a P-256 certificate (`-cert_file/-key_file`, as the README shows); `--own-certificate`
leaves the certificate to the muxer (FFmpeg 8.1 with GnuTLS makes it on P-224, the station
engineer's short command), and `--dtls-active` sets `-whip_flags dtls_active` (the muxer is then
the DTLS client and ingest the server).
"""

from __future__ import annotations

import datetime
import os
import sys
import tempfile
import time

import av
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.station.testcard import TestCard

FPS = 25
SAMPLES = 48_000 // FPS


def ecdsa_certificate(folder: str) -> tuple[str, str]:
    """A self-signed P-256 certificate for the muxer (`-cert_file/-key_file`): the one FFmpeg 8.1
    with GnuTLS makes for itself is on P-224 (see the README and ADR 0013)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baycast-whip-push")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def push(
    url: str,
    token: str,
    seconds: float,
    station: str,
    size: tuple[int, int],
    own_certificate: bool = False,
    dtls_active: bool = False,
) -> None:
    card = TestCard(station, station, *size)
    with tempfile.TemporaryDirectory() as folder:
        options = {"authorization": token}
        if dtls_active:
            options["whip_flags"] = "dtls_active"
        if not own_certificate:
            cert, key = ecdsa_certificate(folder)
            options |= {"cert_file": cert, "key_file": key}
        out = av.open(url, mode="w", format="whip", options=options)
        _stream(out, card, seconds, size)


def _stream(
    out: av.container.OutputContainer, card: TestCard, seconds: float, size: tuple[int, int]
) -> None:
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
    video.codec_context.options = {"tune": "zerolatency", "profile": "baseline", "g": str(FPS)}
    audio = out.add_stream("libopus", rate=48_000, layout="stereo")
    start = time.time()
    n = 0
    while n < seconds * FPS:
        frame = card.video_frame(n, time.time())
        frame.pts = n
        for packet in video.encode(frame):
            out.mux(packet)
        tone = np.repeat(card.tone(n * SAMPLES, SAMPLES)[None, :], 2, axis=0)
        sound = av.AudioFrame.from_ndarray(tone.T.reshape(1, -1), format="s16", layout="stereo")
        sound.sample_rate, sound.pts = 48_000, n * SAMPLES
        for packet in audio.encode(sound):
            out.mux(packet)
        n += 1
        time.sleep(max(0.0, start + n / FPS - time.time()))
    out.close()


if __name__ == "__main__":
    if os.environ.get("WHIP_PUSH_DEBUG"):
        import av.logging

        av.logging.set_level(av.logging.DEBUG)
    target, duration = sys.argv[1], float(sys.argv[2])
    push(
        target,
        os.environ["BAYCAST_STATION_TOKEN"],
        duration,
        target.rstrip("/").rpartition("/")[2],
        (320, 180),
        own_certificate="--own-certificate" in sys.argv[3:],
        dtls_active="--dtls-active" in sys.argv[3:],
    )
