"""The book of active alerts: one raise and one clear per condition and target.

Detectors call `raise_` and `clear` as often as they like; the book turns that into exactly one
`raised` event when a condition starts and one `cleared` event (with the same id) when it ends,
and hands each event to `publish`.

Every monitoring replica keeps a book; only the one on duty publishes it (services/monitoring/
alert_duty.py). A book starts from the alerts already published as firing (`seed`), and the
replica that comes on duty reconciles its book with them (`take_over`) so that nothing the last
replica on duty raised is raised again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
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
# Each replica judges its own connection to NATS: this condition is never inherited.
OWN_CONDITIONS = ("nats_disconnected",)

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

    def seed(self, published: Iterable[monitoring_pb2.Alert]) -> None:
        """Start from the alerts published as firing before this replica started, without an
        event: its detectors clear them when they find the conditions over (their `adopt_alerts`
        lets each detector see the alerts it did not raise itself)."""
        for alert in published:
            key = AlertKey(alert.condition, alert.target)
            if alert.condition in CONDITIONS and alert.condition not in OWN_CONDITIONS:
                self.active.setdefault(key, alert)

    def take_over(self, published: Iterable[monitoring_pb2.Alert]) -> None:
        """This replica publishes from now on; `published` is what the last one on duty left
        as firing. No alert is published twice: one both know keeps its published id (its
        clear will carry it); one only this book has is raised; one only `published` has is
        adopted like a seed (the detector clears it within its clear time if it is over; a
        condition this replica is still confirming is not cleared and raised again), except
        another replica's own conditions (its NATS connection), which are cleared."""
        before = {AlertKey(a.condition, a.target): a for a in published}
        for key, alert in list(self.active.items()):
            if key in before:
                self.active[key] = before.pop(key)
            else:
                self.publish(alert)
        for key, alert in before.items():
            if alert.condition not in CONDITIONS or alert.condition in OWN_CONDITIONS:
                cleared = monitoring_pb2.Alert()
                cleared.CopyFrom(alert)
                cleared.state = monitoring_pb2.ALERT_STATE_CLEARED
                cleared.cleared_at_us = now_us()
                cleared.message = f"{alert.target} is no longer on duty"
                self.publish(cleared)
            else:
                self.active[key] = alert

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
    """Sends alert events on `alert.<severity>` in the order they happened, while on duty.

    Through a NATS outage they wait their turn (the client buffers while reconnecting; a publish
    that fails outright is tried again), so a raise is never overtaken by its clear. It keeps the
    alerts it has published as firing and, after each burst of events, stores them (`store`:
    the firing record the next replica on duty starts from).
    """

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.on_duty = False
        # What this replica has published as firing, by condition and target.
        self.sent: dict[AlertKey, monitoring_pb2.Alert] = {}
        self.store: Callable[[list[monitoring_pb2.Alert]], Awaitable[None]] | None = None
        self._queue: asyncio.Queue[monitoring_pb2.Alert] = asyncio.Queue()
        self._unsaved = False

    def start_duty(self, published: Iterable[monitoring_pb2.Alert]) -> None:
        """Publish from now on, after `published` (the firing record left by the last duty)."""
        self.sent = {AlertKey(a.condition, a.target): a for a in published}
        self.on_duty = True

    def put(self, alert: monitoring_pb2.Alert) -> None:
        raised = alert.state == monitoring_pb2.ALERT_STATE_RAISED
        if not self.on_duty:  # another replica publishes: this one only judges
            log.debug("alert_judged", condition=alert.condition, target=alert.target, raised=raised)
            return
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

    def drop(self) -> None:
        """Off duty without a handover (another replica took the duty): forget what waits."""
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        self._unsaved = False

    async def flush(self, timeout: float) -> None:
        """Send what waits and store the firing record, for at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
                await self._save()

    async def run(self) -> None:
        while True:
            if self._unsaved and self._queue.empty() and self.on_duty:
                await self._save()
            try:
                alert = await asyncio.wait_for(
                    self._queue.get(), timeout=RETRY_S if self._unsaved and self.on_duty else None
                )
            except TimeoutError:
                continue  # the record is still unsaved: try it again
            try:
                await self._send(alert)
            finally:
                self._queue.task_done()

    async def _send(self, alert: monitoring_pb2.Alert) -> None:
        while True:
            try:
                await self.bus.publish(subject("alert", alert.severity), alert)
                break
            except Exception as exc:
                log.warning("alert_publish_failed", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(RETRY_S)
        key = AlertKey(alert.condition, alert.target)
        if alert.state == monitoring_pb2.ALERT_STATE_RAISED:
            self.sent[key] = alert
        else:
            self.sent.pop(key, None)
        self._unsaved = True

    async def _save(self) -> None:
        if self.store is None:
            self._unsaved = False
            return
        try:
            await self.store(list(self.sent.values()))
            self._unsaved = False
        except Exception as exc:  # tried again a moment later
            log.warning("firing_record_not_stored", error=str(exc) or type(exc).__name__)
