"""NATS users and subject permissions for the services, from one table.

Each service connects as its own user and may publish and subscribe only what `GRANTS` lists:
its events, the commands it answers (with `allow_responses`, so it can reply without a blanket
`_INBOX.>` publish right), the commands it sends, JetStream's API and the `$KV.<bucket>.>`
subjects of the key-value buckets it writes. A client without credentials is refused; graphics
cannot publish a mixer command. `server_config()` renders the `authorization` block of a
nats-server configuration file (JSON, which nats-server reads) from a map of passwords, and
`user_url()` the `BAYCAST_NATS_URL` each service is given.

    passwords = generate_passwords()
    Path("nats.conf").write_text(server_config(passwords))
    env["BAYCAST_NATS_URL"] = user_url("nats://127.0.0.1:4222", "mixer", passwords["mixer"])
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from services.common.bus import PREFIX
from services.common.command_log import BUCKET as COMMAND_LOG


@dataclass(frozen=True)
class Grants:
    """What one user may do; subjects are written after the `baycast.v1.` prefix."""

    publishes: tuple[str, ...] = ()  # events (and JetStream-stored subjects) it publishes
    subscribes: tuple[str, ...] = ()  # events it listens to
    serves: tuple[str, ...] = ()  # commands it answers
    sends: tuple[str, ...] = ()  # commands it sends (request/reply)
    buckets: tuple[str, ...] = ()  # key-value buckets it writes ("*": every bucket)
    everything: bool = False  # the operator: every baycast subject

    def service_subjects(self, user: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(publish, subscribe) of its own heartbeat and status subjects, and the route subjects
        on which its replicas forward a unit's commands to the unit's owner (steward.py)."""
        route = f"svc.{user}.*.route"
        return (f"svc.{user}.*.heartbeat", route), (f"svc.{user}.*.status", route)


HANDLES = "handles"

# The one table: who may publish and subscribe what.
GRANTS: dict[str, Grants] = {
    "ingest": Grants(
        publishes=("source.*.state", "source.*.stats"),
        serves=("ingest.station.cmd",),
        buckets=("stations", "sources", "ingest-live", HANDLES),
    ),
    "mixer": Grants(
        publishes=(
            "prod.*.mixer.state",
            "prod.*.mixer.levels",
            "prod.*.tally",
            "prod.*.rundown.state",
            "prod.*.asrun",
        ),
        serves=("mixer.production.cmd", "prod.*.mixer.cmd", "prod.*.rundown.cmd"),
        sends=("prod.*.gfx.cmd",),  # rundown graphics cues
        buckets=("mixer-productions", "mixer-leases", "mixer-state", "mixer-rundowns", HANDLES),
    ),
    "graphics": Grants(
        publishes=("prod.*.gfx.state",),
        serves=("prod.*.gfx.cmd",),
        buckets=("gfx", "graphics-leases", HANDLES),
    ),
    "distribution": Grants(
        publishes=(
            "prod.*.dist.output.*.state",
            "prod.*.exchange.state",
            "prod.*.cue",
            "prod.*.asrun",  # cues and their acknowledgements
        ),
        # Tallies and talkback; the other replicas' viewers.
        subscribes=("prod.*.tally", "prod.*.mixer.state", "prod.*.exchange.state"),
        serves=("prod.*.dist.cmd", "prod.*.exchange.cmd"),
        sends=("prod.*.mixer.cmd",),  # the current tally and talkback of a production, at start
        buckets=(
            "dist_outputs",
            "distribution-leases",
            "distribution-tally-leases",
            "exchange-cues",
            HANDLES,
        ),
    ),
    "monitoring": Grants(
        publishes=("alert.*", "prod.*.loudness"),
        subscribes=(
            "svc.*.*.heartbeat",
            "source.*.state",
            "source.*.stats",
            "prod.*.mixer.state",
            "prod.*.gfx.state",
            "prod.*.dist.output.*.state",
        ),
        serves=("monitoring.alerts",),
        buckets=("sources", "monitoring-leases", "monitoring-alerts", HANDLES),
    ),
    # The control room: it acts for the operators it has logged in (each command names its
    # operator in a header), keeps the operators, follows every event the pages show, and writes
    # who did what into the as-run log.
    "control": Grants(
        publishes=("prod.*.asrun",),
        subscribes=(
            "source.*.state",
            "source.*.stats",
            "prod.*.mixer.state",
            "prod.*.mixer.levels",
            "prod.*.tally",
            "prod.*.rundown.state",
            "prod.*.gfx.state",
            "prod.*.dist.output.*.state",
            "prod.*.exchange.state",
            "prod.*.cue",
            "prod.*.asrun",
            "prod.*.loudness",
            "alert.*",
        ),
        serves=("operator.cmd",),
        sends=(
            "mixer.production.cmd",
            "prod.*.mixer.cmd",
            "prod.*.rundown.cmd",
            "prod.*.gfx.cmd",
            "prod.*.dist.cmd",
            "prod.*.exchange.cmd",
            "monitoring.alerts",
        ),
        buckets=("operators",),
    ),
    # `baycast ctl`, `baycast up`'s demo driver, test harnesses.
    "operator": Grants(everything=True, buckets=("*",)),
}
USERS = tuple(GRANTS)

JETSTREAM_API = "$JS.API.>"
# Replies to a JetStream flow-control message and acks of a consumer the client reads.
JETSTREAM_CLIENT = ("$JS.FC.>", "$JS.ACK.>")
INBOX = "_INBOX.>"


def _full(subjects: Iterable[str]) -> list[str]:
    return [PREFIX + s for s in subjects]


def permissions(user: str) -> dict[str, Any]:
    """The nats-server `permissions` block of `user`."""
    g = GRANTS[user]
    if g.everything:
        publish = [PREFIX + ">"]
        subscribe = [PREFIX + ">"]
    else:
        own_pub, own_sub = g.service_subjects(user)
        publish = _full((*g.publishes, *g.sends, *own_pub))
        subscribe = _full((*g.subscribes, *g.serves, *own_sub))
    publish += [JETSTREAM_API, *JETSTREAM_CLIENT]
    publish += [f"$KV.{b}.>" if b != "*" else "$KV.>" for b in g.buckets]
    if g.serves and not g.everything:
        # A command its queue group serves is applied once across replicas (command_log.py).
        publish.append(f"$KV.{COMMAND_LOG}.>")
    subscribe += [INBOX]  # replies to its requests and to JetStream API calls
    out: dict[str, Any] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if g.serves or g.everything:
        # Publish to the reply subject of a request it received, once, within a minute.
        out["allow_responses"] = {"max": 1, "expires": "1m"}
    return out


def server_config(passwords: Mapping[str, str]) -> str:
    """The `authorization` block for nats-server, one user per entry of `passwords`."""
    unknown = set(passwords) - set(GRANTS)
    if unknown:
        raise ValueError(f"no grants for user(s) {sorted(unknown)}; known: {list(GRANTS)}")
    users = [
        {"user": user, "password": password, "permissions": permissions(user)}
        for user, password in passwords.items()
    ]
    return json.dumps({"authorization": {"users": users}}, indent=2) + "\n"


def generate_passwords(users: Iterable[str] = USERS) -> dict[str, str]:
    """A random password per user: a letter, then 48 hex digits.

    In Kubernetes, auth.conf reads each password from an environment variable, and nats-server
    parses a variable's value as a config value: one starting with a digit is taken for a number
    (`8h...` fails the whole config) and only a leading letter makes it a string for certain.
    """
    return {user: "p" + secrets.token_hex(24) for user in users}


def user_url(url: str, user: str, password: str) -> str:
    """`nats://127.0.0.1:4222` -> `nats://mixer:<password>@127.0.0.1:4222`."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
