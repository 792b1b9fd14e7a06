"""SRT returns without a network: validation, passphrases, the timeline, the relay's argv."""

from __future__ import annotations

import argparse
import os
import stat
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from services.common import errors
from services.common.credentials import srt_passphrase, with_new_token
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import ingest_pb2, mixer_pb2
from services.common.settings import load_settings
from services.distribution.ctl import build_command, register
from services.distribution.distributor import validate_spec
from services.distribution.settings import DistributionSettings
from services.distribution.sinks import SinkRejected, srt_secrets, srt_sink, srt_target
from services.distribution.srt_return import (
    MAX_LAG_S,
    TIMELINE,
    ArrivalClock,
    Returns,
    exchange_size,
    return_templates,
)

SRT = dist.OUTPUT_KIND_SRT


class Mirror:
    """A KvMirror's reads, from a dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, key: str) -> Any:
        return self.values.get(key)


def returns(secret: str = "s3cret", **stations: ingest_pb2.Station) -> Returns:
    settings = load_settings(
        DistributionSettings, "distribution", environ={}, srt_secret=secret, return_height=540
    )
    productions = Mirror({"qh": mixer_pb2.Production(id="qh", fps=30)})
    return Returns(None, Mirror(stations), productions, settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (
            dist.OutputSpec(id="a", kind=dist.OUTPUT_KIND_RTMP, url="rtmp://h/app", station="gz"),
            "add.output.station",
        ),
        (dist.OutputSpec(id="a", kind=SRT, url="srt://h:9000", picture="x"), "add.output.picture"),
        (
            dist.OutputSpec(id="a", kind=SRT, url="srt://h:9000", station="gz", picture="preview"),
            "add.output.picture",
        ),
        (
            dist.OutputSpec(id="a", kind=dist.OUTPUT_KIND_HLS, srt_mode=dist.SRT_MODE_LISTENER),
            "add.output.srt_mode",
        ),
        (dist.OutputSpec(id="a", kind=SRT, url="srt://h:9000", srt_mode=7), "add.output.srt_mode"),
        (
            dist.OutputSpec(
                id="a", kind=SRT, url="srt://0.0.0.0", station="gz", srt_mode=dist.SRT_MODE_LISTENER
            ),
            "add.output.url",
        ),
    ],
)
def test_invalid_returns_name_the_field(spec: dist.OutputSpec, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_spec(spec, {})
    assert caught.value.field == field


def test_valid_returns_pass() -> None:
    for mode in (dist.SRT_MODE_UNSPECIFIED, dist.SRT_MODE_CALLER, dist.SRT_MODE_LISTENER):
        for picture in ("", "program", "clean"):
            spec = dist.OutputSpec(
                id="gz-return",
                kind=SRT,
                url="srt://0.0.0.0:9100",
                station="gz",
                srt_mode=mode,
                picture=picture,
            )
            validate_spec(spec, {})
    # A program push may listen too.
    validate_spec(
        dist.OutputSpec(id="p", kind=SRT, url="srt://h:9000", srt_mode=dist.SRT_MODE_LISTENER), {}
    )


def test_the_station_must_exist_and_not_be_revoked() -> None:
    gz, _ = with_new_token(ingest_pb2.Station(id="gz"))
    sz, _ = with_new_token(ingest_pb2.Station(id="sz", revoked=True))
    r = returns(gz=gz, sz=sz)
    r.validate(dist.OutputSpec(station="gz"))
    with pytest.raises(errors.NotFound) as missing:
        r.validate(dist.OutputSpec(station="fs"))
    assert missing.value.field == "add.output.station"
    with pytest.raises(errors.InvalidArgument) as revoked:
        r.validate(dist.OutputSpec(station="sz"))
    assert "revoked" in revoked.value.message
    with pytest.raises(errors.InvalidArgument):
        r.validate(dist.OutputSpec(station="Not An Id"))


def test_the_passphrase_is_the_stations_own_unless_given() -> None:
    gz, _ = with_new_token(ingest_pb2.Station(id="gz"))
    r = returns(gz=gz)
    spec = dist.OutputSpec(production="qh", id="ret", station="gz")
    assert r.passphrase(spec) == srt_passphrase("s3cret", gz) != ""
    spec.passphrase = "given-passphrase"
    assert r.passphrase(spec) == "given-passphrase"


@pytest.mark.parametrize(
    ("secret", "revoked", "why"),
    [("", False, "no SRT secret"), ("s3cret", True, "revoked")],
)
def test_without_a_passphrase_the_return_fails_with_the_reason(
    secret: str, revoked: bool, why: str
) -> None:
    gz, _ = with_new_token(ingest_pb2.Station(id="gz", revoked=revoked))
    r = returns(secret, gz=gz)
    with pytest.raises(SinkRejected, match=why):
        r.passphrase(dist.OutputSpec(production="qh", id="ret", station="gz"))
    assert returns(secret).refusal("gone") == "station gone no longer exists"


def test_a_return_takes_the_exchange_rendition_and_the_mix_minus_in_aac() -> None:
    gz, _ = with_new_token(ingest_pb2.Station(id="gz"))
    video, audio = returns(gz=gz).keys(
        dist.OutputSpec(production="qh", station="gz", picture="clean")
    )
    assert (video.handle, video.width, video.height, video.fps) == ("prod/qh/clean", 960, 540, 30)
    assert (audio.handle, audio.codec) == ("prod/qh/mixminus/gz", "aac")
    video, _ = returns(gz=gz).keys(dist.OutputSpec(production="other", station="gz"))
    assert (video.handle, video.fps) == ("prod/other/program", 25)  # no such production: 25
    assert [exchange_size(h) for h in (360, 540, 720)] == [(640, 360), (960, 540), (1280, 720)]


def test_templates_carry_the_aac_config_the_mpegts_muxer_writes_adts_from() -> None:
    templates = return_templates(640, 360, 25)
    assert templates.video.codec_context.name in ("libx264", "h264")
    audio = templates.audio.codec_context
    assert (audio.sample_rate, audio.channels) == (48_000, 2)
    # AudioSpecificConfig: AAC LC (2), 48 kHz (index 3), two channels.
    config = audio.extradata
    assert config is not None and config[0] >> 3 == 2
    assert ((config[0] & 7) << 1 | config[1] >> 7) == 3 and (config[1] >> 3) & 15 == 2


def test_the_timeline_follows_a_stream_and_anchors_anew_after_a_pause() -> None:
    clock = ArrivalClock(origin=100.0)
    audio = Fraction(1, 48_000)
    # First packet at 0.5 s after the origin, whatever the stream's own timestamp.
    assert clock(-1024, audio, 100.5) == round(0.5 / TIMELINE)
    # Then the stream's own spacing, not the arrival jitter.
    assert clock(0, audio, 100.55) == round((0.5 + 1024 / 48_000) / TIMELINE)
    assert clock(1024, audio, 100.51) == round((0.5 + 2048 / 48_000) / TIMELINE)
    # A pause longer than MAX_LAG_S: anchored where the next packet arrives.
    later = 100.5 + 2048 / 48_000 + MAX_LAG_S + 1.0
    assert clock(2048, audio, later) == round((later - 100.0) / TIMELINE)
    assert clock.anchors == 2
    # Never backwards, never the same tick twice.
    first = clock(2048, audio, later)
    assert first == round((later - 100.0) / TIMELINE) + 1


def test_the_relay_url_has_no_passphrase_and_listeners_have_no_connect_timeout() -> None:
    caller = srt_target("srt://decoder.example:9000", 5.0)
    assert caller.startswith("srt://decoder.example:9000?mode=caller&")
    assert "connect_timeout=5000" in caller and "passphrase" not in caller
    listener = srt_target("srt://0.0.0.0:9100", 5.0, listener=True)
    assert listener.startswith("srt://0.0.0.0:9100?mode=listener&")
    assert "connect_timeout" not in listener
    assert srt_secrets("p" * 32) == {"passphrase": "p" * 32, "pbkeylen": "16"}
    assert srt_secrets("") == {}


def test_the_relay_reads_the_passphrase_from_a_pipe_not_its_argv(tmp_path: Path) -> None:
    # A stand-in for ffmpeg: records its argv and what its preset pipe holds, then exits.
    fake = tmp_path / "ffmpeg"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/argv\n'
        'while [ "$1" != "-fpre" ]; do shift; done\n'
        f'cat "$2" > {tmp_path}/preset\n'
        "cat > /dev/null\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    settings = load_settings(DistributionSettings, "distribution", environ={}, ffmpeg=str(fake))
    sink = srt_sink("srt://127.0.0.1:9100", "p" * 32, dist.SRT_MODE_LISTENER, settings)
    templates = return_templates(640, 360, 25)
    before = set(os.listdir("/proc/self/fd"))
    sink.open(templates)
    try:
        assert sink.proc is not None
        pid = sink.proc.pid
        for _ in range(100):
            if (tmp_path / "preset").exists() and (tmp_path / "preset").read_text():
                break
            time.sleep(0.05)
        argv = (tmp_path / "argv").read_text()
        assert "p" * 32 not in argv and "-fpre /dev/fd/" in argv
        assert "srt://127.0.0.1:9100?mode=listener" in argv
        assert (tmp_path / "preset").read_text() == f"passphrase={'p' * 32}\npbkeylen=16\n"
        assert ("p" * 32).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert sink.awaits_caller and not sink.connected
    finally:
        sink.close()
    assert set(os.listdir("/proc/self/fd")) <= before  # the parent kept no end of the pipe


def test_ctl_adds_a_listening_return_to_a_station() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="verb"))
    args = parser.parse_args(
        [
            "output",
            "add",
            "gz-return",
            "--prod",
            "qh",
            "--kind",
            "srt",
            "--station",
            "gz",
            "--listen",
            "--url",
            "srt://0.0.0.0:9100",
            "--picture",
            "clean",
        ]
    )
    output = build_command(args).add.output
    assert (output.station, output.srt_mode, output.picture) == (
        "gz",
        dist.SRT_MODE_LISTENER,
        "clean",
    )
    assert output.kind == SRT and output.url == "srt://0.0.0.0:9100"
