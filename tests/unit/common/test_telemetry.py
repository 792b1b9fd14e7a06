from __future__ import annotations

import io
import json

import structlog

from services.common.telemetry import configure_logging


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
