"""GStreamer's WebRTC stack (webrtcbin, what gst-plugins-rs's whipsink is built on) publishes
over WHIP, in VP8 and in H.264, and a gRPC subscriber sees its test pattern and tone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.gst_whip_scene import SYSTEM_PYTHON, TONE_HZ
from tests.support.loopback_scene import run_scene, unshare_works

pytestmark = pytest.mark.timeout(240)
TOLERANCE = 14  # codec error on flat areas, in 8-bit code values
# videotestsrc pattern=smpte100 in BT.601 studio range, left to right: (Y, U, V) from the RGB
# primaries (Y = 16 + 65.481 R + 128.553 G + 24.966 B ...), the bars GStreamer paints.
BARS = {
    "white": (235, 128, 128),
    "yellow": (210, 16, 146),
    "cyan": (170, 166, 16),
    "green": (145, 54, 34),
    "magenta": (106, 202, 222),
    "red": (81, 90, 240),
    "blue": (41, 240, 110),
}


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


def shows_bars(bars: list[list[int]]) -> bool:
    return all(
        max(abs(a - b) for a, b in zip(got, want, strict=True)) <= TOLERANCE
        for want, got in zip(BARS.values(), bars, strict=True)
    )


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
    # Online with the codecs GStreamer encoded.
    assert seen["protocol"] == "whip" and seen["online_after_s"] < 10
    assert seen["video_codec"] == encoding and seen["audio_codec"] == "opus"
    assert seen["state_size"] == [320, 180] and seen["state_fps"] == 25.0
    # Frames at the asked size showing the bars, in their colours, from the first good frame to
    # the last. On a loaded machine the first packets of a stream can be lost: the decoder then
    # conceals a few frames (all zeros) until the keyframe the loss made it ask for arrives.
    assert seen["video_sizes"] == [[320, 180]] and seen["video_frames"] == 50
    good = [shows_bars(bars) for bars in seen["bars"]]
    leading = good.index(True) if True in good else len(good)
    assert leading <= 10, f"{codec}: no frame showed the bars before frame {leading}"
    assert all(good[leading:]), (
        f"{codec}: frames {[i for i, g in enumerate(good) if not g]} lost the bars"
    )
    # Fresh frames 40 ms apart, and the ball under the bars moves.
    # (A frame a loaded machine drops on the way widens the span by one interval, no more.)
    assert seen["pts_step_us"] == 40_000 and 49 * 40_000 <= seen["pts_span_us"] <= 55 * 40_000
    assert len(set(seen["ball_x"])) >= 10 and max(seen["ball_x"]) - min(seen["ball_x"]) > 40
    # The tone, mono 48 kHz as asked, at the publisher's frequency and level (0.3 ≈ -10.5 dBFS).
    assert seen["audio_formats"] == [[48000, 1]] and seen["audio_frames"] == 100
    assert abs(seen["tone_hz"] - TONE_HZ[codec]) < 3
    stats = seen["stats"]
    assert 20 < stats["fps"] < 30 and stats["bitrate_kbps"] > 50
    assert -13 < stats["audio_level_dbfs"] < -8
    assert not (stats["black"] or stats["silent"] or stats["frozen"])
    assert stats["decode_errors"] == 0 or leading > 0  # errors only with a concealed start
    # GStreamer's own count: two RTP streams (video, audio) sent.
    assert len(seen["sent"]) == 2 and all(s["packets"] > 40 for s in seen["sent"])
    # DELETE ended the session: 200, offline with the station's reason.
    assert seen["client_rc"] == 0 and seen["delete_status"] == 200
    assert seen["live_after_delete"] == []
    # Online (updates while online, e.g. a format measured later, may repeat it), then offline.
    states = [s for i, s in enumerate(seen["states"]) if i == 0 or s != seen["states"][i - 1]]
    assert states == [[True, ""], [False, "station ended the session"]]


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
