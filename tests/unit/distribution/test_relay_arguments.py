"""What a relay's command line and environment hold: no stream key, no passphrase, no secret
setting of the service (sinks.py)."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution.distributor import key_out_of_url, validate_spec
from services.distribution.settings import DistributionSettings
from services.distribution.sinks import RelaySink, make_sink, relay_environment, rtmp_target

RTMP, RTMPS = dist.OUTPUT_KIND_RTMP, dist.OUTPUT_KIND_RTMPS
SETTINGS = DistributionSettings(http_addr="127.0.0.1:0", grpc_addr="127.0.0.1:0")


@pytest.mark.parametrize(
    ("url", "key", "target", "app", "playpath"),
    [
        ("rtmp://h:1935/live", "k1", "rtmp://h:1935", "live", "k1"),
        ("rtmp://h/live/", "k1", "rtmp://h", "live", "k1"),
        ("rtmp://h/live/k2", "", "rtmp://h", "live", "k2"),
        ("rtmps://h:443/app/inst", "k3", "rtmps://h:443", "app", "inst/k3"),
        ("rtmp://h/app?auth=x", "k4", "rtmp://h", "app?auth=x", "k4"),
        ("rtmp://h/app", "", "rtmp://h", "app", ""),
    ],
)
def test_rtmp_target_splits_as_ffmpeg_does(
    url: str, key: str, target: str, app: str, playpath: str
) -> None:
    spec = dist.OutputSpec(kind=RTMP, url=url, stream_key=key)
    expected = {"rtmp_app": app} | ({"rtmp_playpath": playpath} if playpath else {})
    assert rtmp_target(spec) == (target, expected)
    sink = make_sink(spec, SETTINGS)
    assert isinstance(sink, RelaySink)
    assert sink.target == target and sink.secret_options == expected
    # Moving a key out of the url changes nothing the server sees.
    moved = dist.OutputSpec(kind=RTMP, url=url, stream_key=key)
    key_out_of_url(moved)
    assert rtmp_target(moved) == (target, expected)
    assert moved.stream_key == playpath and moved.url == f"{target}/{app}"


def test_the_relay_environment_drops_settings_and_secrets() -> None:
    env = relay_environment(
        {
            "PATH": "/usr/bin",
            "LANG": "C.UTF-8",
            "BAYCAST_NATS_URL": "nats://distribution:pw@nats:4222",
            "BAYCAST_SRT_SECRET": "s",
            "AWS_SECRET_ACCESS_KEY": "a",
            "SOME_API_TOKEN": "t",
        }
    )
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8"}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (dist.OutputSpec(id="a", kind=RTMP, url="rtmp://h/app", stream_key="k\nx=y"), "stream_key"),
        (
            dist.OutputSpec(id="a", kind=RTMP, url="rtmp://h/app", stream_key="k" * 513),
            "stream_key",
        ),
        (dist.OutputSpec(id="a", kind=RTMP, url="rtmp://h/app\n-f"), "url"),
        (dist.OutputSpec(id="a", kind=RTMP, url="rtmp://u:p@h/app"), "url"),
        (dist.OutputSpec(id="a", kind=RTMPS, url="rtmps://h/app", stream_key="a b"), "stream_key"),
        (
            dist.OutputSpec(
                id="a",
                kind=dist.OUTPUT_KIND_SRT,
                url="srt://h:9000",
                passphrase="0123456789\nlatency=1",
            ),
            "passphrase",
        ),
    ],
)
def test_what_would_break_out_of_the_preset_is_refused(spec: dist.OutputSpec, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_spec(spec, {})
    assert caught.value.field == f"add.output.{field}"
