"""The control plane: NATS connection, typed commands and events, JetStream key-value state.

Every message is a protobuf message carried as its canonical JSON mapping, so one schema serves
gRPC and NATS and a human can read the bus (`nats sub 'baycast.v1.>'`).

Commands are request/reply. A command that does not parse (unknown field, wrong type, oversized)
gets an `ErrorReply` naming the problem and never reaches its handler. A command may carry a
`Baycast-Command-Id` header: a retried command with the same id gets the first reply again and is
applied once, which is what lets `baycast ctl` retry through a NATS outage; where a queue group
spreads a command's retries over several replicas, a shared record (`SharedReplies`, the
`command-log` bucket of services/common/command_log.py) makes that hold across them. A command
sent on an operator's behalf (by the control service) carries `Baycast-Operator: <id>`; its
handler reads it with `acting_operator()` to write who did what into the as-run log.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import re
import ssl
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
import nats.errors
import nats.js.errors
import structlog
from google.protobuf import json_format
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from services.common import errors
from services.common.gen.baycast.v1 import control_pb2

PREFIX = "baycast.v1."
COMMAND_ID_HEADER = "Baycast-Command-Id"
STATUS_HEADER = "Baycast-Status"
OPERATOR_HEADER = "Baycast-Operator"
SUBJECT_HEADER = "Baycast-Subject"  # the subject a command forwarded to its owner was sent on
FORWARD_TIMEOUT_S = 4.0
# The mixer's productions, which other services follow read-only.
PRODUCTIONS_BUCKET = "mixer-productions"
DEFAULT_MAX_COMMAND_BYTES = 64 * 1024
# A dead or hung server is noticed after ping_interval * max_outstanding_pings (< 10 s).
PING_INTERVAL_S = 3
MAX_OUTSTANDING_PINGS = 2
RECONNECT_WAIT_S = 0.5
CONNECT_TIMEOUT_S = 2
# A bucket's keys arrive back to back; this long without the next one, the read has failed.
KEYS_TIMEOUT_S = 5.0
# The server drops a finished key listing's consumer this long after it is left. nats-py's
# default (5 min) kept one per listing: a bucket listed every second held 300 of them, and
# nats-server's memory grew with them.
KEYS_INACTIVE_S = 2.0
DRAIN_TIMEOUT_S = 5
REPLAY_CACHE_SIZE = 1024
KV_OPEN_WAIT_S = 30.0
# What a handler meets while NATS or a JetStream stream is unavailable: the command failed for now.
TRANSIENT = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)

log = structlog.get_logger("bus")

_operator: contextvars.ContextVar[str] = contextvars.ContextVar("operator", default="")


def acting_operator() -> str:
    """The operator on whose behalf the command being handled was sent ("" when none said)."""
    return _operator.get()


def subject(*parts: str) -> str:
    """`subject("prod", "qihang", "mixer", "cmd")` -> `baycast.v1.prod.qihang.mixer.cmd`."""
    for part in parts:
        if not part or any(c in part for c in " .*>\t\r\n"):
            raise errors.InvalidArgument(f"{part!r} cannot be part of a subject")
    return PREFIX + ".".join(parts)


# The verb token of a command with none set (its service refuses it as invalid).
NO_VERB = "_"


def command_verb(command: Message) -> str:
    """The field set in the command's `command` oneof (`cut`), or NO_VERB."""
    if "command" not in command.DESCRIPTOR.oneofs_by_name:
        return NO_VERB
    return command.WhichOneof("command") or NO_VERB


def command_subject(subj: str, command: Message) -> str:
    """A command travels on its verb's subject: `…prod.qh.mixer.cmd` + a cut ->
    `…prod.qh.mixer.cmd.cut`, so a user's grants can name some verbs of a service and not
    others (a control-room role's: services/common/roles.py). Other subjects are unchanged."""
    return f"{subj}.{command_verb(command)}" if subj.endswith(".cmd") else subj


def verb_pattern(pattern: str) -> str:
    """What a server of `…cmd` subscribes: every verb (`…cmd.*`)."""
    return f"{pattern}.*" if pattern.endswith(".cmd") else pattern


def split_verb(subj: str) -> tuple[str, str | None]:
    """`…mixer.cmd.cut` -> (`…mixer.cmd`, "cut"); any other subject -> (it, None)."""
    base, _, verb = subj.rpartition(".")
    return (base, verb) if base.endswith(".cmd") else (subj, None)


def inbox_prefix(user: str) -> str:
    """Where replies to `user`'s requests arrive: `_INBOX.<user>`, a prefix only that user may
    subscribe (nats_accounts.py), so no service reads the replies another one asked for."""
    return f"_INBOX.{user}" if user else "_INBOX"


def url_user(url: str) -> str:
    """The user named in the first server of a NATS URL ("" for none)."""
    return unquote(urlsplit(url.split(",")[0].strip()).username or "")


def subject_token(subj: str, index: int) -> str:
    """The `index`-th token after the prefix: ("baycast.v1.prod.qh.gfx.cmd", 1) -> "qh"."""
    return subj[len(PREFIX) :].split(".")[index]


def redact_url(url: str) -> str:
    """`nats://user:secret@host:4222` -> `nats://***@host:4222`: credentials never reach a log.
    A list of servers (`nats://a:4222,nats://b:4222`) is redacted server by server."""
    if "," in url:
        return ",".join(redact_url(u.strip()) for u in url.split(","))
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def encode(message: Message) -> bytes:
    return json_format.MessageToJson(message, indent=None, ensure_ascii=False).encode()


_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')


def _field_path(detail: str) -> str:
    """The dotted JSON path of the field a ParseError complains about."""
    path = _PARSE_FIELD.findall(detail)
    unknown = _UNKNOWN_FIELD.search(detail)
    if unknown:
        path.append(unknown.group(1))
    return ".".join(path)


def decode(data: bytes, message_type: type[M]) -> M:
    """Parse canonical JSON strictly; raise InvalidArgument naming the offending field."""
    message = message_type()
    try:
        text = data.decode()
        json_format.Parse(text or "{}", message, ignore_unknown_fields=False)
    except UnicodeDecodeError:
        raise errors.InvalidArgument("payload is not UTF-8 JSON") from None
    except json_format.ParseError as exc:
        detail = str(exc).split("\n")[0]
        raise errors.InvalidArgument(detail, field=_field_path(detail)) from None
    return message


def error_reply(exc: errors.BaycastError) -> bytes:
    return encode(control_pb2.ErrorReply(code=exc.code, message=exc.message, field=exc.field))


class SharedReplies(Protocol):
    """Replies of commands served by a queue group, shared by its members (CommandLog)."""

    async def begin(self, subj: str, command_id: str) -> tuple[bytes, dict[str, str]] | None:
        """The stored reply when the command was applied already; None: apply it, then `end`.
        Raises errors.Unavailable when it cannot tell (the command must not be applied)."""

    async def end(
        self, subj: str, command_id: str, data: bytes, headers: dict[str, str], *, keep: bool
    ) -> None:
        """Store the reply of a command `begin` let this member apply (`keep`), or forget the
        command (its reply was a passing failure: a retry must apply it)."""


Handler = Callable[[M], Awaitable[Message]]
SubjectHandler = Callable[[M, str], Awaitable[Message]]
EventHandler = Callable[[M, str], Awaitable[None]]


async def _drain_one(sub: Subscription) -> None:
    """Drain one subscription; one its owner unsubscribed already is nothing to drain."""
    with contextlib.suppress(nats.errors.Error):
        await sub.drain()


class Bus:
    """One NATS connection per service, reconnecting forever."""

    def __init__(
        self,
        url: str,
        name: str,
        *,
        max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES,
        on_connection_change: Callable[[bool], None] | None = None,
        replicas: int = 1,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        # Verifies the servers of a `tls://` URL (or of a server that requires TLS): the
        # platform's CA on top of the system's roots (services/common/tls.py).
        self.tls = tls
        # Replicas of every key-value bucket and stream this bus creates (the JetStream cluster's
        # size: 3 on three servers, 1 on one).
        self.replicas = replicas
        self.shared_replies: SharedReplies | None = None
        self.name = name
        self.max_command_bytes = max_command_bytes
        self.nc: Client = Client()
        self.connected = False
        self.disconnects = 0
        self.closing = False
        self._on_connection_change = on_connection_change
        # What this bus subscribed for its service: drained before the connection (see drain).
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._replies: OrderedDict[str, tuple[bytes, dict[str, str]]] = OrderedDict()

    async def connect(self, *, stop: asyncio.Event | None = None) -> None:
        """Connect, retrying until the server answers (or `stop` is set)."""
        delay = RECONNECT_WAIT_S
        while True:
            try:
                await self.nc.connect(
                    servers=[u.strip() for u in self.url.split(",")],
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                    connect_timeout=CONNECT_TIMEOUT_S,
                    ping_interval=PING_INTERVAL_S,
                    max_outstanding_pings=MAX_OUTSTANDING_PINGS,
                    drain_timeout=DRAIN_TIMEOUT_S,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    closed_cb=self._on_closed,
                    inbox_prefix=inbox_prefix(url_user(self.url)),
                    tls=self.tls,
                )
                break
            except (OSError, nats.errors.NoServersError, TimeoutError) as exc:
                log.warning(
                    "nats_connect_failed", url=redact_url(self.url), error=str(exc), retry_in=delay
                )
                self.nc = Client()
                if stop is not None and stop.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._set_connected(True)
        log.info("nats_connected", url=redact_url(self.url))

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        if self._on_connection_change is not None:
            self._on_connection_change(up)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats_error", error=str(exc) or type(exc).__name__)

    async def _on_disconnected(self) -> None:
        if self.connected and not self.closing:
            self.disconnects += 1
            log.warning("nats_disconnected")
        self._set_connected(False)

    async def _on_reconnected(self) -> None:
        self._set_connected(True)
        log.info(
            "nats_reconnected",
            url=redact_url(self.nc.connected_url.geturl() if self.nc.connected_url else ""),
        )

    async def _on_closed(self) -> None:
        self._set_connected(False)

    async def drain(self) -> None:
        """Finish what the subscriptions hold, take nothing new, flush, close.

        The service's subscriptions drain first, while the connection's reply inbox still
        listens: a handler finishing during the drain (a key-value write, a request of its own)
        gets its answer. nats-py's drain takes every subscription at once, the reply inbox
        among them, and such a handler would wait out its timeout and fail its command.
        """
        if self.nc.is_closed:
            return
        self.closing = True
        if self.nc.is_connected:  # (a connection that is down has nothing to finish)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(DRAIN_TIMEOUT_S):
                    await asyncio.gather(*(_drain_one(s) for s in list(self._subscriptions)))
        with contextlib.suppress(Exception):
            await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()

    # -- events --------------------------------------------------------------------------------

    async def publish(self, subj: str, message: Message) -> None:
        await self.nc.publish(subj, encode(message))

    async def subscribe(
        self, subj: str, message_type: type[M], handler: EventHandler[M], *, queue: str = ""
    ) -> Any:
        """Deliver each parsed event with its subject; malformed events are logged and dropped."""

        async def on_msg(msg: Msg) -> None:
            try:
                event = decode(msg.data, message_type)
            except errors.InvalidArgument as exc:
                log.warning("event_malformed", subject=msg.subject, error=exc.message)
                return
            try:
                await handler(event, msg.subject)
            except Exception:
                log.exception("event_handler_failed", subject=msg.subject)

        return self._track(await self.nc.subscribe(subj, queue=queue, cb=on_msg))

    def _track(self, sub: Subscription) -> Subscription:
        self._subscriptions.add(sub)
        return sub

    # -- commands ------------------------------------------------------------------------------

    async def serve(
        self, subj: str, request_type: type[M], handler: Handler[M], *, queue: str = ""
    ) -> Any:
        """Answer commands on `subj`: parse, validate, call `handler`, reply (or reply an error)."""

        async def with_subject(request: M, _subject: str) -> Message:
            return await handler(request)

        return await self.serve_each(subj, request_type, with_subject, queue=queue)

    async def serve_each(
        self, pattern: str, request_type: type[M], handler: SubjectHandler[M], *, queue: str = ""
    ) -> Any:
        """`serve` for a wildcard subject (`prod.*.gfx.cmd`): the handler also gets the subject
        (without the command's verb)."""

        async def on_msg(msg: Msg) -> None:
            await self._serve_msg(msg, msg.subject, request_type, handler, shared=bool(queue))

        return self._track(await self.nc.subscribe(verb_pattern(pattern), queue=queue, cb=on_msg))

    async def serve_owned(
        self,
        pattern: str,
        request_type: type[M],
        handler: SubjectHandler[M],
        *,
        queue: str,
        owner_of: Callable[[str], Awaitable[str]],
        route_subject: str,
    ) -> list[Any]:
        """`serve_each` for commands of units that one replica owns (services/common/steward.py).

        The queue group's member that receives a command asks `owner_of(subject)`: "" means it
        handles the command itself; otherwise it is the route subject of the owner, to which it
        forwards the command (original subject in a header) and relays the owner's reply.
        `route_subject` is this replica's own: it handles what other members forward to it.
        """

        async def on_msg(msg: Msg) -> None:
            try:
                # A command that cannot be applied is refused here: it must not move a unit.
                self._parse(msg, msg.subject, request_type)
                target = await owner_of(split_verb(msg.subject)[0])
            except errors.BaycastError as exc:
                await self._respond(msg, error_reply(exc), {STATUS_HEADER: "error"})
                return
            except Exception as exc:
                failure = errors.Unavailable(f"its owner is unknown ({type(exc).__name__}): retry")
                await self._respond(msg, error_reply(failure), {STATUS_HEADER: "error"})
                return
            if not target:
                await self._serve_msg(msg, msg.subject, request_type, handler, shared=True)
                return
            data, headers = await self._forward(msg, target)
            await self._respond(msg, data, headers)

        async def on_routed(msg: Msg) -> None:
            original = (msg.headers or {}).get(SUBJECT_HEADER, "")
            if not original.startswith(PREFIX):
                exc = errors.InvalidArgument("a routed command names no subject")
                await self._respond(msg, error_reply(exc), {STATUS_HEADER: "error"})
                return
            await self._serve_msg(msg, original, request_type, handler, shared=True)

        return [
            self._track(await self.nc.subscribe(verb_pattern(pattern), queue=queue, cb=on_msg)),
            self._track(await self.nc.subscribe(route_subject, cb=on_routed)),
        ]

    async def _forward(self, msg: Msg, target: str) -> tuple[bytes, dict[str, str]]:
        """The owner's reply to `msg` forwarded to `target`, or an UNAVAILABLE error (retry)."""
        headers = {**(msg.headers or {}), SUBJECT_HEADER: msg.subject}
        try:
            reply = await self.nc.request(
                target, msg.data, timeout=FORWARD_TIMEOUT_S, headers=headers
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            failure = errors.Unavailable(
                f"the replica that runs it did not answer ({type(exc).__name__}): retry"
            )
            return error_reply(failure), {STATUS_HEADER: "error"}
        return reply.data, dict(reply.headers or {})

    async def _serve_msg(
        self,
        msg: Msg,
        subj: str,
        request_type: type[M],
        handler: SubjectHandler[M],
        *,
        shared: bool,
    ) -> None:
        """Answer one command sent on `subj` (with its verb), once per command id: from this
        replica's cache, from the shared record (`shared`: a queue group serves it), or by
        applying it. The record and the handler see the subject without the verb."""
        command_id = (msg.headers or {}).get(COMMAND_ID_HEADER, "")
        if command_id and command_id in self._replies:
            data, headers = self._replies[command_id]
            await self._respond(msg, data, headers)
            return
        record = self.shared_replies if shared and command_id else None
        try:
            stored = await record.begin(split_verb(subj)[0], command_id) if record else None
        except errors.Unavailable as exc:  # the record is out of reach: the client retries
            await self._respond(msg, error_reply(exc), {STATUS_HEADER: "error"})
            return
        if stored is not None:
            await self._respond(msg, *stored)
            return
        data, headers, passing = await self._handle(msg, subj, request_type, handler)
        subj = split_verb(subj)[0]
        if record is not None:
            await record.end(subj, command_id, data, headers, keep=not passing)
        if command_id and not passing:
            self._replies[command_id] = (data, headers)
            while len(self._replies) > REPLAY_CACHE_SIZE:
                self._replies.popitem(last=False)
        await self._respond(msg, data, headers)

    async def _handle(
        self, msg: Msg, subj: str, request_type: type[M], handler: SubjectHandler[M]
    ) -> tuple[bytes, dict[str, str], bool]:
        """The reply, its headers, and whether it is a passing failure (UNAVAILABLE: a retry
        of the same command id must be applied, not answered from a cache)."""
        try:
            request = self._parse(msg, subj, request_type)
            token = _operator.set((msg.headers or {}).get(OPERATOR_HEADER, "")[:64])
            try:
                reply = await handler(request, split_verb(subj)[0])
            finally:
                _operator.reset(token)
            return encode(reply), {STATUS_HEADER: "ok"}, False
        except errors.BaycastError as exc:
            log.info(
                "command_refused",
                subject=subj,
                code=exc.code,
                reason=exc.message,
                field=exc.field,
            )
            return error_reply(exc), {STATUS_HEADER: "error"}, isinstance(exc, errors.Unavailable)
        except TRANSIENT as exc:
            # The state store is between leaders (a JetStream election takes seconds) or NATS
            # is away: nothing was stored, and the same command id must be applied on retry.
            log.warning("command_unavailable", subject=subj, error=repr(exc))
            retry = errors.Unavailable(f"state store unavailable ({type(exc).__name__}): retry")
            return error_reply(retry), {STATUS_HEADER: "error"}, True
        except Exception as exc:
            log.exception("command_failed", subject=subj)
            failure = error_reply(errors.BaycastError(f"internal error: {type(exc).__name__}"))
            return failure, {STATUS_HEADER: "error"}, False

    def _parse(self, msg: Msg, subj: str, request_type: type[M]) -> M:
        """The command, if it fits and its verb is the one its subject names."""
        if len(msg.data) > self.max_command_bytes:
            raise errors.PayloadTooLarge(
                f"command is {len(msg.data)} bytes, the limit is {self.max_command_bytes}"
            )
        request = decode(msg.data, request_type)
        verb = split_verb(subj)[1]
        if verb is not None and command_verb(request) != verb:
            raise errors.InvalidArgument(
                f"the subject names the verb {verb!r}, the command is {command_verb(request)!r}",
                field="command",
            )
        return request

    async def _respond(self, msg: Msg, data: bytes, headers: dict[str, str]) -> None:
        if not msg.reply:
            return
        with contextlib.suppress(nats.errors.ConnectionClosedError):
            await self.nc.publish(msg.reply, data, headers=headers)

    async def request(
        self,
        subj: str,
        command: Message,
        reply_type: type[R],
        *,
        timeout: float = 5.0,
        command_id: str | None = None,
        operator: str = "",
    ) -> R:
        """Send a command and return its typed reply, or raise the error the service replied."""
        headers = {COMMAND_ID_HEADER: command_id or uuid.uuid4().hex}
        if operator:
            headers[OPERATOR_HEADER] = operator
        subj = command_subject(subj, command)
        try:
            msg = await self.nc.request(subj, encode(command), timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise errors.Unavailable(f"no service answers {subj}") from None
        except nats.errors.TimeoutError:
            raise errors.Unavailable(f"no reply on {subj} within {timeout:g} s") from None
        if (msg.headers or {}).get(STATUS_HEADER) == "error":
            err = decode(msg.data, control_pb2.ErrorReply)
            raise errors.from_code(err.code, err.message, err.field)
        return decode(msg.data, reply_type)

    # -- key-value state -----------------------------------------------------------------------

    async def kv(
        self, bucket: str, message_type: type[M], *, history: int = 1, max_age_s: float = 0.0
    ) -> KvBucket[M]:
        """Open a JetStream key-value bucket of `message_type` values, creating it if needed
        with `self.replicas` replicas (raising a smaller count found, so that a deployment that
        grew to a cluster gets the durability it asks for). `max_age_s`: entries expire.

        A service starting while the cluster elects a leader (or forms) waits for it, up to
        `KV_OPEN_WAIT_S`, instead of failing its start."""
        deadline = time.monotonic() + KV_OPEN_WAIT_S
        delay = 0.2
        while True:
            try:
                store = await self._open_kv(bucket, history, max_age_s)
                await self.ensure_replicas(f"KV_{bucket}")
                return KvBucket(store, message_type)
            # Not found just after it was opened or made: a server whose view of the cluster's
            # streams lags behind (seen while three servers and a dozen services start at once).
            except (*TRANSIENT, nats.js.errors.NotFoundError) as exc:
                if time.monotonic() + delay > deadline:
                    raise errors.Unavailable(
                        f"the key-value bucket {bucket} did not open ({type(exc).__name__})"
                    ) from None
                log.warning("kv_open_waiting", bucket=bucket, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _open_kv(self, bucket: str, history: int, max_age_s: float) -> KeyValue:
        js = self.nc.jetstream()
        try:
            return await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            pass
        config = KeyValueConfig(
            bucket=bucket,
            history=history,
            replicas=self.replicas,
            storage=StorageType.FILE,
            ttl=max_age_s or None,
        )
        try:
            return await js.create_key_value(config)
        except nats.js.errors.ServiceUnavailableError:
            raise
        except nats.js.errors.APIError as exc:
            try:
                return await js.key_value(bucket)  # another instance created it meanwhile
            except nats.js.errors.BucketNotFoundError:
                raise errors.Unavailable(
                    f"cannot create the key-value bucket {bucket} with {self.replicas} "
                    f"replica(s): {exc.description} (BAYCAST_JETSTREAM_REPLICAS is the "
                    "number of JetStream servers)"
                ) from None

    async def ensure_replicas(self, stream: str) -> None:
        """Raise the replicas of `stream` to `self.replicas` (never lower them)."""
        if self.replicas <= 1:
            return
        js = self.nc.jetstream()
        info = await js.stream_info(stream)
        if (info.config.num_replicas or 1) >= self.replicas:
            return
        info.config.num_replicas = self.replicas
        try:
            await js.update_stream(info.config)
        except nats.js.errors.APIError as exc:
            raise errors.Unavailable(
                f"cannot raise {stream} to {self.replicas} replicas: {exc.description}"
            ) from None
        log.info("stream_replicas_raised", stream=stream, replicas=self.replicas)


@dataclass
class Entry(Generic[M]):
    value: M
    revision: int


KV_READ_ATTEMPTS = 2
WRONG_LAST_SEQUENCE = 10071  # JetStream's err_code for a compare-and-set that lost


class KvBucket(Generic[M]):
    """Typed JetStream key-value access with compare-and-swap updates."""

    def __init__(self, store: KeyValue, message_type: type[M]) -> None:
        self.store = store
        self.message_type = message_type

    async def get(self, key: str) -> Entry[M] | None:
        """The key's entry, or None. A read left unanswered is asked once more: on a replicated
        bucket any replica may answer a read, and one not yet current with a new bucket (or a
        new leader) may leave it unanswered; a read is safe to repeat."""
        for attempt in range(KV_READ_ATTEMPTS):
            try:
                entry = await self.store.get(key)
                break
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None
            except nats.errors.TimeoutError:
                if attempt + 1 == KV_READ_ATTEMPTS:
                    raise
                log.warning("kv_read_unanswered", bucket=self.store._name, key=key)
        if entry.value is None or entry.revision is None:
            return None
        return Entry(decode(entry.value, self.message_type), entry.revision)

    async def put(self, key: str, value: M) -> int:
        return await self.store.put(key, encode(value))

    async def create(self, key: str, value: M) -> int:
        """Store `value` only if `key` does not exist yet."""
        try:
            return await self.store.create(key, encode(value))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise errors.AlreadyExists(f"{key} already exists", field="id") from None

    async def update(self, key: str, change: Callable[[M | None], M], *, attempts: int = 10) -> M:
        """Read-modify-write with compare-and-swap; `change` may be called more than once."""
        return (await self.update_entry(key, change, attempts=attempts)).value

    async def update_entry(
        self, key: str, change: Callable[[M | None], M], *, attempts: int = 10
    ) -> Entry[M]:
        """`update`, answering the value written and its revision."""
        for _ in range(attempts):
            current = await self.get(key)
            value = change(current.value if current else None)
            try:
                if current is None:
                    revision = await self.store.create(key, encode(value))
                else:
                    revision = await self.store.update(key, encode(value), last=current.revision)
                return Entry(value, revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise errors.Conflict(f"{key} changed under us {attempts} times in a row")

    async def delete(self, key: str, *, last: int | None = None) -> bool:
        """Delete `key`; with `last`, only while its revision is still `last` (False if not)."""
        try:
            await self.store.delete(key, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except nats.js.errors.BadRequestError as exc:  # nats-py leaves a delete's refusal raw
            if exc.err_code == WRONG_LAST_SEQUENCE:
                return False
            raise
        return True

    async def keys(self) -> list[str]:
        """The keys that hold a value now.

        Not nats-py's `KeyValue.keys()`: its watcher can signal "no more" before it has handled
        the entries already received (nats-io/nats.py#842), and then a bucket of thousands of
        keys reads as empty (seen here: 2 reads in 50 of a 2000-key bucket). This reads the last
        entry of every key until the server says none is pending, whatever the watcher signals.
        """
        if (await self.store.status()).values == 0:
            return []
        watcher = await self.store.watchall(meta_only=True, inactive_threshold=KEYS_INACTIVE_S)
        keys: list[str] = []
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=KEYS_TIMEOUT_S)
                except nats.errors.TimeoutError:
                    raise errors.Unavailable(
                        f"the keys of a bucket stopped arriving after {len(keys)}"
                    ) from None
                if entry is None:
                    continue  # the watcher's "no more" marker: the pending count decides
                if entry.operation is None:  # a value, not a delete or purge marker
                    keys.append(entry.key)
                if entry.delta == 0:
                    return keys
        finally:
            await watcher.stop()

    async def items(self) -> dict[str, M]:
        out: dict[str, M] = {}
        for key in await self.keys():
            entry = await self.get(key)
            if entry is not None:
                out[key] = entry.value
        return out
