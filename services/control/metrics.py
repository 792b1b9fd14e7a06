"""Every Prometheus metric of the control service, declared once."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "baycast_control_api_requests_total",
    "HTTP requests by route (its path template) and status code",
    ["route", "status"],
)
API_REQUEST_SECONDS = Histogram(
    "baycast_control_api_request_seconds",
    "Time to answer an HTTP request (event streams excluded), by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOGINS = Counter(
    "baycast_control_logins_total",
    "Browser logins by result: ok, unauthenticated, forbidden (not an operator), throttled",
    ["result"],
)
SESSIONS = Gauge("baycast_control_sessions", "Browser sessions open")
SESSIONS_ENDED = Counter(
    "baycast_control_sessions_ended_total",
    "Browser sessions ended, by reason: logout, expired, credential (token rotated or revoked)",
    ["reason"],
)
EVENT_CLIENTS = Gauge("baycast_control_event_clients", "Open event streams (Server-Sent Events)")
EVENT_CLIENTS_DROPPED = Counter(
    "baycast_control_event_clients_dropped_total",
    "Event streams closed by the service, by reason: slow (queue full), credential, draining",
    ["reason"],
)
EVENTS = Counter(
    "baycast_control_events_total", "Bus events fanned out to event streams, by event", ["event"]
)
COMMANDS = Counter(
    "baycast_control_commands_total",
    "Commands bridged to the bus for operators, by kind (service.verb) and result (ok or the "
    "error code, PERMISSION_DENIED for a role that may not send it)",
    ["kind", "result"],
)
OPERATOR_COMMANDS = Counter(
    "baycast_control_operator_commands_total",
    "operator.cmd commands handled, by verb and result",
    ["verb", "result"],
)
ASRUN_NOT_STORED = Counter(
    "baycast_control_asrun_not_stored_total",
    "As-run entries of bridged commands that JetStream did not store",
)
MEDIA_GRANTS = Counter(
    "baycast_control_media_grants_total",
    "Media grants asked for by pages, by result: ok, throttled, unavailable (no secret)",
    ["result"],
)
