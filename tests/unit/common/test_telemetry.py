from __future__ import annotations

import io
import json
import logging

import structlog

from services.common.telemetry import configure_logging, register_secret


def test_json_logs_mask_secrets_and_keep_chinese() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    try:
        structlog.get_logger("t").info(
            "station_added", station="gz", name="广州台", token="s3cr3t", stream_key="live_abc"
        )
        line = json.loads(out.getvalue().strip().splitlines()[-1])
        assert line["name"] == "广州台" and line["station"] == "gz"
        assert line["token"] == "***" and line["stream_key"] == "***"
        assert "s3cr3t" not in out.getvalue() and "live_abc" not in out.getvalue()
    finally:
        configure_logging("console", "warning")


def test_secrets_are_masked_inside_text_and_in_the_libraries_logs() -> None:
    """URL credentials, secret query values, bearer tokens and registered secrets are masked in
    any field of our lines and in a library's standard-library record alike."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    register_secret("k3y-of-the-push")
    try:
        structlog.get_logger("t").warning(
            "push_failed",
            url="rtmp://cdn.example/live/k3y-of-the-push",
            nats="nats://mixer:pw-1234@10.0.0.1:4222",
            srt="srt://h:9000?streamid=abc&passphrase=0123456789ab&latency=200",
            error=RuntimeError("auth: Bearer tok.en_1 refused"),
        )
        logging.getLogger("aiortc.rtcdtlstransport").warning(
            "connect %s with Authorization: Bearer %s", "https://a:b@x/whep?token=t0k", "zz9"
        )
        logging.getLogger("aiortc.rtcdtlstransport").info("below the libraries' level")
        text = out.getvalue()
        ours, theirs = (json.loads(line) for line in text.strip().splitlines())
        assert ours["url"] == "rtmp://cdn.example/live/***"
        assert ours["nats"] == "nats://***@10.0.0.1:4222"
        assert ours["srt"] == "srt://h:9000?streamid=***&passphrase=***&latency=200"
        assert ours["error"] == "auth: Bearer *** refused"
        assert (
            theirs["event"] == "connect https://***@x/whep?token=*** with Authorization: Bearer ***"
        )
        assert (theirs["logger"], theirs["level"]) == ("aiortc.rtcdtlstransport", "warning")
        for secret in ("k3y-of-the-push", "pw-1234", "0123456789ab", "tok.en_1", "t0k", "zz9"):
            assert secret not in text
    finally:
        configure_logging("console", "warning")
