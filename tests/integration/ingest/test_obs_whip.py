"""OBS Studio 30+'s way of publishing over WHIP (libdatachannel, H.264 + Opus, the offer posted
at once) reaches ingest, and a gRPC subscriber sees its bars, its moving ball and its tone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.foreign_whip_scene import assert_published
from tests.support.loopback_scene import run_scene, unshare_works
from tests.support.obs_whip_scene import OBS_PYTHON, TONE_HZ

pytestmark = pytest.mark.timeout(150)


async def test_libdatachannel_publishes_like_obs(tmp_path: Path) -> None:
    """tests/support/obs_whip.py goes live, is watched for two seconds, then DELETEs.

    Where the packets go: the scene (`tests/support/obs_whip_scene.py`: a nats-server, ingest
    with ICE on 127.0.0.1, the publisher bound to 127.0.0.1, the subscriber) runs in a network
    namespace of its own whose only interface is its own loopback; this test reads what it saw.
    """
    if not unshare_works():
        pytest.skip("needs `unshare -n` (root or user namespaces) for a loopback-only publisher")
    assert OBS_PYTHON.exists(), f"{OBS_PYTHON} is missing: run `make setup`"
    out = tmp_path / "obs_whip.json"
    done, seen = await run_scene("tests.support.obs_whip_scene", out, timeout=120)
    assert done.returncode == 0 and "error" not in seen, (
        seen.get("error"),
        seen.get("client_stderr"),
        done.stderr.decode(errors="replace")[-3000:],
    )
    assert seen["client_stderr"] == ""
    # What OBS offers: one bundle of audio (mid 0, Opus 111, stereo) and video (mid 1, H.264 96,
    # packetization-mode 1), actpass; ingest answers as the DTLS client, on the same bundle.
    assert "a=group:BUNDLE 0 1" in seen["offer"] and "a=group:BUNDLE 0 1" in seen["answer"]
    assert "a=rtpmap:111 opus/48000/2" in seen["offer"]
    assert "a=rtpmap:96 H264/90000" in seen["offer"]
    assert any("packetization-mode=1" in line for line in seen["offer"] if "fmtp:96" in line)
    assert seen["offer"].count("a=setup:actpass") == 2
    assert seen["answer"].count("a=setup:active") == 2
    assert_published(seen, "H264", TONE_HZ)
    # The publisher's own count, for the seconds it ran: 25 pictures and 50 Opus frames a second.
    sent = seen["sent"]
    assert sent["video_frames"] >= 50 and sent["audio_frames"] >= 100
    assert abs(sent["audio_frames"] - 2 * sent["video_frames"]) <= 2
