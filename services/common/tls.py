"""TLS on every hop that leaves a host: HTTPS edges, NATS over TLS, gRPC with mutual TLS.

Two identities, each a pair of PEM files (docs/adr/0019):

- the **edge** certificate (`https_cert_file`, `https_key_file`): what browsers and stations see
  on WHIP, WHEP, the control room's API and the pages. A public name, from a public CA or the
  operator's own (cert-manager in Kubernetes, a local CA under `baycast up --tls`).
- the **internal** certificate (`tls_cert_file`, `tls_key_file`), signed by the platform's CA
  (`tls_ca_file`): a service's identity to its gRPC peers, as server and as client (mutual). Every
  internal certificate names `INTERNAL_NAME`, and a gRPC client checks its peer against that name
  whatever address it dials (a pod's IP changes with every restart; the handle carries the IP).

The CA file is also what a client trusts for the NATS servers and the HTTPS edges, on top of the
system's own roots (a public certificate keeps working).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc

INTERNAL_NAME = "baycast.internal"
# gRPC channel options that check the peer's certificate against INTERNAL_NAME.
INTERNAL_CHANNEL_OPTIONS = (
    ("grpc.ssl_target_name_override", INTERNAL_NAME),
    ("grpc.default_authority", INTERNAL_NAME),
)


class TlsError(ValueError):
    """A certificate, key or CA file is missing or unreadable; the message names it."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting `cert_file` (the chain) with `key_file`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load the certificate {cert_file} with {key_file}: {exc}") from None
    return context


def client_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """A verifying client context: the system's roots plus `ca_file`; with `cert_file`, it also
    presents that certificate (mutual TLS)."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file:
            context.load_verify_locations(ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot load {ca_file or cert_file}: {exc}") from None
    return context


@dataclass(frozen=True)
class InternalTls:
    """The internal identity and the CA: gRPC's credentials and the NATS client's context.

    Empty (the default): plain gRPC, and NATS as the URL's scheme says (`tls://` still verifies
    the server against the system's roots).
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file)

    def check(self) -> None:
        """Every named file is readable, and a certificate comes with its key."""
        if bool(self.cert_file) != bool(self.key_file):
            raise TlsError("an internal certificate needs its key, and a key its certificate")
        if self.cert_file and not self.ca_file:
            raise TlsError("an internal certificate needs the CA that checks its peers")
        for path, what in (
            (self.ca_file, "CA file"),
            (self.cert_file, "certificate"),
            (self.key_file, "key"),
        ):
            if path:
                _read(path, what)

    def nats_context(self) -> ssl.SSLContext | None:
        """The context a NATS client verifies the servers with (None: nats-py's default)."""
        return client_context(self.ca_file) if self.ca_file else None

    def grpc_server_credentials(self) -> grpc.ServerCredentials | None:
        """Mutual TLS: the server presents its certificate and asks each client for one the CA
        signed. None without an internal certificate (plain gRPC)."""
        if not self.cert_file:
            return None
        return grpc.ssl_server_credentials(
            [(_read(self.key_file, "key"), _read(self.cert_file, "certificate"))],
            root_certificates=_read(self.ca_file, "CA file"),
            require_client_auth=True,
        )

    def grpc_channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The client's side of mutual TLS (None: plain gRPC)."""
        if not self.cert_file:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA file"),
            private_key=_read(self.key_file, "key"),
            certificate_chain=_read(self.cert_file, "certificate"),
        )


def http_connector(ca_file: str = "") -> aiohttp.TCPConnector:
    """An aiohttp connector that checks HTTPS servers against the system's roots plus `ca_file`
    (the CA of a `baycast up --tls`, or a private one)."""
    return aiohttp.TCPConnector(ssl=client_context(ca_file) if ca_file else True)
