"""A real RTMP receiver for tests: Debian's nginx with the RTMP module, on a free port.

    with RtmpServer(tmp_path) as rtmp:
        url = rtmp.url("live", "key1")        # push here (rtmp://127.0.0.1:<port>/live/key1)
        ...
        rtmp.recordings("key1")               # FLV files nginx recorded (`record all`)
        probe(rtmp.recordings("key1")[-1])    # what arrived, decoded by ffprobe
        rtmp.publishers("key1")               # clients publishing it now (`rtmp_stat`)

nginx runs as one process (`master_process off`), so `kill()` takes the whole server down at once
(a real crash) and `start()` brings it back on the same port with the same recording folder; each
publish gets its own recording file (`record_unique`). Only the application `live` exists: any
other application is refused, which is how a test gets a rejected URL.

nginx-rtmp speaks no TLS: `RtmpsFront` terminates TLS (a self-signed certificate for 127.0.0.1,
made with openssl) in front of it, for RTMPS pushes:

    with RtmpServer() as rtmp, RtmpsFront(rtmp) as front:
        url = front.url("key1")               # rtmps://127.0.0.1:<port>/live/key1
        ca = front.cert                       # trust this to verify the server
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.support.nats import free_port, wait_for_port

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
APP = "live"

CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
load_module {module};
events {{ worker_connections 128; }}
rtmp {{
    server {{
        listen {host}:{port};
        chunk_size 4096;
        application {app} {{
            live on;
            record all;
            record_path {root}/rec;
            record_unique on;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{stat_port};
        location /stat {{ rtmp_stat all; }}
    }}
}}
"""


class RtmpServer:
    """nginx-rtmp receiving pushes on 127.0.0.1:<port>/live/<stream>, recording each one.

    `host` is the address it listens on for RTMP (another one of this machine's, for pushers in
    other network namespaces); its statistics page stays on 127.0.0.1."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._own_root = root is None
        self.host = host
        self.root = Path(root or tempfile.mkdtemp(prefix="baycast-rtmp-"))
        self.port = port or free_port()
        self.stat_port = free_port()
        self.record_dir = self.root / "rec"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, stream: str, app: str = APP) -> str:
        return f"{self.app_url(app)}/{stream}"

    def app_url(self, app: str = APP) -> str:
        """The application URL a pusher takes with a separate stream key."""
        return f"rtmp://{self.host}:{self.port}/{app}"

    def start(self, timeout: float = 10.0) -> RtmpServer:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.record_dir, 0o777)
        (self.root / "tmp").mkdir(exist_ok=True)
        conf = self.root / "nginx.conf"
        conf.write_text(
            CONFIG.format(
                root=self.root,
                module=RTMP_MODULE,
                host=self.host,
                port=self.port,
                stat_port=self.stat_port,
                app=APP,
            )
        )
        with open(self.root / "stdout.log", "ab") as out:
            self.proc = subprocess.Popen(
                [NGINX, "-p", str(self.root), "-e", str(self.root / "error.log"), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port, timeout, self.host)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx-rtmp did not start:\n{self.logs()}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Crash the server: every publisher's connection breaks at once."""
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RtmpServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()

    def logs(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def recordings(self, stream: str) -> list[Path]:
        """The FLV files recorded for `stream`, oldest first (one per publish)."""
        return sorted(self.record_dir.glob(f"{stream}*.flv"), key=lambda p: p.stat().st_mtime)

    def publishers(self, stream: str, app: str = APP) -> int:
        """How many clients publish `stream` now, as nginx-rtmp's statistics page tells."""
        url = f"http://127.0.0.1:{self.stat_port}/stat"
        with urllib.request.urlopen(url, timeout=2) as resp:
            root = ET.fromstring(resp.read())
        count = 0
        for application in root.iterfind("server/application"):
            if application.findtext("name") != app:
                continue
            for live_stream in application.iterfind("live/stream"):
                if live_stream.findtext("name") == stream:
                    count += sum(
                        1
                        for client in live_stream.iterfind("client")
                        if client.find("publishing") is not None
                    )
        return count

    def wait_recording(self, stream: str, min_bytes: int = 1, timeout: float = 10.0) -> Path:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = self.recordings(stream)
            if files and files[-1].stat().st_size >= min_bytes:
                return files[-1]
            time.sleep(0.1)
        raise TimeoutError(f"no recording of {stream!r} after {timeout} s:\n{self.logs()}")


class RtmpsFront:
    """TLS in front of an RtmpServer: a thread per direction per connection, bounded by stop()."""

    def __init__(self, rtmp: RtmpServer) -> None:
        self.rtmp = rtmp
        self.port = free_port()
        self.cert = rtmp.root / "tls-cert.pem"
        self.key = rtmp.root / "tls-key.pem"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def url(self, stream: str, app: str = APP) -> str:
        return f"{self.app_url(app)}/{stream}"

    def app_url(self, app: str = APP) -> str:
        return f"rtmps://127.0.0.1:{self.port}/{app}"

    def start(self) -> RtmpsFront:
        self.rtmp.root.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(self.key), "-out", str(self.cert), "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(self.cert, self.key)
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        for sock in [s for s in (self._listener, *self._sockets) if s is not None]:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> RtmpsFront:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                raw.settimeout(10)
                client = self._context.wrap_socket(raw, server_side=True)
                client.settimeout(None)
                server = socket.create_connection(("127.0.0.1", self.rtmp.port), timeout=5)
                server.settimeout(None)
            except OSError:
                raw.close()
                continue
            self._sockets += [client, server]
            self._spawn(self._pipe, client, server)
            self._spawn(self._pipe, server, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()


def probe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """ffprobe's view of a media file: streams (codec, size, rate, audio format) and duration."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_type,codec_name,width,height,r_frame_rate,"
            "avg_frame_rate,sample_rate,channels,duration,nb_read_frames",
            "-count_frames",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info
