"""TLS settings: refused at start-up with the variable's name when incomplete or unreadable; the
local CA's certificate; nats-server's tls block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from services.common.nats_accounts import server_config
from services.common.settings import ServiceSettings, SettingsError, load_settings
from services.common.tls import INTERNAL_NAME, InternalTls, TlsError
from services.up.local_ca import make_local_tls


def test_https_needs_its_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="BAYCAST_HTTPS_ADDR needs BAYCAST_HTTPS_CERT_FILE"):
        load_settings(ServiceSettings, "ingest", {"BAYCAST_HTTPS_ADDR": "127.0.0.1:8441"})
    with pytest.raises(SettingsError, match="need BAYCAST_HTTPS_ADDR"):
        load_settings(ServiceSettings, "ingest", {"BAYCAST_HTTPS_CERT_FILE": "/x.pem"})
    missing = str(tmp_path / "missing.pem")
    env = {
        "BAYCAST_HTTPS_ADDR": "127.0.0.1:8441",
        "BAYCAST_HTTPS_CERT_FILE": missing,
        "BAYCAST_HTTPS_KEY_FILE": missing,
    }
    with pytest.raises(SettingsError, match=f"BAYCAST_HTTPS_CERT_FILE: cannot read {missing}"):
        load_settings(ServiceSettings, "ingest", env)


def test_internal_identity_is_checked_whole(tmp_path: Path) -> None:
    tls = make_local_tls(tmp_path)
    InternalTls(str(tls.ca_file), str(tls.cert_file), str(tls.key_file)).check()
    with pytest.raises(TlsError, match="needs its key"):
        InternalTls(str(tls.ca_file), str(tls.cert_file)).check()
    with pytest.raises(TlsError, match="needs the CA"):
        InternalTls("", str(tls.cert_file), str(tls.key_file)).check()
    with pytest.raises(SettingsError, match=r"BAYCAST_TLS_\*: cannot read the CA file"):
        load_settings(ServiceSettings, "mixer", {"BAYCAST_TLS_CA_FILE": str(tmp_path / "nope.pem")})
    assert not InternalTls().enabled and InternalTls().grpc_server_credentials() is None


def test_local_ca_names_and_keeps_its_authority(tmp_path: Path) -> None:
    first = make_local_tls(tmp_path, ["192.0.2.77", "studio.local"])
    chain = x509.load_pem_x509_certificates(first.cert_file.read_bytes())
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = names.get_values_for_type(x509.DNSName)
    ips = [str(a) for a in names.get_values_for_type(x509.IPAddress)]
    assert {"localhost", INTERNAL_NAME, "studio.local"} <= set(dns)
    assert {"127.0.0.1", "192.0.2.77"} <= set(ips)
    assert chain[1].subject == chain[0].issuer  # the chain carries the CA
    assert oct(first.key_file.stat().st_mode & 0o777) == "0o600"
    ca, server = first.ca_file.read_bytes(), first.cert_file.read_bytes()
    second = make_local_tls(tmp_path)
    assert second.ca_file.read_bytes() == ca  # a phone that trusts it keeps trusting it
    assert second.cert_file.read_bytes() != server  # made anew each run


def test_nats_server_config_requires_tls_when_given() -> None:
    tls = InternalTls("/tls/ca.pem", "/tls/server.pem", "/tls/server.key")
    config = json.loads(server_config({"mixer": "p1"}, tls))
    assert config["tls"] == {
        "cert_file": "/tls/server.pem",
        "key_file": "/tls/server.key",
        "ca_file": "/tls/ca.pem",
        "timeout": 2,
    }
    assert "tls" not in json.loads(server_config({"mixer": "p1"}))
