from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.common.settings import ServiceSettings, SettingsError, load_settings


@dataclass(frozen=True)
class DemoSettings(ServiceSettings):
    max_sessions: int = 20
    ice_hosts: tuple[str, ...] = ("127.0.0.1",)
    public: bool = False


def test_service_prefix_beats_platform_variable_beats_default() -> None:
    env = {
        "BAYCAST_NATS_URL": "nats://bus:4222",
        "BAYCAST_INGEST_NATS_URL": "nats://ingest-bus:4222",
        "BAYCAST_INGEST_MAX_SESSIONS": "7",
        "BAYCAST_ICE_HOSTS": "127.0.0.1, 10.0.0.5",
        "BAYCAST_INGEST_PUBLIC": "yes",
    }
    s = load_settings(DemoSettings, "ingest", environ=env)
    assert s.nats_url == "nats://ingest-bus:4222"
    assert s.max_sessions == 7
    assert s.ice_hosts == ("127.0.0.1", "10.0.0.5")
    assert s.public is True
    assert s.http_addr == "127.0.0.1:8101" and s.grpc_addr == "127.0.0.1:9101"


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="BAYCAST_INGEST_MAX_SESSIONS"):
        load_settings(DemoSettings, "ingest", environ={"BAYCAST_INGEST_MAX_SESSIONS": "many"})
    with pytest.raises(SettingsError, match="BAYCAST_PUBLIC"):
        load_settings(DemoSettings, "ingest", environ={"BAYCAST_PUBLIC": "maybe"})
    with pytest.raises(SettingsError, match="NATS URL"):
        load_settings(DemoSettings, "ingest", environ={"BAYCAST_NATS_URL": "localhost"})
    with pytest.raises(SettingsError, match="host:port"):
        load_settings(DemoSettings, "ingest", environ={"BAYCAST_INGEST_HTTP_ADDR": "8101"})


def test_grpc_endpoint_uses_the_advertised_host() -> None:
    s = load_settings(
        DemoSettings,
        "mixer",
        environ={"BAYCAST_MIXER_GRPC_ADDR": "0.0.0.0:9102", "BAYCAST_ADVERTISE_HOST": "10.1.2.3"},
    )
    assert s.grpc_endpoint == "10.1.2.3:9102"
