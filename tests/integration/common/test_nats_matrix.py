"""Least privilege on the bus, as a generated matrix against a real nats-server.

Every user of `nats_accounts.GRANTS` tries every other user's subjects: the commands it answers
and the events it publishes, its reply inbox, the buckets it writes (a put, a read, a watch, the
stream's info) and the handles it announces; and everybody tries to delete or purge a stream. Each
of those the user's own grants do not name must be refused by the server, and nothing refused may
reach a subscriber. The same users then publish what their grants do name, and nothing of that is
refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from services.common.bus import PREFIX, verb_pattern
from services.common.nats_accounts import (
    COMMAND_SUBJECTS,
    GRANTS,
    USERS,
    generate_passwords,
    permissions,
    user_url,
)
from services.common.roles import READS, WRITES
from tests.reliability.helpers import wait_for
from tests.support.nats import INSPECTOR, NatsServer, config_with_inspector

pytestmark = pytest.mark.timeout(60)


# Every verb of the services the control-room roles command (the rest: one unknown verb).
VERBS = {
    subj: (*READS[service], *WRITES[service], "x") for service, subj in COMMAND_SUBJECTS.items()
}


def matches(pattern: str, subj: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest."""
    pat, sub = pattern.split("."), subj.split(".")
    for i, token in enumerate(pat):
        if token == ">":
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def concrete(pattern: str) -> str:
    """A subject the pattern matches: `*` -> `x`, `>` -> `x.y`."""
    return pattern.replace(".*", ".x").replace(".>", ".x.y")


def allowed(user: str, action: str, subj: str) -> bool:
    return any(matches(p, subj) for p in permissions(user)[action]["allow"])


def others_subjects(user: str) -> Iterator[tuple[str, str]]:
    """(publish|subscribe, subject) of every other user's grants, and stream deletion."""
    for other, g in GRANTS.items():
        if other == user:
            continue
        for s in g.serves:
            for verb in VERBS.get(s, ("x",)):
                yield "publish", concrete(PREFIX + s) + f".{verb}"
            yield "subscribe", concrete(PREFIX + verb_pattern(s))
        for s in g.publishes:
            yield "publish", concrete(PREFIX + s)
            yield "subscribe", concrete(PREFIX + s)
        yield "subscribe", f"_INBOX.{other}.>"
        for bucket in g.buckets:
            stream = f"KV_{bucket}"
            yield "publish", f"$KV.{bucket}.k"
            yield "subscribe", f"$KV.{bucket}.>"
            yield "publish", f"$JS.API.STREAM.INFO.{stream}"
            yield "publish", f"$JS.API.DIRECT.GET.{stream}.$KV.{bucket}.k"
            yield "publish", f"$JS.API.CONSUMER.CREATE.{stream}"
        for kind in g.handles:
            yield "publish", f"$KV.handles.{kind}.x"
        for stream in (*g.kv_streams(), *g.streams):
            yield "publish", f"$JS.API.STREAM.DELETE.{stream}"
            yield "publish", f"$JS.API.STREAM.PURGE.{stream}"


def forbidden(user: str) -> list[tuple[str, str]]:
    return sorted({(a, s) for a, s in others_subjects(user) if not allowed(user, a, s)})


def own_publishes(user: str) -> list[str]:
    """Plain subjects the user's grants name (commands, events, its buckets and handles)."""
    g = GRANTS[user]
    out = [concrete(PREFIX + s) for s in (*g.publishes, *map(verb_pattern, g.sends))]
    out += [f"$KV.{b}.k" for b in g.buckets]
    out += [f"$KV.handles.{kind}.x" for kind in g.handles]
    return out


def test_the_matrix_is_not_empty() -> None:
    """Each service is kept off most of what the others do, and nobody may delete a stream."""
    for user in USERS:
        refused = forbidden(user)
        assert len(refused) >= 40, (user, len(refused))
        assert ("publish", "$JS.API.STREAM.DELETE.KV_handles") in refused
        assert all(allowed(user, "publish", s) for s in own_publishes(user))
    # Two that matter most: nobody but distribution reads the stream keys, and nobody but the
    # mixer points a production's program at itself.
    readers = [u for u in USERS if allowed(u, "publish", "$JS.API.DIRECT.GET.KV_dist_outputs.x")]
    writers = [u for u in USERS if allowed(u, "publish", "$KV.handles.prod.p.program")]
    assert (readers, writers) == (["distribution"], ["mixer"])
    assert [u for u in USERS if allowed(u, "subscribe", "_INBOX.ingest.abc")] == ["ingest"]
    # The roles, on the bus: who may cut, move a fader, show a graphic; nobody else writes.
    cut, fader, show = (
        f"{PREFIX}prod.p.{k}" for k in ("mixer.cmd.cut", "mixer.cmd.audio", "gfx.cmd.show")
    )
    may = {s: [u for u in USERS if allowed(u, "publish", s)] for s in (cut, fader, show)}
    assert may[cut] == ["role_director", "admin"]
    assert may[fader] == ["role_director", "role_audio", "admin"]
    assert may[show] == ["mixer", "role_director", "role_graphics", "admin"]


async def test_every_user_is_refused_everything_its_grants_do_not_name(tmp_path: Path) -> None:
    passwords = generate_passwords((*USERS, INSPECTOR))
    config = tmp_path / "nats.conf"
    config.write_text(config_with_inspector(passwords))
    server = NatsServer(config=str(config)).start()
    try:
        url = {u: user_url(server.url, u, p) for u, p in passwords.items()}
        # Everything published anywhere, as the server delivers it.
        spy = await nats.connect(url[INSPECTOR])
        seen: list[tuple[str, bytes]] = []

        async def on_spy(msg: nats.aio.msg.Msg) -> None:
            seen.append((msg.subject, msg.data))

        await spy.subscribe(">", cb=on_spy)
        await spy.flush()
        expected: dict[str, list[tuple[str, str]]] = {}
        errors: dict[str, list[str]] = {}
        clients = []
        for user in USERS:
            expected[user] = forbidden(user)
            errors[user] = []

            async def on_error(exc: Exception, user: str = user) -> None:
                errors[user].append(str(exc).lower())

            nc = await nats.connect(url[user], error_cb=on_error, allow_reconnect=False)
            clients.append(nc)
            for action, subj in expected[user]:
                if action == "publish":
                    await nc.publish(subj, b"matrix")
                else:
                    await nc.subscribe(subj)
            # What its grants name goes through.
            for subj in own_publishes(user):
                await nc.publish(subj, b"own")
            await nc.flush()

        total = sum(len(v) for v in expected.values())

        await wait_for(lambda: sum(len(v) for v in errors.values()) >= total, 20, "the refusals")
        # The spy's own marker arrives after anything the server delivered before it.
        await spy.publish("matrix.marker", b"")
        await spy.flush()
        await wait_for(lambda: ("matrix.marker", b"") in seen, 5, "the marker")
        for user in USERS:
            refused = {
                (a, s)
                for a, s in expected[user]
                if any(
                    f"permissions violation for {'publish' if a == 'publish' else 'subscription'}"
                    f' to "{s.lower()}"' in e
                    for e in errors[user]
                )
            }
            assert refused == set(expected[user]), (user, set(expected[user]) - refused)
            assert len(errors[user]) == len(expected[user]), (user, errors[user])
        # Nothing refused was delivered; what the grants name was.
        assert [s for s, data in seen if data == b"matrix"] == []
        assert {s for s, data in seen if data == b"own"} >= {
            s for u in USERS for s in own_publishes(u) if not s.startswith("$KV.")
        }
        print(
            f"\n{total} refusals for {len(USERS)} users "
            + ", ".join(f"{u} {len(expected[u])}" for u in USERS)
        )
        for nc in clients:
            await nc.close()
        await spy.close()
    finally:
        server.cleanup()
