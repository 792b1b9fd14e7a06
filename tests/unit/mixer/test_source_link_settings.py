"""What the mixer asks of a source on another host for its boxes' pictures (ADR 0025)."""

from __future__ import annotations

import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.common.settings import SettingsError, load_settings
from services.mixer.settings import MixerSettings


def _settings(**environ: str) -> MixerSettings:
    return load_settings(MixerSettings, "mixer", environ=environ)


def test_sources_come_raw_unless_asked() -> None:
    assert _settings().source_compression() is None
    h264 = _settings(BAYCAST_MIXER_SOURCE_LINK="h264").source_compression()
    assert h264 == media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264)


def test_a_bad_source_link_names_its_variable() -> None:
    with pytest.raises(SettingsError, match="BAYCAST_MIXER_SOURCE_LINK"):
        _settings(BAYCAST_MIXER_SOURCE_LINK="vp8")
