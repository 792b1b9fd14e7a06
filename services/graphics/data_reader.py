"""Reads bound documents as the data policy allows: URLs through a guarded HTTP client, files
from the data folder.

The HTTP client resolves host names itself and refuses an answer that holds an address the policy
forbids; the connection then goes to the addresses it checked, never to a second lookup, so a
name that changes its answer between check and connect (DNS rebinding) still cannot reach a
forbidden address. Redirects are followed here, one at a time, each target checked like the
first URL. Bodies and files are read up to the policy's size and a URL answers within its time.
The client keeps no cookies and ignores proxy variables.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from typing import NamedTuple

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from services.graphics.data_policy import (
    MAX_BYTES_VAR,
    RULE_NOT_A_FILE,
    RULE_REDIRECT,
    RULE_TOO_LARGE,
    BindingRefused,
    DataPolicy,
)

MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "baycast-graphics"
_CHUNK = 64 * 1024


class FileStamp(NamedTuple):
    """What tells a file changed: which file (a link may point elsewhere now), when, how big."""

    device: int
    inode: int
    mtime_ns: int
    size: int


class GuardedResolver(AbstractResolver):
    """Resolves like `system` (the system's resolver by default), then refuses every answer
    that holds a forbidden address."""

    def __init__(self, policy: DataPolicy, system: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._system = system or aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._system.resolve(host, port, family)
        for answer in found:
            self._policy.check_address(answer["host"], f"{host}:{port}")
        return found

    async def close(self) -> None:
        await self._system.close()


class DataReader:
    """The one way a binding reads its source. Open it inside the event loop; close it once."""

    def __init__(self, policy: DataPolicy, resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        guarded = GuardedResolver(policy, resolver)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=guarded, limit=32),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            trust_env=False,
        )

    async def close(self) -> None:
        await self._session.close()

    # -- URLs ----------------------------------------------------------------------------------

    async def fetch(self, url: str, timeout_s: float) -> bytes:
        """The body at `url`, redirects followed within the policy. BindingRefused when the
        policy refuses it, aiohttp.ClientError or TimeoutError when the source fails."""
        timeout_s = min(timeout_s, self.policy.timeout_s)
        target = self.policy.check_url(url)
        try:
            async with asyncio.timeout(timeout_s):
                for hop in range(MAX_REDIRECTS + 1):
                    try:
                        body, location = await self._get(target, timeout_s)
                    except BindingRefused as exc:
                        raise (exc if hop == 0 else _via_redirect(url, target, exc)) from None
                    if location is None:
                        return body
                    nxt = target.join(URL(location))
                    try:
                        target = self.policy.check_url(nxt)
                    except BindingRefused as exc:
                        raise _via_redirect(url, nxt, exc) from None
        except TimeoutError:
            raise TimeoutError(f"{url!r} did not answer within {timeout_s:g} s") from None
        raise BindingRefused(RULE_REDIRECT, url, f"{url!r} redirects more than {MAX_REDIRECTS}x")

    async def _get(self, url: URL, timeout_s: float) -> tuple[bytes, str | None]:
        """(body, None), or (b"", the Location) for a redirect."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with self._session.get(url, allow_redirects=False, timeout=timeout) as resp:
            location = resp.headers.get("Location")
            if resp.status in REDIRECT_STATUSES and location:
                return b"", location
            resp.raise_for_status()
            limit = self.policy.max_bytes
            if (resp.content_length or 0) > limit:
                raise _too_large(str(url), limit)
            body = bytearray()
            async for chunk in resp.content.iter_chunked(_CHUNK):
                body += chunk
                if len(body) > limit:  # also what a compressed body unpacks to
                    raise _too_large(str(url), limit)
            return bytes(body), None

    # -- files ---------------------------------------------------------------------------------

    async def read_file(
        self, path: str, unless: FileStamp | None
    ) -> tuple[FileStamp, bytes | None]:
        """(stamp, content) of a file in the data folder; content None when the stamp is still
        `unless`. BindingRefused when the policy refuses it, OSError when it cannot be read."""
        return await asyncio.to_thread(self._read_file, path, unless)

    def _read_file(self, path: str, unless: FileStamp | None) -> tuple[FileStamp, bytes | None]:
        real = self.policy.resolve_file(path)
        # No link at the end (it was resolved just now), and no waiting on a FIFO.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(real, flags)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise BindingRefused(RULE_NOT_A_FILE, path, f"{path!r} is not a regular file")
            self.policy.check_opened(fd, path)
            stamp = FileStamp(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == unless:
                return stamp, None
            limit = self.policy.max_bytes
            with os.fdopen(os.dup(fd), "rb") as f:
                content = f.read(limit + 1)
            if len(content) > limit:
                raise _too_large(path, limit)
            return stamp, content
        finally:
            os.close(fd)


def _via_redirect(url: str, to: URL | str, cause: BindingRefused) -> BindingRefused:
    return BindingRefused(
        RULE_REDIRECT, url, f"{url!r} redirects to {str(to)!r}, refused: {cause.reason}"
    )


def _too_large(target: str, limit: int) -> BindingRefused:
    return BindingRefused(
        RULE_TOO_LARGE, target, f"{target!r} holds more than {limit} bytes ({MAX_BYTES_VAR})"
    )
