"""The book of active alerts: one raise and one clear per condition and target.

Detectors call `raise_` and `clear` as often as they like; the book turns that into exactly one
`raised` event when a condition starts and one `cleared` event (with the same id) when it ends,
and hands each event to `publish`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import monitoring_pb2

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)

# condition -> (what it is about, severity)
CONDITIONS: dict[str, tuple[str, str]] = {
    "source_lost": ("source", WARNING),
    "program_lost": ("production", CRITICAL),
    "program_black": ("production", CRITICAL),
    "program_frozen": ("production", CRITICAL),
    "program_silent": ("production", CRITICAL),
    "program_loudness": ("production", WARNING),
    "output_retrying": ("output", WARNING),
    "output_failed": ("output", CRITICAL),
    "service_missing": ("service", WARNING),
    "nats_disconnected": ("bus", CRITICAL),
}


RETRY_S = 0.5

log = structlog.get_logger("monitoring.alerts")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class AlertKey:
    condition: str
    target: str


Publish = Callable[[monitoring_pb2.Alert], None]


class AlertBook:
    def __init__(self, instance: str, publish: Publish) -> None:
        self.instance = instance
        self.publish = publish
        self.active: dict[AlertKey, monitoring_pb2.Alert] = {}
        self.raised_total: dict[str, int] = {}

    def raise_(self, condition: str, target: str, message: str, value: float = 0.0) -> bool:
        """Raise `condition` on `target` unless it is already raised; True if it was raised now."""
        key = AlertKey(condition, target)
        if key in self.active:
            return False
        subject, severity = CONDITIONS[condition]
        raised_at = now_us()
        alert = monitoring_pb2.Alert(
            id=f"{condition}/{target}/{raised_at}",
            condition=condition,
            subject=subject,
            target=target,
            severity=severity,
            state=monitoring_pb2.ALERT_STATE_RAISED,
            raised_at_us=raised_at,
            message=message,
            value=value,
            instance=self.instance,
        )
        self.active[key] = alert
        self.raised_total[condition] = self.raised_total.get(condition, 0) + 1
        self.publish(alert)
        return True

    def clear(self, condition: str, target: str, message: str = "") -> bool:
        """Clear `condition` on `target` if it is raised; True if it was cleared now."""
        alert = self.active.pop(AlertKey(condition, target), None)
        if alert is None:
            return False
        cleared = monitoring_pb2.Alert()
        cleared.CopyFrom(alert)
        cleared.state = monitoring_pb2.ALERT_STATE_CLEARED
        cleared.cleared_at_us = now_us()
        if message:
            cleared.message = message
        self.publish(cleared)
        return True

    def set(
        self, condition: str, target: str, raised: bool, message: str, value: float = 0.0
    ) -> None:
        if raised:
            self.raise_(condition, target, message, value)
        else:
            self.clear(condition, target, message)

    def clear_target(self, target: str, message: str) -> None:
        """Clear every alert about `target` (it went away on purpose)."""
        for key in [k for k in self.active if k.target == target]:
            self.clear(key.condition, key.target, message)

    def is_active(self, condition: str, target: str) -> bool:
        return AlertKey(condition, target) in self.active

    def firing(self) -> list[monitoring_pb2.Alert]:
        return sorted(self.active.values(), key=lambda a: a.raised_at_us)

    def counts(self) -> dict[tuple[str, str], int]:
        """Active alerts per (condition, severity)."""
        out: dict[tuple[str, str], int] = {}
        for alert in self.active.values():
            key = (alert.condition, alert.severity)
            out[key] = out.get(key, 0) + 1
        return out


class AlertPublisher:
    """Sends alert events on `alert.<severity>` in the order they happened.

    Through a NATS outage they wait their turn (the client buffers while reconnecting; a publish
    that fails outright is tried again), so a raise is never overtaken by its clear.
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._queue: asyncio.Queue[monitoring_pb2.Alert] = asyncio.Queue()

    def put(self, alert: monitoring_pb2.Alert) -> None:
        raised = alert.state == monitoring_pb2.ALERT_STATE_RAISED
        (log.warning if raised else log.info)(
            "alert_raised" if raised else "alert_cleared",
            condition=alert.condition,
            target=alert.target,
            severity=alert.severity,
            message=alert.message,
        )
        self._queue.put_nowait(alert)

    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        while True:
            alert = await self._queue.get()
            while True:
                try:
                    await self.bus.publish(subject("alert", alert.severity), alert)
                    break
                except Exception as exc:
                    log.warning("alert_publish_failed", error=str(exc) or type(exc).__name__)
                    await asyncio.sleep(RETRY_S)
