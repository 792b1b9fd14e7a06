"""An SRT listener for tests that keeps its passphrase off every command line: libsrt in this
process (services/ingest/libsrt.py), one caller at a time, what arrives appended to a file.

    with SrtReceiver(tmp_path / "srt.ts", passphrase) as receiver:
        url = f"srt://127.0.0.1:{receiver.port}"    # a caller pushes here
        ...
        receiver.bytes                              # received so far
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from services.ingest.libsrt import SrtError, SrtSocket
from tests.support.nats import free_udp_port

LATENCY_MS = 120


class SrtReceiver:
    def __init__(self, path: Path, passphrase: str, port: int | None = None) -> None:
        self.path = path
        self.passphrase = passphrase
        self.port = port or free_udp_port()
        self.bytes = 0
        self.callers = 0
        self._socket: SrtSocket | None = None
        self._peer: SrtSocket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> SrtReceiver:
        self._socket = SrtSocket.listen(
            "127.0.0.1", self.port, passphrase=self.passphrase, latency_ms=LATENCY_MS
        )
        self._thread = threading.Thread(target=self._serve, name="srt-receiver", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._socket is not None
        with open(self.path, "ab") as out:
            while not self._stop.is_set():
                try:
                    peer = self._socket.accept()
                except SrtError:
                    continue
                if peer is None:
                    return
                self._peer = peer
                self.callers += 1
                while not self._stop.is_set():
                    data = peer.recv()
                    if data is None:
                        break
                    if data:
                        out.write(data)
                        out.flush()
                        self.bytes += len(data)
                peer.close()

    def stop(self) -> None:
        self._stop.set()
        for sock in (self._peer, self._socket):
            if sock is not None:
                with contextlib.suppress(SrtError):
                    sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SrtReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
