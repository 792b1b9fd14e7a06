"""The control service as its own NATS user: everything it does fits its grants (nats_accounts).

A nats-server runs with the generated users; the mixer and the control service connect as
`mixer` and `control` (and each control-room role as its own user), `baycast ctl` as `admin` (the
test's own user stands in for ingest's handles). Operators are added, a director cuts through the
API, the event stream follows, the as-run log is written and read; a cut sent through the
graphics role's user is refused by the server, and that is the one permissions violation it logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import mixer_pb2, operators_pb2
from services.common.handles import HandleDirectory
from services.common.nats_accounts import USERS, control_role_urls, generate_passwords, user_url
from services.control.service import ControlService
from services.control.settings import ControlSettings
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.integration.control.conftest import SseReader, base_url, control_settings, operator_cmd
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import admin, cards, command, production, unique
from tests.support.nats import (
    INSPECTOR,
    NatsServer,
    config_with_inspector,
    permission_violations,
)
from tests.support.services import running_service

Cmd = mixer_pb2.MixerCommand


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[NatsServer, dict[str, str]]]:
    passwords = generate_passwords((*USERS, INSPECTOR))
    config = tmp_path / "nats.conf"
    config.write_text(config_with_inspector(passwords))
    server = NatsServer(config=str(config)).start()
    try:
        yield server, {user: user_url(server.url, user, pw) for user, pw in passwords.items()}
    finally:
        server.cleanup()


async def test_the_control_user_has_every_subject_it_needs(
    secured: tuple[NatsServer, dict[str, str]],
) -> None:
    server, urls = secured
    operator = Bus(urls["admin"], "grants-admin")
    await operator.connect()
    inspector = Bus(urls[INSPECTOR], "grants-inspector")
    await inspector.connect()
    media = await FakeMediaServer().start()
    try:
        prod_id = unique("grants")
        card_list = [media.add(c) for c in cards(prod_id, 2)]
        await media.announce(HandleDirectory(inspector))
        mixer = running_service(
            MixerService, MixerSettings, urls["mixer"], lease_renew_seconds=0.3, unready_seconds=0.0
        )
        control = running_service(
            ControlService,
            ControlSettings,
            urls["control"],
            **control_settings(),
            **control_role_urls(urls.__getitem__),
        )
        async with mixer, control as service, aiohttp.ClientSession() as http:
            spec = production(prod_id, card_list)
            await admin(operator, mixer_pb2.ProductionCommand(create=spec))
            await command(operator, prod_id, Cmd(get=Cmd.Get()))
            reply = await operator_cmd(
                operator,
                operators_pb2.OperatorCommand(
                    add=operators_pb2.AddOperator(
                        id=unique("zhang"), name="张导", role=operators_pb2.ROLE_DIRECTOR
                    )
                ),
            )
            headers = {"Authorization": f"Bearer {reply.token}"}
            url = base_url(service)
            sz = spec.sources[1].id
            async with http.get(f"{url}/api/events?production={prod_id}", headers=headers) as sse:
                events = SseReader(sse)
                await events.until("snapshot")
                async with http.post(
                    f"{url}/api/productions/{prod_id}/mixer",
                    json={"cut": {"source": sz}},
                    headers=headers,
                ) as response:
                    assert response.status == 200
                while (await events.until("mixer.state")).data["switcher"]["program"] != sz:
                    pass
                assert (await events.until("asrun")).data["detail"] == "张导 cut to 深圳台"
            for path in ("/api/productions", f"/api/productions/{prod_id}", "/api/sources"):
                async with http.get(url + path, headers=headers) as response:
                    assert response.status == 200, path
            async with http.get(f"{url}/api/asrun/{prod_id}?limit=5", headers=headers) as response:
                entries = (await response.json())["entries"]
            assert entries[-1]["detail"] == "张导 cut to 深圳台"
            async with http.post(f"{url}/api/session", json={"token": reply.token}) as response:
                assert response.status == 200
            # The bus enforces the roles as well: a cut sent through the graphics role's user (as
            # if the control room's own check were bypassed) is refused by the server, and the
            # program stays where the director put it.
            graphics = service.role_buses.bus(operators_pb2.ROLE_GRAPHICS)
            assert service.role_buses.enforced and graphics is not service.bus
            back = Cmd(cut=Cmd.Cut(source=spec.sources[0].id))
            with pytest.raises(errors.Unavailable):
                await graphics.request(
                    subject("prod", prod_id, "mixer", "cmd"), back, mixer_pb2.MixerState, timeout=1
                )
            assert (await command(operator, prod_id, Cmd(get=Cmd.Get()))).switcher.program == sz
        # Both services drained their connections on the way out: the server has handled (and
        # logged) everything they sent. The one refusal is the graphics role's cut.
        log = await asyncio.to_thread(Path(server.log_path).read_text, errors="replace")
        refused = permission_violations(log)
        assert len(refused) == 1, refused
        assert "role_graphics" in refused[0] and f"{prod_id}.mixer.cmd.cut" in refused[0]
    finally:
        for card in media.cards.values():
            card.ended = True
        await media.stop()
        await operator.drain()
        await inspector.drain()
