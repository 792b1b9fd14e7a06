"""Which local addresses and ports WebRTC may use: the one place baycast reaches into aioice.

Why this module exists: aioice 0.13 gathers ICE host candidates from
`aioice.ice.get_host_addresses()`, which lists every address of every interface *except*
127.0.0.1, and binds each on a port the kernel picks. baycast needs the opposite in tests (only
127.0.0.1, so no packet leaves loopback) and a fixed address list and UDP port range in clusters
(pods behind a firewall or a LoadBalancer). aioice offers no parameter for either, and aiortc
does not pass one through, so this module replaces that single function, and wraps the
datagram-endpoint bind of `Connection.get_component_candidates` so host sockets land in the
configured port range. Both read the policy of the running task (`applied(policy)`, so an
ingest and a station client can share a process in tests), else the process default set by
`configure()`. The RTT probe
(`probe_rtt_ms`) also lives here because it reads aioice's nominated pair; nothing else in baycast
touches aioice. The announced public address (NAT 1:1) is handled on the SDP instead: see
`announce_public_ip`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aioice.ice
from aiortc import RTCIceTransport

_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates
# Capped by net.core.rmem_max (4 MiB on Debian by default); the kernel doubles what it grants.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class IcePolicy:
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port_min: int = 0
    port_max: int = 0


_default = IcePolicy()
_task_policy: contextvars.ContextVar[IcePolicy | None] = contextvars.ContextVar(
    "ice_policy", default=None
)
_in_gathering: contextvars.ContextVar[bool] = contextvars.ContextVar("ice_gathering", default=False)


def configure(hosts: tuple[str, ...], port_min: int = 0, port_max: int = 0) -> IcePolicy:
    """Install the hooks and set the process default. Empty `hosts`: aioice's own list."""
    global _default
    _default = IcePolicy(tuple(hosts), port_min, port_max)
    aioice.ice.get_host_addresses = _host_addresses
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]
    return _default


def policy() -> IcePolicy:
    """The policy in force for the running task."""
    return _task_policy.get() or _default


@contextlib.contextmanager
def applied(p: IcePolicy) -> Iterator[None]:
    """Gather with `p` inside the block (for this task and the tasks it starts)."""
    token = _task_policy.set(p)
    try:
        yield
    finally:
        _task_policy.reset(token)


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    hosts = policy().hosts
    if not hosts:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [h for h in hosts if (":" in h and use_ipv6) or (":" not in h and use_ipv4)]


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
) -> list[aioice.ice.Candidate]:
    if not policy().port_min:
        candidates = await _original_get_component_candidates(self, component, addresses, timeout)
    else:
        _wrap_bind(asyncio.get_running_loop())
        token = _in_gathering.set(True)
        try:
            candidates = await _original_get_component_candidates(
                self, component, addresses, timeout
            )
        finally:
            _in_gathering.reset(token)
    _enlarge_receive_buffers(self)
    return candidates


def _enlarge_receive_buffers(connection: aioice.ice.Connection) -> None:
    """Media sockets get room for a busy event loop's pauses.

    With the kernel's default (~208 KiB) a process receiving a dozen streams dropped 12 % of its
    UDP packets on loopback whenever its loop paused: lost packets mean broken pictures until
    the next keyframe and, when STUN consent checks are lost too, dropped sessions.
    """
    for protocol in connection._protocols:
        sock = protocol.transport.get_extra_info("socket") if protocol.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)


def _wrap_bind(loop: asyncio.AbstractEventLoop) -> None:
    """Once per loop: host-candidate binds made while gathering go to a port in the range."""
    original_bind = loop.create_datagram_endpoint
    if getattr(original_bind, "_baycast_port_range", False):
        return

    async def bind_in_range(factory: Any, local_addr: Any = None, **kwargs: Any) -> Any:
        current = policy()
        if not (_in_gathering.get() and current.port_min and local_addr and local_addr[1] == 0):
            return await original_bind(factory, local_addr=local_addr, **kwargs)
        ports = list(range(current.port_min, current.port_max + 1))
        random.shuffle(ports)
        for port in ports:
            try:
                return await original_bind(factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError:
                continue
        raise OSError(f"no free UDP port in {current.port_min}-{current.port_max}")

    bind_in_range._baycast_port_range = True  # type: ignore[attr-defined]
    loop.create_datagram_endpoint = bind_in_range  # type: ignore[method-assign,assignment]


_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$", re.MULTILINE)


def announce_public_ip(sdp: str, public_ip: str) -> str:
    """Put `public_ip` in place of the host candidates' addresses (and the c= line).

    The station sends its checks to the public address; a 1:1 NAT (or a Kubernetes LoadBalancer
    on the same ports) delivers them to the host socket, and ICE answers from there.
    """
    if not public_ip:
        return sdp
    sdp = _CANDIDATE.sub(lambda m: m.group(1) + public_ip + m.group(3), sdp)
    return re.sub(r"^c=IN IP4 \S+", f"c=IN IP4 {public_ip}", sdp, flags=re.MULTILINE)


async def probe_rtt_ms(transport: RTCIceTransport, timeout: float) -> float | None:
    """Round-trip time of one STUN binding check on the nominated pair, or None if none yet.

    A receive-only aiortc peer computes no RTT (that comes from receiver reports, which a
    receiver does not get back), but every WebRTC stack answers ICE checks (RFC 7675 consent
    checks are the same request).
    """
    connection: aioice.ice.Connection = transport._connection
    pair = connection._nominated.get(1)
    if pair is None or connection.remote_password is None or pair.protocol is None:
        return None
    request = connection.build_request(pair, nominate=False)
    started = time.monotonic()
    await asyncio.wait_for(
        pair.protocol.request(
            request,
            pair.remote_addr,
            integrity_key=connection.remote_password.encode(),
            retransmissions=0,
        ),
        timeout,
    )
    return (time.monotonic() - started) * 1000
