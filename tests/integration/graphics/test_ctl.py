"""`baycast ctl gfx ...` against the running service over a real nats-server."""

from __future__ import annotations

import asyncio
import sys

from services.graphics.service import GraphicsService
from services.graphics.settings import GraphicsSettings
from tests.support.nats import NatsServer
from tests.support.services import running_service


async def ctl(url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "ctl",
        "--nats",
        url,
        "gfx",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ctl_gfx_verbs(nats_server: NatsServer, production: str) -> None:
    url = nats_server.url
    async with running_service(GraphicsService, GraphicsSettings, url):
        code, out, _ = await ctl(url, "templates", production)
        assert code == 0 and "lower_third" in out and "city_label" in out

        code, out, _ = await ctl(
            url, "show", production, "lower_third", "--id", "lt1", "-f", "name=周杰", "--cut"
        )
        assert code == 0 and '"name": "周杰"' in out

        code, out, _ = await ctl(url, "update", production, "lt1", "-f", "title=惠州台记者")
        assert code == 0 and '"title": "惠州台记者"' in out

        code, out, _ = await ctl(url, "show", production, "ticker", "--id", "news")
        assert code == 0
        code, out, _ = await ctl(url, "ticker-add", production, "news", "新消息 breaking")
        assert code == 0 and "新消息 breaking" in out

        code, out, _ = await ctl(url, "list", production)
        assert code == 0 and "lt1" in out and "news" in out

        code, _, err = await ctl(url, "show", production, "lower_third", "-f", "nickname=x")
        assert code == 2 and "INVALID_ARGUMENT" in err and "show.fields.nickname" in err

        code, _, _ = await ctl(url, "hide", production, "lt1")
        assert code == 0
        code, out, _ = await ctl(url, "list", production)
        assert "lt1" not in out and "news" in out
