"""`baycast ctl alerts`: the alerts the monitoring service has active now."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from services.common.bus import subject
from services.common.ctl import Ctl, print_table, run_verb
from services.common.gen.baycast.v1 import monitoring_pb2


async def _alerts(ctl: Ctl, _args: argparse.Namespace) -> int:
    reply = await ctl.command(
        subject("monitoring", "alerts"), monitoring_pb2.AlertsRequest(), monitoring_pb2.AlertList
    )
    rows = [
        {
            "severity": a.severity,
            "condition": a.condition,
            "target": a.target,
            "since": datetime.fromtimestamp(a.raised_at_us / 1e6, UTC).strftime("%H:%M:%S"),
            "message": a.message,
        }
        for a in reply.alerts
    ]
    print_table(rows, ["severity", "condition", "target", "since", "message"])
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("alerts", help="list the alerts active now (from the monitoring service)")
    p.set_defaults(run=lambda args: run_verb(args, _alerts))
