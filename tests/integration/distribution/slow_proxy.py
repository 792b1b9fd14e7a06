"""A TCP proxy whose upstream direction reads slowly: a receiver with a thin pipe.

It forwards what the client sends at `rate` bytes per second (reading no faster, with a small
receive buffer, so the client's writes back up as they would toward a congested platform) and
forwards the server's replies at once. Threads, bounded: one accept loop, two per connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.support.nats import free_port

CHUNK = 512
RECEIVE_BUFFER = 4096


class SlowProxy:
    def __init__(self, upstream_port: int, rate: float) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.port = free_port()
        self.forwarded = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(4)
        self._listener.settimeout(0.2)

    def start(self) -> SlowProxy:
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets += [client, server]
            self._spawn(self._pipe, client, server, True)
            self._spawn(self._pipe, server, client, False)

    def _pipe(self, src: socket.socket, dst: socket.socket, throttled: bool) -> None:
        start = time.monotonic()
        sent = 0
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                if throttled:
                    ahead = sent / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(min(ahead, 0.2))
                        continue
                data = src.recv(CHUNK if throttled else 65536)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if throttled:
                    self.forwarded += len(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
