"""ingest's unauthenticated HTTP routes: none tells which stations exist, and each answers a client
address at a bounded rate (probes and /metrics excepted; WHIP offers have a bucket of their own)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
import pytest

from services.common.gen.baycast.v1 import ingest_pb2
from tests.reliability.proc_stats import metric_value
from tests.support.nats import NatsServer
from tests.support.station import add_station, running_ingest, station_command

pytestmark = pytest.mark.timeout(60)

KNOWN, REVOKED, UNKNOWN = "rt-gz", "rt-sz", "rt-nobody"
TIMED_ROUNDS = 40


def same_for_every_id(answers: dict[str, tuple[int, str, dict[str, str]]]) -> bool:
    """Whether the answers for each station id are the same once the id itself is masked."""
    masked = {
        (status, body.replace(sid, "<id>"), tuple(sorted(headers.items())))
        for sid, (status, body, headers) in answers.items()
    }
    return len(masked) == 1


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, token: str = ""
) -> tuple[int, str, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, headers=headers) as resp:
        body = await resp.text()
        kept = {k: v for k, v in resp.headers.items() if k not in ("Date", "Content-Length")}
        return resp.status, body, kept


async def test_unknown_and_known_stations_answer_alike_without_their_token(
    nats_server: NatsServer,
) -> None:
    async with running_ingest(nats_server.url, http_rate_burst=1000) as ingest:
        token = await add_station(ingest, KNOWN, "广州台")
        old = await add_station(ingest, REVOKED, "深圳台")
        await station_command(
            ingest, ingest_pb2.StationCommand(revoke=ingest_pb2.StationRef(id=REVOKED))
        )
        base = f"http://127.0.0.1:{ingest.http.port}"
        wrong = "wrong-" + token[::-1]
        checks: dict[str, dict[str, tuple[int, str, dict[str, str]]]] = {}
        async with aiohttp.ClientSession() as http:
            for sid in (KNOWN, REVOKED, UNKNOWN):
                for label, method, path, bearer in (
                    ("page", "GET", f"/station/{sid}", ""),
                    ("contribute", "GET", f"/contribute/{sid}", ""),
                    ("config", "GET", f"/station/{sid}/config.json", ""),
                    ("config, wrong token", "GET", f"/station/{sid}/config.json", wrong),
                    ("config, old token", "GET", f"/station/{sid}/config.json", old),
                    ("srt", "GET", f"/srt/{sid}", wrong),
                    ("whip delete", "DELETE", f"/whip/{sid}/0123456789abcdef", wrong),
                    ("whip patch", "PATCH", f"/whip/{sid}/0123456789abcdef", ""),
                ):
                    got = await answer(http, method, base + path, bearer)
                    checks.setdefault(label, {})[sid] = got
            own = await answer(http, "GET", f"{base}/station/{KNOWN}/config.json", token)
            malformed = [
                (await answer(http, "GET", f"{base}{path}"))[0]
                for path in ("/station/NOT_AN_ID", "/station/NOT_AN_ID/config.json")
            ]

            # Timing: a wrong token against the known station and against none, interleaved.
            times: dict[str, list[float]] = {KNOWN: [], UNKNOWN: []}
            for _ in range(TIMED_ROUNDS):
                for sid in (KNOWN, UNKNOWN):
                    started = time.perf_counter()
                    await answer(http, "GET", f"{base}/station/{sid}/config.json", wrong)
                    times[sid].append(time.perf_counter() - started)

    medians = {sid: statistics.median(t) * 1000 for sid, t in times.items()}
    print(
        f"\nstation routes: config with a wrong token, median {medians[KNOWN]:.2f} ms for a"
        f" station, {medians[UNKNOWN]:.2f} ms for none ({TIMED_ROUNDS} each)"
    )
    for label, answers in checks.items():
        assert same_for_every_id(answers), (label, answers)
    status_of = {label: answers[UNKNOWN][0] for label, answers in checks.items()}
    assert status_of == {
        "page": 200,
        "contribute": 200,
        "config": 200,
        "config, wrong token": 200,
        "config, old token": 200,
        "srt": 401,
        "whip delete": 401,
        "whip patch": 401,
    }
    anonymous: dict[str, Any] = json.loads(checks["config"][UNKNOWN][1])
    assert anonymous == {
        "station": UNKNOWN,
        "whip_url": f"{base}/whip/{UNKNOWN}",
        "exchange_url": "",
    }
    # The station's own token adds its name, and only that.
    assert own[0] == 200 and json.loads(own[1]) == {
        "station": KNOWN,
        "name": "广州台",
        "whip_url": f"{base}/whip/{KNOWN}",
        "exchange_url": "",
    }
    assert malformed == [404, 404]
    assert abs(medians[KNOWN] - medians[UNKNOWN]) < 5.0


async def test_every_unauthenticated_route_is_rate_limited(nats_server: NatsServer) -> None:
    burst = 3
    async with running_ingest(
        nats_server.url, http_rate_per_s=0.01, http_rate_burst=burst
    ) as ingest:
        base = f"http://127.0.0.1:{ingest.http.port}"
        async with aiohttp.ClientSession() as http:
            first = [(await answer(http, "GET", f"{base}/station/{KNOWN}"))[0] for _ in range(4)]
            limited: dict[str, tuple[int, str]] = {}
            for method, path in (
                ("GET", f"/station/{KNOWN}"),
                ("GET", f"/contribute/{KNOWN}"),
                ("GET", f"/station/{KNOWN}/config.json"),
                ("GET", "/contribute/assets/station.js"),
                ("GET", f"/srt/{KNOWN}"),
                ("OPTIONS", f"/whip/{KNOWN}"),
                ("DELETE", f"/whip/{KNOWN}/0123456789abcdef"),
                ("PATCH", f"/whip/{KNOWN}/0123456789abcdef"),
                ("GET", "/no/such/path"),
            ):
                status, _body, headers = await answer(http, method, base + path)
                limited[f"{method} {path}"] = (status, headers.get("Retry-After", ""))
            # Probes and metrics are free; a WHIP offer takes from its own bucket (401 here).
            probes = [
                (await answer(http, "GET", base + path))[0]
                for path in ("/healthz", "/readyz", "/metrics")
                for _ in range(5)
            ]
            async with http.post(
                f"{base}/whip/{KNOWN}",
                data="v=0\r\n",
                headers={"Content-Type": "application/sdp", "Authorization": "Bearer wrong"},
            ) as resp:
                offer = resp.status
        # Another address has a bucket of its own.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as other:
            elsewhere = (await answer(other, "GET", f"{base}/station/{KNOWN}"))[0]
        counted = {  # /metrics is served by this event loop: read it from a thread
            route: await asyncio.to_thread(
                metric_value, base, "baycast_ingest_http_rate_limited_total", route
            )
            for route in ("/station/{station}", "/whip/{station}/{session}", "unmatched")
        }

    assert first == [200] * burst + [429]
    for request, (status, retry_after) in limited.items():
        assert status == 429 and int(retry_after) >= 1, (request, status)
    assert probes == [200] * 15
    assert offer == 401
    assert elsewhere == 200
    # By route: the page twice (the fourth try and the page above), both WHIP session methods.
    assert counted == {"/station/{station}": 2, "/whip/{station}/{session}": 2, "unmatched": 1}
