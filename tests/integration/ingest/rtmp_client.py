"""A raw RTMP client for tests: what an encoder sends up to `publish`, or anything else, from any
loopback address (every address of 127.0.0.0/8 reaches a listener on 127.0.0.1 and counts as a
client of its own).

    client = await RawRtmp.open(port, "127.0.0.2")
    info = await client.publish("live", key)      # onStatus: {"code": ..., "description": ...}
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from services.ingest import rtmp_amf
from services.ingest.rtmp_chunks import (
    COMMAND_AMF0,
    HANDSHAKE_SIZE,
    ChunkParser,
    ChunkWriter,
    Message,
)

ANSWER_TIMEOUT_S = 10.0


class RawRtmp:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ChunkParser()
        self.out = ChunkWriter()
        self._txid = 0

    @classmethod
    async def open(cls, port: int, local_host: str = "127.0.0.1") -> RawRtmp:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(local_host, 0)
        )
        return cls(reader, writer)

    async def handshake(self) -> None:
        self.writer.write(b"\x03" + bytes(HANDSHAKE_SIZE))
        s0s1s2 = await asyncio.wait_for(
            self.reader.readexactly(1 + 2 * HANDSHAKE_SIZE), ANSWER_TIMEOUT_S
        )
        self.writer.write(s0s1s2[1 : 1 + HANDSHAKE_SIZE])  # C2 echoes S1
        await self.writer.drain()

    def send(self, csid: int, message: Message) -> None:
        self.writer.write(self.out.encode(csid, message))

    def command(self, name: str, *values: Any, stream_id: int = 0) -> None:
        self._txid += 1
        payload = rtmp_amf.encode(name, self._txid, *values)
        self.send(3 if not stream_id else 8, Message(COMMAND_AMF0, stream_id, 0, payload))

    async def answer(self, *names: str) -> list[Any]:
        """The values of the next command the server sends named one of `names`."""
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                for message in self.parser.feed(data):
                    if message.type_id == COMMAND_AMF0:
                        values = rtmp_amf.decode(message.payload)
                        if values and values[0] in names:
                            return values

    async def publish(self, app: str, key: str) -> dict[str, Any]:
        """Handshake, connect, createStream, publish: the server's onStatus to the publish."""
        await self.handshake()
        self.command("connect", {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0"})
        await self.answer("_result", "_error")
        self.command("createStream", None)
        await self.answer("_result")
        self.command("publish", None, key, "live", stream_id=1)
        await self.writer.drain()
        values = await self.answer("onStatus")
        info: dict[str, Any] = values[3]
        return info

    async def closed(self) -> int:
        """Until the server ends the connection: the bytes it sent before that."""
        received = 0
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            with contextlib.suppress(ConnectionError):
                while data := await self.reader.read(65536):
                    received += len(data)
        return received

    def close(self) -> None:
        self.writer.close()


async def try_key(port: int, app: str, key: str, local_host: str = "127.0.0.1") -> dict[str, Any]:
    """One stream-key try, as an encoder makes it: the onStatus it got."""
    client = await RawRtmp.open(port, local_host)
    try:
        return await client.publish(app, key)
    finally:
        client.close()
