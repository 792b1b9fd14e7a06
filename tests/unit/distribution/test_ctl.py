from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution.ctl import build_command, register, rows


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["output", *argv])


def test_add_reads_the_key_from_a_file_not_the_command_line(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    args = parse(
        "add",
        "xinhua",
        "--prod",
        "qihang",
        "--kind",
        "rtmp",
        "--url",
        "rtmp://h/live",
        "--stream-key-file",
        str(key),
    )
    command = build_command(args)
    assert command.production == "qihang"
    assert command.add.output.stream_key == "s3cret"
    assert command.add.output.kind == dist.OUTPUT_KIND_RTMP and command.add.output.enabled


def test_add_srt_reads_the_passphrase_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAYCAST_SRT_PASSPHRASE", "0123456789ab")
    args = parse(
        "add", "agency", "--prod", "qihang", "--kind", "srt", "--url", "srt://h:9000", "--stopped"
    )
    output = build_command(args).add.output
    assert output.passphrase == "0123456789ab" and not output.enabled and not output.stream_key


def test_recording_options_and_simple_verbs() -> None:
    args = parse(
        "add",
        "rec",
        "--prod",
        "p",
        "--kind",
        "recording",
        "--format",
        "fmp4",
        "--segment-seconds",
        "300",
    )
    output = build_command(args).add.output
    assert output.recording_format == dist.RECORDING_FORMAT_FMP4 and output.segment_seconds == 300
    assert build_command(parse("stop", "rec", "--prod", "p")).stop.id == "rec"
    assert build_command(parse("list", "--prod", "p")).HasField("list")


def test_rows_show_state_names() -> None:
    reply = dist.DistReply(
        outputs=[
            dist.OutputState(
                id="a",
                kind=dist.OUTPUT_KIND_SRT,
                status=dist.OUTPUT_STATUS_RETRYING,
                reason="Connection refused",
            )
        ]
    )
    (row,) = rows(reply)
    assert (row["kind"], row["status"], row["reason"]) == ("srt", "retrying", "Connection refused")
