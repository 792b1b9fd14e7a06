"""NATS users and subject permissions for the services, from one table.

Each service connects as its own user and may publish and subscribe only what `GRANTS` lists:
its events, the commands it answers (with `allow_responses`, so it can reply without a blanket
`_INBOX.>` publish right), the commands it sends, and replies only under its own inbox prefix
(`_INBOX.<user>`, which the bus uses), so no user reads another's replies. JetStream rights name
streams: the key-value buckets it writes (their `$KV.<bucket>.>` subjects) and those it only
reads, the streams it keeps (the as-run log), and the object stores it writes or reads (the
media library); nobody may delete a stream, and only an object store's writer may purge one
object's chunks. In the
`handles` bucket each producer writes only its own kind of handle (`source.*` ingest, `prod.*`
the mixer, `gfx.*` graphics). A client without credentials is refused; graphics cannot publish
a mixer command or read `dist_outputs`.

Commands travel on their verb's subject (`prod.<p>.mixer.cmd.cut`: bus.py), so a grant may name
single verbs. Each control-room role has a user (`role_director`, `role_graphics`, `role_audio`,
`role_viewer`) that may send exactly the verbs `services/common/roles.py` gives the role; the
control service sends an operator's commands through the user of the operator's role, so the bus
refuses a graphics operator's cut even if the control service's own check were bypassed.

`admin` is the platform administrator (`baycast ctl`, `baycast up`'s demo driver): it sends every
command and follows every event, but writes no bucket, reads no secret and answers nothing.
Operators of the control room act through the control service, which names each one in its
commands (ADR 0014).

`server_config()` renders the `authorization` block of a nats-server configuration file (JSON,
which nats-server reads) from a map of passwords, and `user_url()` the `BAYCAST_NATS_URL` each
service is given (`ROUTE_USER` in a cluster's route URLs authenticates the routes).

    passwords = generate_passwords()
    Path("nats.conf").write_text(server_config(passwords))
    env["BAYCAST_NATS_URL"] = user_url("nats://127.0.0.1:4222", "mixer", passwords["mixer"])
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from services.common.asrun import ASRUN_STREAM
from services.common.bus import PREFIX, PRODUCTIONS_BUCKET, inbox_prefix, verb_pattern
from services.common.command_log import BUCKET as COMMAND_LOG
from services.common.credentials import OPERATORS_BUCKET, ROLE_NAMES, STATIONS_BUCKET
from services.common.handles import BUCKET as HANDLES
from services.common.handles import key_prefix
from services.common.media_library import MEDIA_BUCKET
from services.common.roles import READS, ROLE_USERS, WRITES, Role, role_kinds
from services.common.tls import InternalTls


@dataclass(frozen=True)
class Grants:
    """What one user may do; subjects are written after the `baycast.v1.` prefix."""

    publishes: tuple[str, ...] = ()  # events (and JetStream-stored subjects) it publishes
    subscribes: tuple[str, ...] = ()  # events it listens to
    serves: tuple[str, ...] = ()  # commands it answers (every verb of a `…cmd` subject)
    sends: tuple[str, ...] = ()  # commands it sends: `…cmd` every verb, `…cmd.<verb>` one
    buckets: tuple[str, ...] = ()  # key-value buckets it writes
    reads: tuple[str, ...] = ()  # key-value buckets it only reads
    handles: tuple[str, ...] = ()  # the kinds of handle it announces (first part of the name)
    streams: tuple[str, ...] = ()  # other JetStream streams it keeps and reads
    objects: tuple[str, ...] = ()  # object stores it writes (puts and deletes objects)
    object_reads: tuple[str, ...] = ()  # object stores it only reads

    def service_subjects(self, user: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(publish, subscribe) of its own heartbeat and status subjects, and the route subjects
        on which its replicas forward a unit's commands to the unit's owner (steward.py)."""
        if not self.serves:
            return (), ()
        route = f"svc.{user}.*.route"
        return (f"svc.{user}.*.heartbeat", route), (f"svc.{user}.*.status", route)

    def kv_streams(self) -> tuple[str, ...]:
        """The streams behind every bucket it opens (written, read, or its handles)."""
        buckets = [*self.buckets, *self.reads]
        if self.handles:
            buckets.append(HANDLES)
        if self.serves:
            buckets.append(COMMAND_LOG)  # a command its queue group serves is applied once
        return tuple(dict.fromkeys(f"KV_{b}" for b in buckets))

    def object_streams(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f"OBJ_{b}" for b in (*self.objects, *self.object_reads)))


# Everything the services publish as events, for those that follow them all.
EVENTS = (
    "svc.*.*.heartbeat",
    "source.*.state",
    "source.*.stats",
    "prod.*.mixer.state",
    "prod.*.mixer.levels",
    "prod.*.mixer.clips",
    "prod.*.tally",
    "prod.*.rundown.state",
    "prod.*.gfx.state",
    "prod.*.dist.output.*.state",
    "prod.*.exchange.state",
    "prod.*.cue",
    "prod.*.asrun",
    "prod.*.loudness",
    "alert.*",
)

# The command subject of each service a control-room role commands (services/common/roles.py).
COMMAND_SUBJECTS = {
    "mixer": "prod.*.mixer.cmd",
    "rundown": "prod.*.rundown.cmd",
    "gfx": "prod.*.gfx.cmd",
    "dist": "prod.*.dist.cmd",
    "exchange": "prod.*.exchange.cmd",
}


def role_grants(role: Role) -> Grants:
    """A control-room role's user: the verbs the role may send, nothing else."""
    kinds = sorted(role_kinds(role))
    return Grants(
        sends=tuple(f"{COMMAND_SUBJECTS[k.split('.')[0]]}.{k.split('.')[1]}" for k in kinds)
    )


# The one table: who may publish and subscribe what.
GRANTS: dict[str, Grants] = {
    "ingest": Grants(
        publishes=("source.*.state", "source.*.stats"),
        serves=("ingest.station.cmd",),
        buckets=("stations", "sources", "ingest-live"),
        # A director's microphone is published with the operator's token or media grant.
        reads=(OPERATORS_BUCKET, PRODUCTIONS_BUCKET),
        handles=("source",),
    ),
    "mixer": Grants(
        publishes=(
            "prod.*.mixer.state",
            "prod.*.mixer.levels",
            "prod.*.mixer.clips",
            "prod.*.tally",
            "prod.*.rundown.state",
            "prod.*.asrun",
        ),
        serves=("mixer.production.cmd", "prod.*.mixer.cmd", "prod.*.rundown.cmd"),
        sends=tuple(f"prod.*.gfx.cmd.{verb}" for verb in WRITES["gfx"]),  # rundown graphics cues
        buckets=(PRODUCTIONS_BUCKET, "mixer-leases", "mixer-state", "mixer-rundowns"),
        reads=(STATIONS_BUCKET,),
        handles=("prod",),
        streams=(ASRUN_STREAM,),
        object_reads=(MEDIA_BUCKET,),  # clips and stills it plays
    ),
    "graphics": Grants(
        publishes=("prod.*.gfx.state",),
        serves=("prod.*.gfx.cmd",),
        buckets=("gfx", "graphics-leases"),
        reads=(PRODUCTIONS_BUCKET,),
        handles=("gfx",),
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
        sends=("prod.*.mixer.cmd.get",),  # the current tally and talkback of a production, at start
        buckets=(
            "dist_outputs",
            "distribution-leases",
            "distribution-tally-leases",
            "exchange-cues",
        ),
        reads=(STATIONS_BUCKET, OPERATORS_BUCKET, PRODUCTIONS_BUCKET, HANDLES),
        streams=(ASRUN_STREAM,),
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
        buckets=("monitoring-leases", "monitoring-alerts"),
        reads=("sources", PRODUCTIONS_BUCKET, HANDLES),
    ),
    # The control room: it keeps the operators, follows every event the pages show, reads the
    # show's state, and writes who did what into the as-run log. It sends an operator's commands
    # through the user of the operator's role (below), never through its own.
    "control": Grants(
        publishes=("prod.*.asrun",),
        subscribes=tuple(e for e in EVENTS if not e.startswith("svc.")),
        serves=("operator.cmd",),
        sends=(
            "mixer.production.cmd.list",
            "monitoring.alerts",
            *(
                f"{COMMAND_SUBJECTS[service]}.{verb}"
                for service, verbs in READS.items()
                for verb in verbs
            ),
        ),
        buckets=(OPERATORS_BUCKET,),
        reads=(STATIONS_BUCKET, "sources", PRODUCTIONS_BUCKET),
        streams=(ASRUN_STREAM,),
    ),
}
GRANTS.update({user: role_grants(role) for role, user in ROLE_USERS.items()})
# The administrator: every command the services answer, every event; reads the sources and the
# handles (`baycast ctl source list`, snapshots) and the as-run log; keeps the media library
# (`baycast ctl media`).
GRANTS["admin"] = Grants(
    subscribes=EVENTS,
    sends=tuple(dict.fromkeys(s for g in GRANTS.values() for s in g.serves)),
    reads=("sources", HANDLES),
    streams=(ASRUN_STREAM,),
    objects=(MEDIA_BUCKET,),
)
USERS = tuple(GRANTS)
# The user the servers of a cluster authenticate each other's routes with (its password is in
# each route's URL: `nats://route:<password>@host:6222`).
ROUTE_USER = "route"

# Replies to a JetStream flow-control message and acks of a consumer the client reads, and the
# API calls on one stream a client opens, reads and watches (never delete or purge).
STREAM_API = (
    "$JS.API.STREAM.INFO.{s}",
    "$JS.API.STREAM.CREATE.{s}",
    "$JS.API.STREAM.UPDATE.{s}",
    "$JS.API.STREAM.MSG.GET.{s}",
    "$JS.API.DIRECT.GET.{s}",
    "$JS.API.DIRECT.GET.{s}.>",
    "$JS.API.CONSUMER.CREATE.{s}",
    "$JS.API.CONSUMER.CREATE.{s}.>",
    "$JS.API.CONSUMER.DURABLE.CREATE.{s}.*",
    "$JS.API.CONSUMER.INFO.{s}.*",
    "$JS.API.CONSUMER.DELETE.{s}.*",
    "$JS.API.CONSUMER.MSG.NEXT.{s}.*",
    "$JS.ACK.{s}.>",
    "$JS.FC.{s}.>",
)
# The account's JetStream limits and usage (no stream's content).
ACCOUNT_INFO = "$JS.API.INFO"
# An object store's writer removes an object by purging its chunks' subject.
OBJECT_PURGE = "$JS.API.STREAM.PURGE.{s}"


def _full(subjects: Iterable[str]) -> list[str]:
    return [PREFIX + s for s in subjects]


def permissions(user: str) -> dict[str, Any]:
    """The nats-server `permissions` block of `user`."""
    g = GRANTS[user]
    own_pub, own_sub = g.service_subjects(user)
    publish = _full((*g.publishes, *map(verb_pattern, g.sends), *own_pub))
    subscribe = _full((*g.subscribes, *map(verb_pattern, g.serves), *own_sub))
    for stream in (*g.kv_streams(), *g.streams, *g.object_streams()):
        publish += [api.format(s=stream) for api in STREAM_API]
    publish += [ACCOUNT_INFO, *(f"$KV.{b}.>" for b in g.buckets)]
    for bucket in g.objects:
        # An object's chunks and its meta; removing one purges its chunks (that subject only).
        publish += [f"$O.{bucket}.C.>", f"$O.{bucket}.M.>", OBJECT_PURGE.format(s=f"OBJ_{bucket}")]
    publish += [f"$KV.{HANDLES}.{key_prefix(kind)}.>" for kind in g.handles]
    if g.serves:
        publish.append(f"$KV.{COMMAND_LOG}.>")
    subscribe.append(inbox_prefix(user) + ".>")  # replies to its requests and JetStream calls
    out: dict[str, Any] = {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}
    if g.serves:
        # Publish to the reply subject of a request it received, once, within a minute.
        out["allow_responses"] = {"max": 1, "expires": "1m"}
    return out


def server_config(passwords: Mapping[str, str], tls: InternalTls | None = None) -> str:
    """The `authorization` block for nats-server, one user per entry of `passwords`; with `tls`,
    also the `tls` block: clients must connect over TLS (they authenticate with their password,
    not with a certificate)."""
    unknown = set(passwords) - set(GRANTS)
    if unknown:
        raise ValueError(f"no grants for user(s) {sorted(unknown)}; known: {list(GRANTS)}")
    users = [
        {"user": user, "password": password, "permissions": permissions(user)}
        for user, password in passwords.items()
    ]
    config: dict[str, object] = {"authorization": {"users": users}}
    if tls is not None and tls.cert_file:
        config["tls"] = {
            "cert_file": tls.cert_file,
            "key_file": tls.key_file,
            "ca_file": tls.ca_file,
            "timeout": 2,
        }
    return json.dumps(config, indent=2) + "\n"


def control_role_urls(url_for: Callable[[str], str]) -> dict[str, str]:
    """The control service's settings naming each role's NATS URL (`director_nats_url`: …),
    `url_for(user)` giving a user's URL; as environment: `BAYCAST_CONTROL_<FIELD>`."""
    return {f"{ROLE_NAMES[role]}_nats_url": url_for(user) for role, user in ROLE_USERS.items()}


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
