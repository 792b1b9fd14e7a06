"""The data policy of bindings: the allow-list, the address rules, the data folder, the settings,
and the guarded resolver (a stand-in for DNS, no network)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from services.common.settings import SettingsError, load_settings
from services.graphics.data_policy import (
    BindingRefused,
    DataPolicy,
    HostRule,
    address_kind,
    parse_hosts,
    parse_networks,
)
from services.graphics.data_reader import DataReader, GuardedResolver
from services.graphics.settings import GraphicsSettings


def policy(hosts: tuple[str, ...] = (), networks: tuple[str, ...] = (), data_dir: str = "/x"):  # type: ignore[no-untyped-def]
    return DataPolicy(parse_hosts(hosts), parse_networks(networks), data_dir, 1024, 5.0)


def refused_rule(check, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(BindingRefused) as caught:
        check(*args)
    return caught.value.rule


def test_host_rules_parse_and_match() -> None:
    assert HostRule.parse(" Scores.Example.COM. ") == HostRule("scores.example.com", False, None)
    assert HostRule.parse("*.feeds.example.com:8443") == HostRule("feeds.example.com", True, 8443)
    assert HostRule.parse("[::1]:8080") == HostRule("::1", False, 8080)
    assert HostRule.parse("0:0::1") == HostRule("::1", False, None)
    assert HostRule.parse("127.0.0.1:9") == HostRule("127.0.0.1", False, 9)
    for bad in ("*", "*.com", "a b", "x:0", "x:65536", "*.10.0.0.1", "[::1", "-a.example.com"):
        with pytest.raises(ValueError):
            HostRule.parse(bad)
    wild = HostRule.parse("*.example.com")
    assert wild.matches("a.b.example.com", 443, 443)
    assert not wild.matches("example.com", 443, 443)  # the domain itself is not a subdomain
    assert not wild.matches("badexample.com", 443, 443)
    assert not wild.matches("a.example.com", 8080, 443)  # no port: the default one only


def test_urls_must_name_an_allowed_host_scheme_and_port() -> None:
    p = policy(("scores.example.com", "*.feeds.example.com:8443"))
    assert p.check_url("https://SCORES.example.com./x").raw_host == "scores.example.com."
    p.check_url("http://scores.example.com:80/x")
    p.check_url("https://a.feeds.example.com:8443/x")
    assert refused_rule(p.check_url, "http://scores.example.com:8080/x") == "host_not_allowed"
    assert refused_rule(p.check_url, "https://a.feeds.example.com/x") == "host_not_allowed"
    assert refused_rule(p.check_url, "http://evil.example/x") == "host_not_allowed"
    assert refused_rule(p.check_url, "file:///etc/passwd") == "scheme"
    # Nothing is allowed by default.
    assert refused_rule(policy().check_url, "https://scores.example.com/") == "host_not_allowed"


def test_an_address_in_the_url_is_judged_even_when_the_allow_list_names_it() -> None:
    named = policy(("127.0.0.1:8080", "169.254.169.254", "[fe80::1]:80", "10.0.0.5"))
    with pytest.raises(BindingRefused) as caught:
        named.check_url("http://127.0.0.1:8080/feed.json")
    assert caught.value.rule == "address_loopback"
    assert "127.0.0.1" in caught.value.message and "BINDING_NETWORKS" in caught.value.message
    assert refused_rule(named.check_url, "http://169.254.169.254/latest") == "address_metadata"
    assert refused_rule(named.check_url, "http://[fe80::1]/x") == "address_link_local"
    assert refused_rule(named.check_url, "http://10.0.0.5/x") == "address_private"
    opened = policy(("127.0.0.1:8080",), ("127.0.0.0/8",))
    opened.check_url("http://127.0.0.1:8080/feed.json")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("168.63.129.16", "metadata"),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("0.0.0.0", "loopback"),
        ("::1", "loopback"),
        ("::", "loopback"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fd12:3456::1", "unique-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fec0::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4 in IPv6: judged as the IPv4 address
        ("::ffff:169.254.169.254", "metadata"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:7f00:1::", "loopback"),
        ("224.0.0.1", "reserved"),
        ("192.0.2.1", "reserved"),
        ("240.0.0.1", "reserved"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(ipaddress.ip_address(address)) == kind


def test_allowed_networks_open_non_public_addresses_but_metadata_only_by_name() -> None:
    p = policy(networks=("127.0.0.0/8", "169.254.0.0/16", "fd00::/8"))
    p.check_address("127.0.0.1", "t")
    p.check_address("::ffff:127.0.0.1", "t")
    p.check_address("169.254.1.1", "t")
    assert refused_rule(p.check_address, "169.254.169.254", "t") == "address_metadata"
    assert refused_rule(p.check_address, "fd00:ec2::254", "t") == "address_metadata"
    assert refused_rule(p.check_address, "10.0.0.1", "t") == "address_private"
    policy(networks=("169.254.169.254/32",)).check_address("169.254.169.254", "t")
    policy().check_address("8.8.8.8", "t")


def test_files_must_resolve_inside_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    secret = tmp_path / "endpoints.json"
    secret.write_text('{"operator_password": "s3cret"}')
    (data / "score.json").write_text("{}")
    (data / "current.json").symlink_to(data / "score.json")
    (data / "leak.json").symlink_to(secret)
    (data / "sub" / "up").symlink_to(tmp_path)
    p = policy(data_dir=str(data))
    real_data = os.path.realpath(data)
    assert p.resolve_file("score.json") == Path(real_data, "score.json")
    assert p.resolve_file(str(data / "sub" / ".." / "score.json")) == Path(real_data, "score.json")
    assert p.resolve_file("current.json") == Path(real_data, "score.json")  # a link inside
    assert p.resolve_file("not-yet.json") == Path(real_data, "not-yet.json")
    for path in ("../endpoints.json", str(secret), "leak.json", "sub/up/endpoints.json"):
        with pytest.raises(BindingRefused) as caught:
            p.resolve_file(path)
        assert caught.value.rule == "outside_data_dir", path
        assert repr(path) in caught.value.message and real_data in caught.value.message
    assert refused_rule(p.resolve_file, "a\0b") == "not_a_file"
    assert refused_rule(p.resolve_file, "sub/..") == "not_a_file"  # the folder itself


async def test_reading_a_file_refuses_what_is_not_a_regular_file_or_too_large(
    tmp_path: Path,
) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "big.json").write_text("[" + "1," * 600 + "1]")
    (tmp_path / "ok.json").write_text('{"a": 1}')
    reader = DataReader(policy(data_dir=str(tmp_path)))
    try:
        stamp, content = await reader.read_file("ok.json", None)
        assert content == b'{"a": 1}'
        assert await reader.read_file("ok.json", stamp) == (stamp, None)  # unchanged
        for path, rule in (("pipe", "not_a_file"), ("big.json", "too_large")):
            with pytest.raises(BindingRefused) as caught:
                await reader.read_file(path, None)
            assert caught.value.rule == rule
    finally:
        await reader.close()


class StandInDns(AbstractResolver):
    """Answers from a script, one answer per lookup: what a name server under someone else's
    control may do."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers.pop(0)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_refuses_forbidden_answers_each_time_it_is_asked() -> None:
    p = policy(("scores.example.com",))
    guarded = GuardedResolver(p, StandInDns("93.184.216.34", "127.0.0.1", "169.254.169.254"))
    assert [r["host"] for r in await guarded.resolve("scores.example.com", 80)] == ["93.184.216.34"]
    for rule in ("address_loopback", "address_metadata"):  # the name rebound
        with pytest.raises(BindingRefused) as caught:
            await guarded.resolve("scores.example.com", 80)
        assert caught.value.rule == rule


async def test_a_fetch_never_connects_to_a_refused_answer() -> None:
    reader = DataReader(policy(("scores.example.com",)), StandInDns("169.254.169.254"))
    try:
        with pytest.raises(BindingRefused) as caught:
            await reader.fetch("http://scores.example.com/latest/meta-data/", 5.0)
        assert caught.value.rule == "address_metadata"
        assert "169.254.169.254" in caught.value.message
    finally:
        await reader.close()


def test_settings_default_to_nothing_allowed_and_name_a_bad_variable() -> None:
    s = load_settings(GraphicsSettings, "graphics", environ={})
    assert (s.binding_hosts, s.binding_networks, s.binding_data_dir) == (
        (),
        (),
        ".baycast/graphics-data",
    )
    env = {
        "BAYCAST_GRAPHICS_BINDING_HOSTS": "scores.example.com, *.feeds.example.com:8443",
        "BAYCAST_GRAPHICS_BINDING_NETWORKS": "10.0.0.0/8",
    }
    s = load_settings(GraphicsSettings, "graphics", environ=env)
    assert DataPolicy.from_settings(s).hosts == (
        HostRule("scores.example.com"),
        HostRule("feeds.example.com", True, 8443),
    )
    for var, value in (
        ("BAYCAST_GRAPHICS_BINDING_HOSTS", "*.com"),
        ("BAYCAST_GRAPHICS_BINDING_NETWORKS", "10.0.0.1/8"),
        ("BAYCAST_GRAPHICS_BINDING_NETWORKS", "nowhere"),
    ):
        with pytest.raises(SettingsError, match=var):
            load_settings(GraphicsSettings, "graphics", environ={var: value})
