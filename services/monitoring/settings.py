"""Settings of the monitoring service (`BAYCAST_MONITORING_<FIELD>`, then `BAYCAST_<FIELD>`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.gen.baycast.v1 import media_pb2
from services.common.lifecycle import HEARTBEAT_INTERVAL_S
from services.common.settings import ServiceSettings, SettingsError
from services.common.steward import DEFAULT_LEASE_SECONDS, DEFAULT_RENEW_SECONDS
from services.monitoring.confidence import Thresholds
from services.monitoring.health import FORGET_AFTER_S, OUTPUT_RETRYING_ALERT_S

DEFAULTS = Thresholds()
# The low rendition confidence monitoring asks for: enough to see black and freeze, cheap to move.
RENDITION_WIDTH = 320
RENDITION_HEIGHT = 180
RENDITION_FPS = 10
AUDIO_SAMPLE_RATE = 48_000
AUDIO_CHANNELS = 2
DISCOVERY_INTERVAL_S = 1.0
EVALUATE_INTERVAL_S = 0.5


@dataclass(frozen=True)
class MonitoringSettings(ServiceSettings):
    black_luma: float = DEFAULTS.black_luma
    black_after_s: float = DEFAULTS.black_after_s
    frozen_difference: float = DEFAULTS.frozen_difference
    frozen_after_s: float = DEFAULTS.frozen_after_s
    silence_dbfs: float = DEFAULTS.silence_dbfs
    silence_after_s: float = DEFAULTS.silence_after_s
    loudness_target_lufs: float = DEFAULTS.loudness_target_lufs
    loudness_tolerance_lu: float = DEFAULTS.loudness_tolerance_lu
    loudness_after_s: float = DEFAULTS.loudness_after_s
    program_lost_after_s: float = DEFAULTS.lost_after_s
    clear_after_s: float = DEFAULTS.clear_after_s
    rendition_width: int = RENDITION_WIDTH
    rendition_height: int = RENDITION_HEIGHT
    rendition_fps: int = RENDITION_FPS
    audio_sample_rate: int = AUDIO_SAMPLE_RATE
    audio_channels: int = AUDIO_CHANNELS
    # The interval services beat at; an instance is missing after three missed beats.
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    forget_missing_s: float = FORGET_AFTER_S
    output_retrying_alert_s: float = OUTPUT_RETRYING_ALERT_S
    discovery_interval_s: float = DISCOVERY_INTERVAL_S
    evaluate_interval_s: float = EVALUATE_INTERVAL_S
    # The replica on duty for the alerts holds a lease this long unless it renews it
    # (docs/adr/0015): the duty of a replica that died moves after about this long.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # How often a replica renews its lease, or looks whether the duty is free.
    lease_renew_seconds: float = DEFAULT_RENEW_SECONDS

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            black_luma=self.black_luma,
            black_after_s=self.black_after_s,
            frozen_difference=self.frozen_difference,
            frozen_after_s=self.frozen_after_s,
            silence_dbfs=self.silence_dbfs,
            silence_after_s=self.silence_after_s,
            loudness_target_lufs=self.loudness_target_lufs,
            loudness_tolerance_lu=self.loudness_tolerance_lu,
            loudness_after_s=self.loudness_after_s,
            lost_after_s=self.program_lost_after_s,
            clear_after_s=self.clear_after_s,
        )

    @property
    def rendition(self) -> media_pb2.Rendition:
        """What confidence monitoring subscribes to."""
        return media_pb2.Rendition(
            width=self.rendition_width,
            height=self.rendition_height,
            pixel_format=media_pb2.PIXEL_FORMAT_I420,
            fps=self.rendition_fps,
            audio_sample_rate=self.audio_sample_rate,
            audio_channels=self.audio_channels,
        )

    def validate(self) -> None:
        super().validate()
        for name in (
            "black_after_s",
            "frozen_after_s",
            "silence_after_s",
            "loudness_after_s",
            "program_lost_after_s",
            "heartbeat_interval_s",
            "discovery_interval_s",
            "evaluate_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"BAYCAST_MONITORING_{name.upper()} must be positive")
        if not 0 < self.lease_renew_seconds < self.lease_seconds:
            raise SettingsError(
                "BAYCAST_MONITORING_LEASE_RENEW_SECONDS must be positive and below LEASE_SECONDS"
            )
        if self.loudness_tolerance_lu <= 0:
            raise SettingsError("BAYCAST_MONITORING_LOUDNESS_TOLERANCE_LU must be positive")
        if self.audio_channels not in (1, 2):
            raise SettingsError("BAYCAST_MONITORING_AUDIO_CHANNELS must be 1 or 2")
        if self.rendition_width % 2 or self.rendition_height % 2:
            raise SettingsError("BAYCAST_MONITORING_RENDITION_WIDTH/HEIGHT must be even")
