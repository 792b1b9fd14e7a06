from __future__ import annotations

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.settings import SettingsError, load_settings
from services.distribution.distributor import validate_spec
from services.distribution.settings import DistributionSettings

RTMP = dist.OUTPUT_KIND_RTMP
SRT = dist.OUTPUT_KIND_SRT


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (dist.OutputSpec(id="Bad Id", kind=RTMP, url="rtmp://h/app"), "add.output.id"),
        (dist.OutputSpec(id="a", url="rtmp://h/app"), "add.output.kind"),
        (dist.OutputSpec(id="a", kind=RTMP, url="http://h/app"), "add.output.url"),
        (dist.OutputSpec(id="a", kind=RTMP, url="rtmp://h"), "add.output.url"),
        (
            dist.OutputSpec(id="a", kind=dist.OUTPUT_KIND_RTMPS, url="rtmp://h/app"),
            "add.output.url",
        ),
        (dist.OutputSpec(id="a", kind=SRT, url="srt://h"), "add.output.url"),
        (dist.OutputSpec(id="a", kind=SRT, url="srt://h:9000?passphrase=x"), "add.output.url"),
        (
            dist.OutputSpec(id="a", kind=SRT, url="srt://h:9000", passphrase="short"),
            "add.output.passphrase",
        ),
        (dist.OutputSpec(id="a", kind=dist.OUTPUT_KIND_HLS, url="rtmp://h/app"), "add.output.url"),
    ],
)
def test_invalid_specs_name_the_field(spec: dist.OutputSpec, field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        validate_spec(spec, {})
    assert caught.value.field == field


def test_valid_specs_pass() -> None:
    validate_spec(dist.OutputSpec(id="xinhua", kind=RTMP, url="rtmp://h/live", stream_key="k"), {})
    validate_spec(
        dist.OutputSpec(id="s-1", kind=SRT, url="srt://h:9000", passphrase="0123456789"), {}
    )
    validate_spec(dist.OutputSpec(id="web", kind=dist.OUTPUT_KIND_HLS), {})
    validate_spec(dist.OutputSpec(id="rec", kind=dist.OUTPUT_KIND_RECORDING), {})


@pytest.mark.parametrize(
    "env",
    [
        {"BAYCAST_DISTRIBUTION_FPS": "7"},
        {"BAYCAST_DISTRIBUTION_WIDTH": "641", "BAYCAST_DISTRIBUTION_HEIGHT": "360"},
        {"BAYCAST_DISTRIBUTION_WIDTH": "640"},
        {"BAYCAST_DISTRIBUTION_OUTPUT_QUEUE_PACKETS": "2"},
        {
            "BAYCAST_DISTRIBUTION_LEASE_SECONDS": "1",
            "BAYCAST_DISTRIBUTION_LEASE_RENEW_SECONDS": "1",
        },
        {"BAYCAST_DISTRIBUTION_LEASE_RENEW_SECONDS": "0"},
        {"BAYCAST_DISTRIBUTION_MAX_PRODUCTIONS": "-1"},
    ],
)
def test_bad_settings_stop_the_service(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_settings(DistributionSettings, "distribution", environ=env)


def test_settings_defaults() -> None:
    settings = load_settings(DistributionSettings, "distribution", environ={})
    assert settings.http_addr == "127.0.0.1:8104"
    assert settings.keyframe_interval_frames == 50
    assert (settings.lease_seconds, settings.lease_renew_seconds) == (2.0, 0.5)
    assert settings.max_productions == 0  # no limit
