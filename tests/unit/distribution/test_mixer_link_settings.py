"""What distribution asks of a mixer on another host for its pictures (ADR 0025)."""

from __future__ import annotations

import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.common.settings import SettingsError, load_settings
from services.distribution.settings import DistributionSettings

H264 = media_pb2.VIDEO_CODEC_H264


def _settings(**environ: str) -> DistributionSettings:
    return load_settings(DistributionSettings, "distribution", environ=environ)


def test_by_default_pictures_come_compressed_the_program_at_the_mixers_default_rate() -> None:
    settings = _settings()
    assert settings.mixer_compression(program=True) == media_pb2.Compression(codec=H264)
    assert settings.mixer_compression() == media_pb2.Compression(codec=H264)


def test_the_programs_rate_is_a_setting_and_the_others_keep_their_sizes_default() -> None:
    settings = _settings(BAYCAST_DISTRIBUTION_PROGRAM_LINK_KBPS="12000")
    assert settings.mixer_compression(program=True) == media_pb2.Compression(
        codec=H264, bitrate_kbps=12000
    )
    assert settings.mixer_compression() == media_pb2.Compression(codec=H264)


def test_raw_asks_for_no_compression() -> None:
    settings = _settings(BAYCAST_DISTRIBUTION_MIXER_LINK="raw")
    assert settings.mixer_compression(program=True) is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BAYCAST_DISTRIBUTION_MIXER_LINK", "vp8"),
        ("BAYCAST_DISTRIBUTION_PROGRAM_LINK_KBPS", "100"),
        ("BAYCAST_DISTRIBUTION_PROGRAM_LINK_KBPS", "90000"),
    ],
)
def test_bad_link_settings_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        _settings(**{variable: value})
