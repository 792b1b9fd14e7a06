"""What a graphics data binding may read: hosts of an allow-list, files of one folder.

A bound field goes on air, so a binding must not read what the platform keeps to itself (the
operators' endpoints file, a service's metrics, the cloud's instance metadata). The rules:

* a URL is http(s) and names a host of the allow-list: `scores.example.com` (that host),
  `*.feeds.example.com` (its subdomains), either with `:port`; without a port, only the scheme's
  default port. Nothing is allowed by default.
* every address the host resolves to is public, unless it lies in one of the allowed networks:
  loopback, private, link-local (169.254.0.0/16, fe80::/10), unique-local (fc00::/7) and other
  non-public addresses are refused; a cloud metadata address only when a network names exactly
  that address. The check runs on the address the connection then goes to (data_reader.py), so a
  name that resolves elsewhere a second time (DNS rebinding) gains nothing.
* a file resolves, symbolic links and `..` followed, to a path inside the data folder; a relative
  path is taken from that folder.

A refusal is a `BindingRefused` that names its rule and the target:

    errors.PermissionDenied
    └── BindingRefused    rule: one of RULES
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from yarl import URL

from services.common import errors

if TYPE_CHECKING:
    from services.graphics.settings import GraphicsSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HOSTS_VAR = "BAYCAST_GRAPHICS_BINDING_HOSTS"
NETWORKS_VAR = "BAYCAST_GRAPHICS_BINDING_NETWORKS"
DATA_DIR_VAR = "BAYCAST_GRAPHICS_BINDING_DATA_DIR"
MAX_BYTES_VAR = "BAYCAST_GRAPHICS_BINDING_MAX_BYTES"

# The rules a refusal names (a bounded set: they label a metric).
RULE_SCHEME = "scheme"
RULE_HOST = "host_not_allowed"
RULE_REDIRECT = "redirect"
RULE_OUTSIDE = "outside_data_dir"
RULE_NOT_A_FILE = "not_a_file"
RULE_TOO_LARGE = "too_large"
ADDRESS_RULES = {
    "metadata": "address_metadata",
    "loopback": "address_loopback",
    "link-local": "address_link_local",
    "unique-local": "address_unique_local",
    "private": "address_private",
    "reserved": "address_reserved",
}
_KIND_TEXT = {
    "metadata": "a cloud metadata address",
    "loopback": "a loopback address (this host)",
    "link-local": "a link-local address",
    "unique-local": "a unique-local address",
    "private": "a private address",
    "reserved": "a non-public address",
}
RULES = (
    RULE_SCHEME,
    RULE_HOST,
    RULE_REDIRECT,
    RULE_OUTSIDE,
    RULE_NOT_A_FILE,
    RULE_TOO_LARGE,
    *ADDRESS_RULES.values(),
)

# Instance metadata and host agents of the clouds: they hand out credentials, so an allowed
# network wider than the address itself does not open them.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure host agent (a public address)
    )
)
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fec0::/10")
)  # RFC 1918, carrier-grade NAT, IPv6 site-local
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class BindingRefused(errors.PermissionDenied):
    """A binding's source is outside what the data policy allows."""

    def __init__(self, rule: str, target: str, reason: str, *, field: str = "") -> None:
        super().__init__(f"binding refused ({rule}): {reason}", field=field)
        self.rule = rule
        self.target = target
        self.reason = reason

    def at(self, field: str) -> BindingRefused:
        """The same refusal, naming the command field it is about."""
        return BindingRefused(self.rule, self.target, self.reason, field=field)


def address_kind(ip: IPAddress) -> str | None:
    """Which kind of non-public address `ip` is, or None for a public one.

    An IPv4 address carried in IPv6 (mapped, 6to4, NAT64) is judged as that IPv4 address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_kind(embedded)
    if ip in METADATA_ADDRESSES:
        return "metadata"
    if ip.is_loopback or ip.is_unspecified:  # 0.0.0.0 and :: reach this host
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        return "unique-local"
    if any(ip in n for n in _PRIVATE if n.version == ip.version):
        return "private"
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        return "reserved"
    return None


@dataclass(frozen=True)
class HostRule:
    """One entry of the allow-list: a host (or, with `wildcard`, its subdomains) and a port."""

    host: str  # lower case, no trailing dot; an IP address in its compressed form
    wildcard: bool = False
    port: int | None = None  # None: the scheme's default port

    @classmethod
    def parse(cls, text: str) -> HostRule:
        """`host`, `host:port`, `*.suffix`, `*.suffix:port`, `[v6]:port`; ValueError if not."""
        entry = text.strip().lower()
        host, port = entry, None
        if entry.startswith("["):
            host, sep, rest = entry[1:].partition("]")
            if not sep or (rest and not rest.startswith(":")):
                raise ValueError(f"{text!r} is not [address]:port")
            port = _port(rest[1:], text) if rest else None
        elif entry.count(":") == 1:
            host, _, raw = entry.partition(":")
            port = _port(raw, text)
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        host = host.rstrip(".")
        literal = _ip(host)
        if literal is not None:
            if wildcard:
                raise ValueError(f"{text!r}: an address cannot have subdomains")
            return cls(str(literal), False, port)
        labels = host.split(".")
        if not host or not all(_LABEL.match(label) for label in labels):
            raise ValueError(f"{text!r} is not a host name, *.suffix or address")
        if wildcard and len(labels) < 2:
            raise ValueError(f"{text!r} is too wide: name a domain, as *.example.com")
        return cls(host, wildcard, port)

    def matches(self, host: str, port: int, default_port: int) -> bool:
        if port != (default_port if self.port is None else self.port):
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


def _port(raw: str, text: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{text!r} has no valid port")
    return int(raw)


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def parse_hosts(entries: tuple[str, ...]) -> tuple[HostRule, ...]:
    return tuple(HostRule.parse(e) for e in entries)


def parse_networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=True) for e in entries)


@dataclass(frozen=True)
class DataPolicy:
    """The allow-list, the allowed networks and the data folder, with the checks they make."""

    hosts: tuple[HostRule, ...]
    networks: tuple[IPNetwork, ...]
    data_dir: str
    max_bytes: int
    timeout_s: float

    @classmethod
    def from_settings(cls, s: GraphicsSettings) -> DataPolicy:
        return cls(
            hosts=parse_hosts(s.binding_hosts),
            networks=parse_networks(s.binding_networks),
            data_dir=s.binding_data_dir,
            max_bytes=s.binding_max_bytes,
            timeout_s=s.binding_timeout_s,
        )

    def check_url(self, url: str | URL) -> URL:
        """The URL parsed, if its scheme, host and port are allowed (and, for an address, that
        address); BindingRefused if not, ValueError if it does not parse."""
        parsed = url if isinstance(url, URL) else URL(url)
        target = str(parsed)
        default_port = _DEFAULT_PORTS.get(parsed.scheme)
        if default_port is None:
            raise BindingRefused(RULE_SCHEME, target, f"{target!r} is not http:// or https://")
        host = (parsed.raw_host or "").lower().rstrip(".")
        literal = _ip(host)
        if literal is not None:
            host = str(literal)
        port = parsed.port or default_port
        if not any(rule.matches(host, port, default_port) for rule in self.hosts):
            raise BindingRefused(
                RULE_HOST,
                target,
                f"host {host}:{port} of {target!r} is not in the allow-list ({HOSTS_VAR})",
            )
        if literal is not None:
            self.check_address(str(literal), target)
        return parsed

    def check_address(self, address: str, target: str) -> None:
        """Refuse a non-public address no allowed network holds (metadata: only by name)."""
        ip = _ip(address)
        if ip is None:
            raise BindingRefused(ADDRESS_RULES["reserved"], target, f"{address!r} is no address")
        kind = address_kind(ip)
        if kind is None:
            return
        candidates = {ip}
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.add(ip.ipv4_mapped)
        if kind == "metadata":
            allowed = any(
                n.num_addresses == 1 and n.network_address in candidates for n in self.networks
            )
            how = f"allowed only by naming it alone in {NETWORKS_VAR}"
        else:
            allowed = any(
                a in n for a in candidates for n in self.networks if a.version == n.version
            )
            how = f"outside the allowed networks ({NETWORKS_VAR})"
        if not allowed:
            raise BindingRefused(
                ADDRESS_RULES[kind],
                target,
                f"{target!r} leads to {ip}, {_KIND_TEXT[kind]}, {how}",
            )

    def resolve_file(self, path: str) -> Path:
        """The real path of a file binding (links and `..` resolved) if it lies in the folder."""
        if not path or "\0" in path:
            raise BindingRefused(RULE_NOT_A_FILE, path, f"{path!r} is not a file path")
        root = os.path.realpath(self.data_dir)
        real = os.path.realpath(os.path.join(root, path))
        if real == root:
            raise BindingRefused(RULE_NOT_A_FILE, path, f"{path!r} is the data folder itself")
        if os.path.commonpath([root, real]) != root:
            raise BindingRefused(
                RULE_OUTSIDE,
                path,
                f"file {path!r} resolves to {real!r}, outside the data folder {root!r} "
                f"({DATA_DIR_VAR})",
            )
        return Path(real)

    def check_opened(self, fd: int, path: str) -> None:
        """Where an open file really is (Linux): a folder on its path swapped for a link between
        `resolve_file` and the open would show here."""
        try:
            real = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return  # no /proc: resolve_file's check stands alone
        root = os.path.realpath(self.data_dir)
        if os.path.commonpath([root, real]) != root:
            raise BindingRefused(
                RULE_OUTSIDE, path, f"file {path!r} opened as {real!r}, outside {root!r}"
            )
