"""Monitoring settings from the environment."""

from __future__ import annotations

import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.common.settings import SettingsError, load_settings
from services.monitoring.settings import MonitoringSettings


def test_defaults_are_the_brief() -> None:
    s = load_settings(MonitoringSettings, "monitoring", environ={})
    t = s.thresholds
    assert (t.black_after_s, t.frozen_after_s, t.silence_after_s) == (1.0, 2.0, 2.0)
    assert (t.silence_dbfs, t.loudness_target_lufs, t.loudness_tolerance_lu) == (-60, -23, 2)
    assert s.http_addr == "127.0.0.1:8105" and s.grpc_addr == "127.0.0.1:9105"
    r = s.rendition
    assert (r.width, r.height, r.pixel_format) == (320, 180, media_pb2.PIXEL_FORMAT_I420)
    assert (r.audio_sample_rate, r.audio_channels) == (48_000, 2)


def test_environment_overrides_service_first() -> None:
    s = load_settings(
        MonitoringSettings,
        "monitoring",
        environ={
            "BAYCAST_MONITORING_LOUDNESS_TARGET_LUFS": "-24",
            "BAYCAST_LOUDNESS_TARGET_LUFS": "-16",
            "BAYCAST_BLACK_AFTER_S": "2.5",
        },
    )
    assert s.thresholds.loudness_target_lufs == -24
    assert s.thresholds.black_after_s == 2.5


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("BAYCAST_MONITORING_BLACK_AFTER_S", "0", "BLACK_AFTER_S"),
        ("BAYCAST_MONITORING_LOUDNESS_TOLERANCE_LU", "-1", "LOUDNESS_TOLERANCE_LU"),
        ("BAYCAST_MONITORING_AUDIO_CHANNELS", "6", "AUDIO_CHANNELS"),
        ("BAYCAST_MONITORING_RENDITION_WIDTH", "321", "RENDITION_WIDTH"),
        ("BAYCAST_MONITORING_SILENCE_DBFS", "quiet", "SILENCE_DBFS"),
    ],
)
def test_bad_values_stop_the_service_naming_the_variable(
    var: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(MonitoringSettings, "monitoring", environ={var: value})
