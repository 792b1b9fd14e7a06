"""The check that a run had no NATS permission violation (`tests.support.nats.
permission_violations`) finds a real one: in the nats-server's log and in the client's error."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats

from services.common.nats_accounts import generate_passwords, server_config, user_url
from tests.support.nats import NatsServer, permission_violations


async def test_a_real_violation_is_found_in_the_server_s_log_and_the_client_s_error(
    tmp_path: Path,
) -> None:
    passwords = generate_passwords()
    config = tmp_path / "auth.conf"
    config.write_text(server_config(passwords))
    (tmp_path / "store").mkdir()
    server = NatsServer(store_dir=str(tmp_path / "store"), config=str(config)).start()
    errors: list[str] = []

    async def server_says() -> list[str]:
        log = await asyncio.to_thread(Path(server.log_path).read_text)
        return permission_violations(log)

    async def on_error(exc: Exception) -> None:
        errors.append(f"nats_error error={exc}")

    try:
        url = user_url(server.url, "graphics", passwords["graphics"])
        client = await nats.connect(url, error_cb=on_error)
        assert await server_says() == []
        # Graphics may not command the mixer.
        await client.publish("baycast.v1.prod.x.mixer.cmd", b"{}")
        await client.flush()
        for _ in range(100):
            if errors and await server_says():
                break
            await asyncio.sleep(0.05)
        await client.close()
        server_lines = await server_says()
        assert len(server_lines) == 1 and "Publish Violation" in server_lines[0], server_lines
        assert len(permission_violations("\n".join(errors))) == 1, errors
        wrong = user_url(server.url, "graphics", "wrong")
        with contextlib.suppress(Exception):  # refused: what matters is what the server logs
            async with asyncio.timeout(5):
                await nats.connect(wrong, allow_reconnect=False, connect_timeout=2)
        assert any("authentication error" in line for line in await server_says())
    finally:
        server.cleanup()
