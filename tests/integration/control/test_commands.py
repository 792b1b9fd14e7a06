"""Commands through the control room: roles enforced, the mixer's state, the as-run log."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

import aiohttp

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import mixer_pb2
from services.control.service import ControlService
from tests.integration.control.conftest import AddOperator, Show, base_url
from tests.support.mixer import command

Cmd = mixer_pb2.MixerCommand


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def switcher(bus: Bus, show: Show) -> mixer_pb2.SwitcherState:
    """The switcher as the mixer has it (asked on the bus, as `baycast ctl` does)."""
    return (await command(bus, show.id, Cmd(get=Cmd.Get()))).switcher


async def asrun(
    http: aiohttp.ClientSession, control: ControlService, show: Show, token: str
) -> list[Any]:
    url = f"{base_url(control)}/api/asrun/{show.id}?limit=20"
    async with http.get(url, headers=bearer(token)) as response:
        assert response.status == 200
        body = await response.json()
    assert body["production"] == show.id
    return list(body["entries"])


async def test_a_director_cuts_and_the_as_run_log_says_who(
    bus: Bus,
    control: ControlService,
    show: Show,
    add_operator: AddOperator,
    http: aiohttp.ClientSession,
) -> None:
    director, token = await add_operator("director", "张导")
    sz = show.sources[1]
    mixer_url = f"{base_url(control)}/api/productions/{show.id}/mixer"
    status, state = await post(http, mixer_url, {"cut": {"source": sz}}, bearer(token))
    assert status == 200 and state["switcher"]["program"] == sz
    assert (await switcher(bus, show)).program == sz
    status, state = await post(
        http, mixer_url, {"audio": {"source": sz, "gainDb": -6}}, bearer(token)
    )
    assert status == 200

    entries = await asrun(http, control, show, token)
    assert [e["cue"] for e in entries[-2:]] == ["mixer.cut", "mixer.audio"]
    cut = entries[-2]
    assert cut["detail"] == "张导 cut to 深圳台"
    assert (cut["operator"], cut["ok"], cut["segment"]) == (director, True, -1)
    assert entries[-1]["detail"] == "张导 set 深圳台 to -6.0 dB"

    # A command the mixer refuses is logged as refused, with the reason.
    status, error = await post(http, mixer_url, {"cut": {"source": "nowhere"}}, bearer(token))
    assert (status, error["code"], error["field"]) == (400, "INVALID_ARGUMENT", "cut.source")
    last = (await asrun(http, control, show, token))[-1]
    assert (last["cue"], last.get("ok", False)) == ("mixer.cut", False)  # defaults are left out
    assert last["error"].startswith("INVALID_ARGUMENT: ")
    assert (await switcher(bus, show)).program == sz

    # Reads are not in the as-run log.
    before = len(await asrun(http, control, show, token))
    status, state = await post(http, mixer_url, {"get": {}}, bearer(token))
    assert status == 200 and state["switcher"]["program"] == sz
    assert len(await asrun(http, control, show, token)) == before


async def test_roles_the_server_enforces(
    bus: Bus,
    control: ControlService,
    show: Show,
    add_operator: AddOperator,
    http: aiohttp.ClientSession,
) -> None:
    _, graphics = await add_operator("graphics", "王美")
    _, audio = await add_operator("audio", "李工")
    _, viewer = await add_operator("viewer", "赵看")
    _, director = await add_operator("director", "张导")
    base = f"{base_url(control)}/api/productions/{show.id}"
    fs = show.sources[2]
    before = await switcher(bus, show)
    log_before = len(await asrun(http, control, show, director))

    refusals = [
        (graphics, "mixer", {"cut": {"source": fs}}, "cut"),
        (graphics, "mixer", {"audio": {"source": fs, "mute": True}}, "audio"),
        (graphics, "rundown", {"next": {}}, "next"),
        (audio, "mixer", {"cut": {"source": fs}}, "cut"),
        (audio, "mixer", {"ftb": {}}, "ftb"),
        (audio, "graphics", {"show": {"template": "live_badge"}}, "show"),
        (viewer, "mixer", {"cut": {"source": fs}}, "cut"),
        (viewer, "mixer", {"layout": {"name": "full"}}, "layout"),
        (viewer, "mixer", {"audio": {"source": fs, "gainDb": 3}}, "audio"),
        (viewer, "outputs", {"stop": {"id": "hls"}}, "stop"),
        (viewer, "exchange", {"cue": {"all": True, "text": "hi"}}, "cue"),
    ]
    for token, path, body, field in refusals:
        status, error = await post(http, f"{base}/{path}", body, bearer(token))
        assert status == 403, (path, body)
        assert error["code"] == "PERMISSION_DENIED" and error["field"] == field
        assert set(error) == {"code", "message", "field"}
    # Nothing changed, nothing was logged.
    assert await switcher(bus, show) == before
    assert len(await asrun(http, control, show, director)) == log_before

    # What each may do.
    status, state = await post(
        http, f"{base}/mixer", {"audio": {"source": fs, "mute": True}}, bearer(audio)
    )
    assert status == 200
    assert [a.mute for a in (await switcher(bus, show)).audio if a.source == fs] == [True]
    for token in (viewer, graphics, audio):
        status, state = await post(http, f"{base}/mixer", {"get": {}}, bearer(token))
        assert status == 200 and state["production"] == show.id
    # Graphics may send graphics commands (no graphics service runs here: 503, not 403).
    status, error = await post(http, f"{base}/graphics", {"list": {}}, bearer(graphics))
    assert (status, error["code"]) == (503, "UNAVAILABLE")

    async with http.get(base_url(control) + "/api/me", headers=bearer(viewer)) as response:
        me = await response.json()
    assert me["role"] == "viewer" and me["via"] == "bearer" and "mixer.cut" not in me["permissions"]
    assert "mixer.get" in me["permissions"] and "csrfToken" not in me


async def test_bad_requests_change_nothing_and_name_the_problem(
    bus: Bus,
    control: ControlService,
    show: Show,
    add_operator: AddOperator,
    http: aiohttp.ClientSession,
) -> None:
    _, token = await add_operator("director")
    base = f"{base_url(control)}/api/productions/{show.id}"
    before = await switcher(bus, show)
    cases: list[tuple[str, Any, dict[str, str], int, str]] = [
        (f"{base}/mixer", {"cut": {"source": 5}}, bearer(token), 400, "cut.source"),
        (f"{base}/mixer", {"cut": {"source": None}}, bearer(token), 400, "cut.source"),
        (f"{base}/mixer", {}, bearer(token), 400, "command"),
        (f"{base}/mixer", {"cut": {}, "take": {}}, bearer(token), 400, ""),
        (f"{base}/mixer", {"ftb": {"durationMs": "5"}}, bearer(token), 400, "ftb.durationMs"),
        (f"{base}/mixer", {"nonsense": {}}, bearer(token), 400, "nonsense"),
        (f"{base}/outputs", {"production": "other", "list": {}}, bearer(token), 400, "production"),
        (
            f"{base_url(control)}/api/productions/nowhere/mixer",
            {"get": {}},
            bearer(token),
            404,
            "prod",
        ),
        (
            f"{base_url(control)}/api/productions/no.where/mixer",
            {"get": {}},
            bearer(token),
            400,
            "prod",
        ),
        (f"{base}/mixer", {"take": {}}, {}, 401, ""),
        (f"{base}/mixer", {"take": {}}, bearer("not-a-token"), 401, ""),
        (
            f"{base}/mixer",
            {"take": {}},
            {**bearer(token), "Idempotency-Key": "has space"},
            400,
            "Idempotency-Key",
        ),
    ]
    for url, body, headers, status, field in cases:
        got, error = await post(http, url, body, headers)
        assert (got, error.get("field", "")) == (status, field) or (got == status and not field), (
            body,
            got,
            error,
        )
    headers = {**bearer(token), "Content-Type": "text/plain"}
    async with http.post(f"{base}/mixer", data=b'{"take": {}}', headers=headers) as response:
        assert response.status == 415
    async with http.post(
        f"{base}/mixer",
        data=b"{" * 70_000,
        headers={**bearer(token), "Content-Type": "application/json"},
    ) as response:
        assert response.status == 413
    async with http.post(
        f"{base}/mixer", data=b"[]", headers={**bearer(token), "Content-Type": "application/json"}
    ) as response:
        assert response.status == 400
    async with http.get(f"{base}/mixer", headers=bearer(token)) as response:
        assert response.status == 405 and (await response.json())["code"]
    async with http.get(f"{base_url(control)}/api/nothing", headers=bearer(token)) as response:
        assert response.status == 404 and (await response.json())["code"] == "NOT_FOUND"
    async with http.post(f"{base}/mixer", json={"take": {}}) as response:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await switcher(bus, show) == before


async def test_a_retried_request_is_applied_and_logged_once(
    bus: Bus,
    control: ControlService,
    show: Show,
    add_operator: AddOperator,
    http: aiohttp.ClientSession,
) -> None:
    _, token = await add_operator("director", "张导")
    _gz, sz, fs = show.sources
    mixer_url = f"{base_url(control)}/api/productions/{show.id}/mixer"
    once = {**bearer(token), "Idempotency-Key": "cut-to-sz-1"}
    status, first = await post(http, mixer_url, {"cut": {"source": sz}}, once)
    assert status == 200 and first["switcher"]["program"] == sz
    status, _ = await post(http, mixer_url, {"cut": {"source": fs}}, bearer(token))
    assert status == 200
    # The retry gets the first answer again and is not applied again: fs stays on program.
    status, again = await post(http, mixer_url, {"cut": {"source": sz}}, once)
    assert status == 200 and again == first
    assert (await switcher(bus, show)).program == fs
    details = [e["detail"] for e in await asrun(http, control, show, token)]
    assert details.count("张导 cut to 深圳台") == 1 and details[-1] == "张导 cut to 佛山台"


async def test_reading_the_show(
    control: ControlService, show: Show, add_operator: AddOperator, http: aiohttp.ClientSession
) -> None:
    _, token = await add_operator("viewer")
    url = base_url(control)
    async with http.get(f"{url}/api/productions", headers=bearer(token)) as response:
        listed = await response.json()
    assert response.status == 200
    assert show.id in [p["id"] for p in listed["productions"]] and show.id in listed["owners"]

    async with http.get(f"{url}/api/productions/{show.id}", headers=bearer(token)) as response:
        view = await response.json()
    assert response.status == 200
    assert view["production"]["sources"][1] == {"id": show.sources[1], "name": "深圳台"}
    assert view["mixer"]["switcher"]["program"] == show.sources[0]
    assert view["rundown"]["production"] == show.id
    # No graphics, distribution or exchange service runs here: named, not failed.
    missing = {part["part"]: part["code"] for part in view["unavailable"]}
    assert missing == {
        "graphics": "UNAVAILABLE",
        "outputs": "UNAVAILABLE",
        "exchange": "UNAVAILABLE",
    }
    async with http.get(f"{url}/api/productions/nowhere", headers=bearer(token)) as response:
        assert response.status == 404

    async with http.get(f"{url}/api/asrun/{show.id}?limit=0", headers=bearer(token)) as response:
        assert response.status == 400 and (await response.json())["field"] == "limit"
    async with http.get(f"{url}/api/sources", headers=bearer(token)) as response:
        assert response.status == 200 and isinstance((await response.json())["sources"], list)
    async with http.get(f"{url}/api/alerts", headers=bearer(token)) as response:
        assert response.status == 503  # no monitoring here


class LevelLog:
    """The mixer's level events for one production, as they arrive on the bus."""

    def __init__(self) -> None:
        self.events: list[mixer_pb2.AudioLevels] = []

    async def on_levels(self, levels: mixer_pb2.AudioLevels, _subject: str) -> None:
        self.events.append(levels)

    async def wait(
        self, source: str, accept: Callable[[mixer_pb2.Level], bool], timeout: float = 5.0
    ) -> mixer_pb2.Level:
        """The first level of `source` from now on that `accept`s."""
        seen = len(self.events)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for event in self.events[seen:]:
                for level in event.levels:
                    if level.source == source and accept(level):
                        return level
            seen = len(self.events)
            await asyncio.sleep(0.02)
        recent = [lv for e in self.events[-3:] for lv in e.levels if lv.source == source]
        raise AssertionError(f"no such level of {source} within {timeout} s: {recent}")

    async def steady(self, source: str, count: int = 6) -> mixer_pb2.Level:
        """The median reading of `source` over its next `count` levels."""
        readings = [await self.wait(source, lambda _level: True) for _ in range(count)]
        peaks = [r.peak_dbfs for r in readings]
        reductions = [r.gain_reduction_db for r in readings]
        return mixer_pb2.Level(
            source=source,
            peak_dbfs=statistics.median(peaks),
            gain_reduction_db=statistics.median(reductions),
        )


async def test_the_audio_operator_sets_a_channel_strip_the_mixer_applies(
    bus: Bus,
    control: ControlService,
    show: Show,
    add_operator: AddOperator,
    http: aiohttp.ClientSession,
) -> None:
    _, token = await add_operator("audio", "李工")
    gz, sz, _fs = show.sources
    mixer_url = f"{base_url(control)}/api/productions/{show.id}/mixer"
    levels = LevelLog()
    sub = await bus.subscribe(
        subject("prod", show.id, "mixer", "levels"), mixer_pb2.AudioLevels, levels.on_levels
    )
    try:
        before = await levels.steady(gz)
        # The card's tone peaks at -12 dBFS (amplitude 0.25); nothing reduces it yet.
        assert abs(before.peak_dbfs - -12.04) < 0.3 and before.gain_reduction_db == 0, before

        # The whole strip in one command, as the page's controls send it field by field.
        strip = {
            "source": gz,
            "trimDb": -12,
            "highPass": {"enabled": True, "frequencyHz": 120},
            "gate": {"enabled": True, "thresholdDb": -70},
            "compressor": {"enabled": True, "thresholdDb": -50, "ratio": 10},
            "eq": {
                "enabled": True,
                "low": {"gainDb": -3},
                "mid": {"gainDb": 2},
                "high": {"gainDb": 1.5},
            },
        }
        status, state = await post(http, mixer_url, {"audio": strip}, bearer(token))
        assert status == 200, state
        # The reply is the switcher as the mixer now has it: the strip exactly (the fader, mute
        # and AFV at their defaults are left out of canonical JSON).
        settings = {a["source"]: a for a in state["switcher"]["audio"]}
        assert settings[gz] == strip
        assert settings[sz] == {"source": sz}  # the others untouched
        stored = {a.source: a for a in (await switcher(bus, show)).audio}[gz]
        assert (stored.trim_db, stored.compressor.ratio, stored.eq.mid.gain_db) == (-12, 10, 2)

        # What the mixer reports: the meter reads after the trim (12 dB lower), and the gate's
        # and compressor's reduction is there: the tone's excess over the threshold times
        # (1 - 1/ratio), within 1.5 dB (the EQ lifts the 500 Hz tone a little before it).
        def reduction(ratio: float) -> float:
            return (before.peak_dbfs - 12 - -50) * (1 - 1 / ratio)

        await levels.wait(gz, lambda lv: abs(lv.peak_dbfs - (before.peak_dbfs - 12)) < 0.3)
        await levels.wait(gz, lambda lv: abs(lv.gain_reduction_db - reduction(10)) < 1.5)
        hard = await levels.steady(gz)
        assert abs(hard.peak_dbfs - (before.peak_dbfs - 12)) < 0.3, hard
        assert abs(hard.gain_reduction_db - reduction(10)) < 1.5, hard
        assert (await levels.steady(sz)).gain_reduction_db == 0

        # One field moved, the others kept: a gentler ratio reduces less, at the same threshold.
        status, state = await post(
            http, mixer_url, {"audio": {"source": gz, "compressor": {"ratio": 2}}}, bearer(token)
        )
        assert status == 200
        comp = {a["source"]: a for a in state["switcher"]["audio"]}[gz]["compressor"]
        assert comp == {"enabled": True, "thresholdDb": -50.0, "ratio": 2.0}
        await levels.wait(gz, lambda lv: abs(lv.gain_reduction_db - reduction(2)) < 1.5)
        gentle = await levels.steady(gz)
        assert abs(gentle.gain_reduction_db - reduction(2)) < 1.5, gentle

        # A value out of range is refused by the mixer, in its words, and changes nothing.
        status, error = await post(
            http, mixer_url, {"audio": {"source": gz, "compressor": {"ratio": 50}}}, bearer(token)
        )
        assert (status, error["code"], error["field"]) == (
            400,
            "INVALID_ARGUMENT",
            "audio.compressor.ratio",
        )
        stored = {a.source: a for a in (await switcher(bus, show)).audio}[gz]
        assert stored.compressor.ratio == 2

        # Switched off, the compressor and the gate reduce nothing; the trim stays.
        off = {"source": gz, "gate": {"enabled": False}, "compressor": {"enabled": False}}
        status, _ = await post(http, mixer_url, {"audio": off}, bearer(token))
        assert status == 200
        await levels.wait(gz, lambda lv: lv.gain_reduction_db == 0)
        assert abs((await levels.steady(gz)).peak_dbfs - (before.peak_dbfs - 12)) < 0.3
    finally:
        await sub.unsubscribe()

    details = [e["detail"] for e in await asrun(http, control, show, token)]
    assert details[-4:] == [
        "李工 set 广州台 trim -12.0 dB, high-pass on (120 Hz), EQ on (low -3.0 dB, mid +2.0 dB,"
        " high +1.5 dB), gate on (threshold -70.0 dB), compressor on (threshold -50.0 dB,"
        " ratio 10:1)",
        "李工 set 广州台 compressor (ratio 2:1)",
        "李工 set 广州台 compressor (ratio 50:1)",  # refused, and logged so
        "李工 set 广州台 gate off, compressor off",
    ]
