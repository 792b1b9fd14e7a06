"""Ingest's `exchange_url`: where the station page finds distribution, and what its CSP allows."""

from __future__ import annotations

import pytest

from services.common.settings import SettingsError, load_settings
from services.ingest.reporter import content_security_policy
from services.ingest.settings import IngestSettings


def settings(exchange_url: str) -> IngestSettings:
    return load_settings(
        IngestSettings, "ingest", environ={"BAYCAST_INGEST_EXCHANGE_URL": exchange_url}
    )


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("", ""),
        ("https://exchange.example.org", "https://exchange.example.org"),
        ("https://Exchange.Example.org:8443/", "https://exchange.example.org:8443"),
        ("http://10.0.0.5:8104/behind/a/prefix", "http://10.0.0.5:8104"),
        ("http://[::1]:8104", "http://[::1]:8104"),
    ],
)
def test_origin_of_the_exchange(url: str, origin: str) -> None:
    assert settings(url).exchange_origin == origin


@pytest.mark.parametrize(
    "url",
    [
        "exchange.example.org",
        "ftp://exchange.example.org",
        "https://",
        "https://exchange.example.org/?a=1",
        "https://exchange.example.org/#x",
        "https://user:pw@exchange.example.org",
        "https://exchange.example.org:port",
        "https://exchange.example.org; script-src *",
        "https://exchange.example.org'",
    ],
)
def test_what_is_not_an_exchange_url_stops_the_service(url: str) -> None:
    with pytest.raises(SettingsError, match="BAYCAST_INGEST_EXCHANGE_URL"):
        settings(url)


def test_policy_allows_exactly_self_and_the_exchange() -> None:
    directives = dict(
        d.strip().split(" ", 1) for d in content_security_policy("https://x.example").split(";")
    )
    assert directives["connect-src"] == "'self' https://x.example"
    assert directives["media-src"] == "'self' https://x.example blob: mediastream:"
    assert directives["script-src"] == "'self'"
    assert "x.example" not in content_security_policy("")
