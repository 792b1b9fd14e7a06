"""libsrt through ctypes: an SRT listener for one caller, its media and its own statistics.

The library is Debian's `libsrt1.5-gnutls` (SRT 1.5.1), the one Debian's `ffmpeg` links, so the
runtime image already has it. Only what ingest needs is bound: a listening socket with a
passphrase (AES, encryption enforced: a caller with a wrong or no passphrase is rejected in the
handshake and never reaches `accept`), `accept`, `recv` with a timeout, `close`, and
`srt_bstats`, whose `SRT_TRACEBSTATS` layout below is srt.h's `struct CBytePerfMon` of SRT 1.5
(496 bytes on x86-64 and arm64; `ctypes` lays it out as the C compiler does).

Blocking calls (`accept`, `recv`) release the GIL (ctypes does for every `CDLL` call) and run in
worker threads; `close` from another thread wakes a blocked `accept` or `recv`. libsrt's own
error messages (a rejected handshake, say) go to the structlog logger `ingest.libsrt`; they never
carry the passphrase.

    SrtError           a call failed; `code` is libsrt's error number
    └── SrtUnavailable the library is missing or is not SRT 1.5
"""

from __future__ import annotations

import atexit
import ctypes
import socket
import struct
import threading
from ctypes import POINTER, c_char_p, c_double, c_int, c_int64, c_uint64, c_void_p

import structlog

LIBRARIES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5")
PAYLOAD_BYTES = 1456  # the most an SRT live packet carries (1316, seven TS packets, in practice)

# srt.h: SRT_SOCKOPT
SRTO_RCVTIMEO = 14
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_RCVLATENCY = 43
SRTO_ENFORCEDENCRYPTION = 53
SRTO_PEERIDLETIMEO = 55
# srt.h: SRT_ERRNO
SRT_EASYNCRCV = 6002
SRT_ETIMEOUT = 6003
# syslog levels, as srt_setloglevel takes them
LOG_ERR = 3
LOG_FLAGS = 1 | 2 | 4 | 8  # no time, thread name, severity or end of line: structlog adds its own

log = structlog.get_logger("ingest.libsrt")


class SrtError(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class SrtUnavailable(SrtError):
    """libsrt 1.5 is not installed."""


_I, _L, _U, _D = c_int, c_int64, c_uint64, c_double


class SrtStats(ctypes.Structure):
    """`SRT_TRACEBSTATS` (srt.h 1.5, `struct CBytePerfMon`): totals since the connection began,
    "local" counters since the last clear (we never clear: also since it began), instant
    values."""

    _fields_ = [
        ("msTimeStamp", _L),
        ("pktSentTotal", _L),
        ("pktRecvTotal", _L),
        ("pktSndLossTotal", _I),
        ("pktRcvLossTotal", _I),
        ("pktRetransTotal", _I),
        ("pktSentACKTotal", _I),
        ("pktRecvACKTotal", _I),
        ("pktSentNAKTotal", _I),
        ("pktRecvNAKTotal", _I),
        ("usSndDurationTotal", _L),
        ("pktSndDropTotal", _I),
        ("pktRcvDropTotal", _I),
        ("pktRcvUndecryptTotal", _I),
        ("byteSentTotal", _U),
        ("byteRecvTotal", _U),
        ("byteRcvLossTotal", _U),
        ("byteRetransTotal", _U),
        ("byteSndDropTotal", _U),
        ("byteRcvDropTotal", _U),
        ("byteRcvUndecryptTotal", _U),
        ("pktSent", _L),
        ("pktRecv", _L),
        ("pktSndLoss", _I),
        ("pktRcvLoss", _I),
        ("pktRetrans", _I),
        ("pktRcvRetrans", _I),
        ("pktSentACK", _I),
        ("pktRecvACK", _I),
        ("pktSentNAK", _I),
        ("pktRecvNAK", _I),
        ("mbpsSendRate", _D),
        ("mbpsRecvRate", _D),
        ("usSndDuration", _L),
        ("pktReorderDistance", _I),
        ("pktRcvAvgBelatedTime", _D),
        ("pktRcvBelated", _L),
        ("pktSndDrop", _I),
        ("pktRcvDrop", _I),
        ("pktRcvUndecrypt", _I),
        ("byteSent", _U),
        ("byteRecv", _U),
        ("byteRcvLoss", _U),
        ("byteRetrans", _U),
        ("byteSndDrop", _U),
        ("byteRcvDrop", _U),
        ("byteRcvUndecrypt", _U),
        ("usPktSndPeriod", _D),
        ("pktFlowWindow", _I),
        ("pktCongestionWindow", _I),
        ("pktFlightSize", _I),
        ("msRTT", _D),
        ("mbpsBandwidth", _D),
        ("byteAvailSndBuf", _I),
        ("byteAvailRcvBuf", _I),
        ("mbpsMaxBW", _D),
        ("byteMSS", _I),
        ("pktSndBuf", _I),
        ("byteSndBuf", _I),
        ("msSndBuf", _I),
        ("msSndTsbPdDelay", _I),
        ("pktRcvBuf", _I),
        ("byteRcvBuf", _I),
        ("msRcvBuf", _I),
        ("msRcvTsbPdDelay", _I),
        ("pktSndFilterExtraTotal", _I),
        ("pktRcvFilterExtraTotal", _I),
        ("pktRcvFilterSupplyTotal", _I),
        ("pktRcvFilterLossTotal", _I),
        ("pktSndFilterExtra", _I),
        ("pktRcvFilterExtra", _I),
        ("pktRcvFilterSupply", _I),
        ("pktRcvFilterLoss", _I),
        ("pktReorderTolerance", _I),
        ("pktSentUniqueTotal", _L),
        ("pktRecvUniqueTotal", _L),
        ("byteSentUniqueTotal", _U),
        ("byteRecvUniqueTotal", _U),
        ("pktSentUnique", _L),
        ("pktRecvUnique", _L),
        ("byteSentUnique", _U),
        ("byteRecvUnique", _U),
    ]


_LOG_HANDLER = ctypes.CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_int, c_char_p, c_char_p)


@_LOG_HANDLER
def _on_library_log(
    _opaque: int | None, level: int, _file: bytes, _line: int, area: bytes, message: bytes
) -> None:
    text = (message or b"").decode(errors="replace").strip()
    if "already closed" in text:
        return  # a blocked accept woken by our own close: how a listener is stopped
    log.warning("srt_library", area=(area or b"").decode(errors="replace"), message=text)


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def library() -> ctypes.CDLL:
    """libsrt, started once per process (raises SrtUnavailable without it)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        errors: list[str] = []
        for name in LIBRARIES:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            raise SrtUnavailable(
                "libsrt 1.5 not found (Debian: libsrt1.5-gnutls): " + "; ".join(errors)
            )
        _declare(lib)
        if lib.srt_startup() < 0:
            raise SrtUnavailable("srt_startup failed")
        lib.srt_setlogflags(LOG_FLAGS)
        lib.srt_setloghandler(None, _on_library_log)
        lib.srt_setloglevel(LOG_ERR)
        atexit.register(_shutdown, lib)
        _lib = lib
        return lib


def _shutdown(lib: ctypes.CDLL) -> None:
    # libsrt's threads must not call back into an interpreter that is going away.
    lib.srt_setloghandler(None, _LOG_HANDLER())
    lib.srt_cleanup()


def _declare(lib: ctypes.CDLL) -> None:
    lib.srt_startup.restype = c_int
    lib.srt_cleanup.restype = c_int
    lib.srt_create_socket.restype = c_int
    lib.srt_create_socket.argtypes = []
    lib.srt_setsockflag.restype = c_int
    lib.srt_setsockflag.argtypes = [c_int, c_int, c_void_p, c_int]
    lib.srt_bind.restype = c_int
    lib.srt_bind.argtypes = [c_int, c_char_p, c_int]
    lib.srt_listen.restype = c_int
    lib.srt_listen.argtypes = [c_int, c_int]
    lib.srt_accept.restype = c_int
    lib.srt_accept.argtypes = [c_int, c_void_p, c_void_p]
    lib.srt_recvmsg.restype = c_int
    lib.srt_recvmsg.argtypes = [c_int, c_void_p, c_int]
    lib.srt_close.restype = c_int
    lib.srt_close.argtypes = [c_int]
    lib.srt_bstats.restype = c_int
    lib.srt_bstats.argtypes = [c_int, POINTER(SrtStats), c_int]
    lib.srt_getlasterror.restype = c_int
    lib.srt_getlasterror.argtypes = [c_void_p]
    lib.srt_getlasterror_str.restype = c_char_p
    lib.srt_getlasterror_str.argtypes = []
    lib.srt_setloglevel.argtypes = [c_int]
    lib.srt_setlogflags.argtypes = [c_int]
    lib.srt_setloghandler.argtypes = [c_void_p, _LOG_HANDLER]


def _last_error(lib: ctypes.CDLL, what: str) -> SrtError:
    # libsrt keeps the last error per thread: read it on the thread that made the call.
    code = lib.srt_getlasterror(None)
    text = (lib.srt_getlasterror_str() or b"").decode(errors="replace")
    return SrtError(f"{what}: {text}", code)


def sockaddr(host: str, port: int) -> bytes:
    """A `struct sockaddr_in` or `sockaddr_in6` for host:port (host as an address literal)."""
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, packed)
    except OSError:
        packed = socket.inet_pton(socket.AF_INET6, host)
        return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16sI", port, 0, packed, 0)


class SrtSocket:
    """One libsrt socket; `close` may come from any thread, and more than once."""

    def __init__(self, lib: ctypes.CDLL, handle: int) -> None:
        self._lib = lib
        self._handle = handle
        self._lock = threading.Lock()
        self._buffer = ctypes.create_string_buffer(PAYLOAD_BYTES)
        self.last_stats = SrtStats()

    @classmethod
    def listen(
        cls, host: str, port: int, *, passphrase: str, latency_ms: int, peer_idle_ms: int = 5000
    ) -> SrtSocket:
        """Listen on host:port for callers that know `passphrase` (AES-128, enforced)."""
        if not 10 <= len(passphrase) <= 79:
            raise SrtError("an SRT passphrase has 10 to 79 characters")
        lib = library()
        handle = lib.srt_create_socket()
        if handle < 0:
            raise _last_error(lib, "srt_create_socket")
        sock = cls(lib, handle)
        try:
            secret = passphrase.encode()
            sock._set(SRTO_PASSPHRASE, secret, len(secret))
            for option, value in (
                (SRTO_PBKEYLEN, 16),
                (SRTO_ENFORCEDENCRYPTION, 1),
                (SRTO_RCVLATENCY, latency_ms),
                (SRTO_PEERIDLETIMEO, peer_idle_ms),
            ):
                number = c_int(value)
                sock._set(option, ctypes.byref(number), ctypes.sizeof(number))
            address = sockaddr(host, port)
            if lib.srt_bind(handle, address, len(address)) < 0:
                raise _last_error(lib, f"bind {host}:{port}")
            if lib.srt_listen(handle, 1) < 0:
                raise _last_error(lib, "listen")
        except BaseException:
            sock.close()
            raise
        return sock

    def _set(self, option: int, value: object, size: int) -> None:
        if self._lib.srt_setsockflag(self._handle, option, value, size) < 0:
            raise _last_error(self._lib, f"option {option}")

    @property
    def closed(self) -> bool:
        return self._handle < 0

    def accept(self, recv_timeout_ms: int = 500) -> SrtSocket | None:
        """The next caller through the handshake (blocks); None once this socket is closed."""
        handle = self._handle
        if handle < 0:
            return None
        peer = self._lib.srt_accept(handle, None, None)
        if peer < 0:
            if self.closed:
                return None
            raise _last_error(self._lib, "accept")
        conn = SrtSocket(self._lib, peer)
        timeout = c_int(recv_timeout_ms)
        conn._set(SRTO_RCVTIMEO, ctypes.byref(timeout), ctypes.sizeof(timeout))
        return conn

    def recv(self) -> bytes | None:
        """One message (up to 1456 bytes); b"" when nothing came within the receive timeout;
        None once the connection ended (the caller left or broke off, or we closed it)."""
        handle = self._handle
        if handle < 0:
            return None
        size = self._lib.srt_recvmsg(handle, self._buffer, PAYLOAD_BYTES)
        if size > 0:
            return self._buffer.raw[:size]
        if size < 0 and self._lib.srt_getlasterror(None) in (SRT_ETIMEOUT, SRT_EASYNCRCV):
            return b""
        return None

    def stats(self) -> SrtStats:
        """libsrt's statistics of this connection (the last ones read, once it is closed)."""
        with self._lock:
            if self._handle >= 0:
                stats = SrtStats()
                if self._lib.srt_bstats(self._handle, ctypes.byref(stats), 0) == 0:
                    self.last_stats = stats
        return self.last_stats

    def close(self) -> None:
        with self._lock:
            handle, self._handle = self._handle, -1
        if handle >= 0:
            self._lib.srt_close(handle)
