"""GStreamer's WebRTC stack (webrtcbin, what gst-plugins-rs's whipsink is built on) publishes
over WHIP, in VP8 and in H.264, and a gRPC subscriber sees its test pattern and tone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.foreign_whip_scene import assert_published
from tests.support.gst_whip_scene import SYSTEM_PYTHON, TONE_HZ
from tests.support.loopback_scene import run_scene, unshare_works

pytestmark = pytest.mark.timeout(240)


def gstreamer_ready() -> str:
    """Why the system Python cannot drive webrtcbin here, or "" when it can."""
    if shutil.which(SYSTEM_PYTHON) is None:
        return f"no {SYSTEM_PYTHON}"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0');"
        "gi.require_version('GstSdp', '1.0'); from gi.repository import Gst, GstWebRTC, GstSdp;"
        "Gst.init(None); missing = [e for e in ('webrtcbin', 'nicesrc', 'vp8enc', 'x264enc',"
        " 'opusenc', 'compositor') if Gst.ElementFactory.find(e) is None];"
        "print(' '.join(missing))"
    )
    try:
        done = subprocess.run(
            [SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON}: {exc}"
    if done.returncode != 0:
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "gi failed"
    return f"GStreamer elements missing: {done.stdout.strip()}" if done.stdout.strip() else ""


def check_codec(seen: dict[str, Any], codec: str, encoding: str) -> None:
    assert "CRITICAL" not in seen["client_stderr"], seen["client_stderr"]
    # What GStreamer offered and what ingest answered: one bundle, rtcp-mux, and ingest the DTLS
    # client (active) facing webrtcbin's own RSA certificate, the case that used to fail.
    assert "a=group:BUNDLE video0 audio1" in seen["offer"]
    assert seen["offer"].count("a=setup:actpass") == 2 and "a=rtcp-mux-only" in seen["offer"]
    assert any(line.endswith(f" {encoding}/90000") for line in seen["offer"])
    assert "a=group:BUNDLE video0 audio1" in seen["answer"]
    assert seen["answer"].count("a=setup:active") == 2
    assert any(line.endswith(f" {encoding}/90000") for line in seen["answer"])
    assert seen["certificate"] == "RSA-2048"
    assert_published(seen, encoding, TONE_HZ[codec])
    # GStreamer's own count: two RTP streams (video, audio) sent.
    assert len(seen["sent"]) == 2 and all(s["packets"] > 40 for s in seen["sent"])


async def test_gstreamer_webrtcbin_publishes_vp8_and_h264(tmp_path: Path) -> None:
    """webrtcbin publishes VP8 then H.264 (with Opus) to ingest; DELETE takes each offline.

    Where the packets go: like the browser test, the whole scene runs in a network namespace
    of its own (`unshare -n`) whose only interface is its own loopback: a nats-server, the
    ingest service (ICE on 127.0.0.1), the GStreamer publisher (`tests/support/gst_whip.py`,
    gathering on 127.0.0.1 only) and the gRPC subscriber, all in
    `tests/support/gst_whip_scene.py`. This test reads what the driver saw (a JSON file).
    """
    if not unshare_works():
        pytest.skip("needs `unshare -n` (root or user namespaces) for a loopback-only publisher")
    problem = gstreamer_ready()
    assert not problem, f"GStreamer webrtcbin not usable ({problem}): run `make setup`"
    out = tmp_path / "gst_whip.json"
    done, seen = await run_scene("tests.support.gst_whip_scene", out, timeout=200)
    assert done.returncode == 0 and "error" not in seen, (
        seen.get("error"),
        {codec: seen.get(codec, {}).get("client_stderr") for codec in ("vp8", "h264")},
        done.stderr.decode(errors="replace")[-3000:],
    )
    check_codec(seen["vp8"], "vp8", "VP8")
    check_codec(seen["h264"], "h264", "H264")
