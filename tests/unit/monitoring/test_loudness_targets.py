"""Which target a production's program is judged against."""

from __future__ import annotations

from services.common.gen.baycast.v1 import mixer_pb2
from services.monitoring.loudness_targets import LEVELLED_DEFAULT_LUFS, target_lufs

PLATFORM = -24.0  # a platform set apart from the mixer's default, so the two are told apart


def production(**loudness: object) -> mixer_pb2.Production:
    return mixer_pb2.Production(id="qihang", loudness=mixer_pb2.Loudness(**loudness))


def test_the_production_target_when_its_loudness_control_is_on() -> None:
    assert target_lufs(production(target_lufs=-16.0), PLATFORM) == -16.0
    assert target_lufs(production(enabled=True, target_lufs=-31.0), PLATFORM) == -31.0


def test_the_mixer_default_when_the_production_sets_no_target() -> None:
    assert LEVELLED_DEFAULT_LUFS == -23.0
    assert target_lufs(mixer_pb2.Production(id="qihang"), PLATFORM) == -23.0
    assert target_lufs(production(true_peak_dbtp=-2.0), PLATFORM) == -23.0


def test_the_platform_target_without_loudness_control_or_production() -> None:
    assert target_lufs(production(enabled=False, target_lufs=-16.0), PLATFORM) == PLATFORM
    assert target_lufs(production(enabled=False), PLATFORM) == PLATFORM
    assert target_lufs(None, PLATFORM) == PLATFORM
