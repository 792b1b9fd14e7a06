"""`baycast`: run a service, the whole platform, a station, or operator commands.

baycast ingest|mixer|graphics|distribution|monitoring|control   one service (what Kubernetes runs)
baycast up                                                      the platform and the demo show
baycast ctl ...                                                 operator commands over NATS
baycast station ...                                             a contribution client (WHIP)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

from services.common.telemetry import configure_logging

SERVICES = ("ingest", "mixer", "graphics", "distribution", "monitoring", "control")
# Modules that add `baycast ctl` verbs, each with `register(verbs)`: the shared ones, then each
# service's own `ctl.py` where the service has one.
CTL_MODULES = ("services.common.status_ctl", *(f"services.{name}.ctl" for name in SERVICES))
# Modules that add top-level commands, each with `register(sub)`.
COMMAND_MODULES = ("services.station.cli", "services.up")


def _present(module: str) -> bool:
    """Whether `module` exists (a module that exists but fails to import still raises)."""
    parent = module.rpartition(".")[0]
    if parent != "services" and importlib.util.find_spec(parent) is None:
        return False
    return importlib.util.find_spec(module) is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baycast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SERVICES:
        p = sub.add_parser(name, help=f"run the {name} service (settings from BAYCAST_* variables)")
        p.set_defaults(
            run=lambda _args, name=name: importlib.import_module(f"services.{name}.service").main()
        )

    ctl = sub.add_parser("ctl", help="operator commands over NATS")
    ctl.add_argument(
        "--nats", help="NATS URL (default: BAYCAST_NATS_URL, then .baycast/endpoints.json)"
    )
    verbs = ctl.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in filter(_present, CTL_MODULES):
        importlib.import_module(module).register(verbs)

    for module in filter(_present, COMMAND_MODULES):
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command not in SERVICES:
        # Operator commands and clients print results on stdout; their logs go to stderr.
        configure_logging(
            os.environ.get("BAYCAST_LOG_FORMAT", "auto"), "warning", stream=sys.stderr
        )
    code = args.run(args)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
