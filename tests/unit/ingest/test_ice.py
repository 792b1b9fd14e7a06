"""The aioice hook: host addresses and port range from settings; public address in SDP."""

from __future__ import annotations

import aioice.ice

from services.common import ice
from tests.support.nats import free_udp_port


def test_hook_offers_loopback_which_aioice_drops_by_itself() -> None:
    ice.configure(("127.0.0.1",))
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    ice.configure(("127.0.0.1", "::1"))
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    ice.configure(("127.0.0.1",))


async def test_host_candidates_bind_in_the_configured_port_range() -> None:
    low = free_udp_port()
    ice.configure(("127.0.0.1",), low, low)
    try:
        connection = aioice.ice.Connection(ice_controlling=True)
        await connection.gather_candidates()
        assert [(c.host, c.port) for c in connection.local_candidates] == [("127.0.0.1", low)]
        await connection.close()
    finally:
        ice.configure(("127.0.0.1",))
    connection = aioice.ice.Connection(ice_controlling=True)
    await connection.gather_candidates()
    assert [c.host for c in connection.local_candidates] == ["127.0.0.1"]
    await connection.close()


def test_public_ip_replaces_host_candidates_and_connection_line() -> None:
    sdp = (
        "v=0\r\nc=IN IP4 10.0.0.5\r\n"
        "a=candidate:abc 1 udp 2130706431 10.0.0.5 40000 typ host\r\n"
        "a=candidate:def 1 udp 1694498815 1.2.3.4 40000 typ srflx raddr 10.0.0.5 rport 4\r\n"
    )
    out = ice.announce_public_ip(sdp, "203.0.113.7")
    assert "a=candidate:abc 1 udp 2130706431 203.0.113.7 40000 typ host" in out
    assert "c=IN IP4 203.0.113.7" in out
    assert "1.2.3.4 40000 typ srflx" in out
    assert ice.announce_public_ip(sdp, "") == sdp


async def test_a_task_policy_overrides_the_default_inside_its_block_only() -> None:
    ice.configure(("127.0.0.1",))
    port = free_udp_port()
    with ice.applied(ice.IcePolicy(("127.0.0.1",), port, port)):
        inside = aioice.ice.Connection(ice_controlling=False)
        await inside.gather_candidates()
    outside = aioice.ice.Connection(ice_controlling=False)
    await outside.gather_candidates()
    assert [c.port for c in inside.local_candidates] == [port]
    assert [c.port for c in outside.local_candidates] != [port]
    await inside.close()
    await outside.close()
