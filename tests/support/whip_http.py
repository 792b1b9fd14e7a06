"""The WHIP side of the foreign test publishers (gst_whip.py, obs_whip.py), standard library only.

Those run under other Pythons (the system one, for GObject; build/obs-venv, for libdatachannel)
and import nothing of baycast: this module sits beside them and is imported as a sibling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

SDP = "application/sdp"
TIMEOUT_S = 8.0


class Failed(RuntimeError):
    """A step failed; the message says which and why."""


def say(event: str, **fields: Any) -> None:
    """One JSON line on stdout per step, for the test that runs the publisher."""
    print(json.dumps({"event": event, **fields}), flush=True)


def http(method: str, url: str, token: str, body: bytes | None = None) -> tuple[int, Any, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    if body is not None:
        headers["Content-Type"] = SDP
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
    except urllib.error.URLError as exc:
        raise Failed(f"{method} {url}: {exc.reason}") from None


class Resource:
    """The session a WHIP endpoint makes for an offer: POST it, DELETE it."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.location = ""

    def post(self, offer: str) -> str:
        """POST the offer; the answer (201 with a Location and an SDP body, or Failed)."""
        status, headers, body = http("POST", self.url, self.token, offer.encode())
        text = body.decode(errors="replace")
        if status != 201:
            raise Failed(f"POST {self.url}: {status} {text.strip()}")
        if headers.get_content_type() != SDP:
            raise Failed(f"the answer's Content-Type is {headers.get('Content-Type')}, not {SDP}")
        location = headers.get("Location")
        if not location:
            raise Failed("201 without a Location header")
        self.location = urllib.parse.urljoin(self.url, location)
        say("answered", status=status, location=location, answer=text)
        return text

    def delete(self) -> None:
        if not self.location:
            return
        location, self.location = self.location, ""
        status, _headers, body = http("DELETE", location, self.token)
        say("deleted", status=status)
        if status != 200:
            raise Failed(f"DELETE {location}: {status} {body.decode(errors='replace').strip()}")

    @contextlib.contextmanager
    def deleted_after(self) -> Iterator[None]:
        """DELETE the session when the block ends; after a failure, the failure is reported."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.delete()
            raise
        self.delete()


def stop_event() -> threading.Event:
    """An event that SIGTERM or SIGINT sets: the publisher stops, DELETEs, exits 0."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def arguments(description: str, tone_hz: float) -> argparse.ArgumentParser:
    """The options every test publisher takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("url", help="the WHIP URL, e.g. http://127.0.0.1:8101/whip/gz")
    parser.add_argument("--token", default=os.environ.get("BAYCAST_STATION_TOKEN", ""))
    parser.add_argument("--seconds", type=float, default=10.0, help="0: until SIGTERM/Ctrl-C")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--tone-hz", type=float, default=tone_hz)
    parser.add_argument("--ice-host", action="append", default=[], help="gather here only")
    return parser


def main(parser: argparse.ArgumentParser, publish: Callable[[argparse.Namespace], None]) -> int:
    """Parse, publish; a failure is one line on stderr and exit status 1."""
    args = parser.parse_args()
    if not args.token:
        parser.error("no token: pass --token or set BAYCAST_STATION_TOKEN")
    try:
        publish(args)
    except Failed as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
