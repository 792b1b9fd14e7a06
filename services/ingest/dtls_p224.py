"""P-224 as a TLS group in the OpenSSL that the `cryptography` wheel bundles (ADR 0013).

FFmpeg 8.1's WHIP muxer built with GnuTLS makes its own DTLS certificate on P-224 and is the DTLS
server. OpenSSL, as a TLS 1.2 client, accepts a server's ECDSA certificate only if its curve is
one of the client's groups (`tls12_check_peer_sigalg` → `tls1_check_group_id`), and the OpenSSL
4 of the wheel is built without the groups RFC 8422 deprecates (`no-tls-deprecated-ec` is the
default since 4.0): "P-224" is refused in a groups list, and the handshake ends with
`illegal_parameter` ("wrong curve").

OpenSSL takes its TLS groups from its providers' TLS-GROUP capability, which is how a provider
adds groups (oqs-provider adds its post-quantum ones this way). `install()` registers a provider
whose only capability is that entry for secp224r1, as OpenSSL's own table has it when the
deprecated groups are compiled in (group 21, 112 bits, TLS 1.0-1.2, DTLS 1.0-1.2; key management
"EC", which the default provider has). Its two entry points, `OSSL_PROVIDER_add_builtin` and
`OSSL_PROVIDER_try_load`, are public OpenSSL API, but the wheel links OpenSSL statically and
exports neither, so they are found in the symbol table of the wheel's `_rust` module (the wheel is
not stripped). Anything unexpected (another platform, a stripped or different wheel) leaves
OpenSSL untouched and `available()` False: P-224 certificates are then refused, as before.

The provider only makes the name "P-224" usable in a groups list; no default list contains it, so
nothing changes for a context that does not ask for it (`WhipCertificate` asks for it only once a
publisher's certificate turns out to be on P-224).
"""

from __future__ import annotations

import ctypes
import functools
import struct
import sys
import threading
from typing import Any

import structlog
from OpenSSL import SSL
from OpenSSL._util import lib

log = structlog.get_logger("ingest.whip")

PROVIDER_NAME = b"baycast-p224"
SECP224R1_GROUP_ID = 21  # TLS Supported Groups registry
TLS1_VERSION, TLS1_2_VERSION = 0x0301, 0x0303
DTLS1_VERSION, DTLS1_2_VERSION = 0xFEFF, 0xFEFD
# Provider ABI (openssl/core.h, core_dispatch.h): stable since OpenSSL 3.0.
OSSL_PARAM_INTEGER, OSSL_PARAM_UNSIGNED_INTEGER, OSSL_PARAM_UTF8_STRING = 1, 2, 4
OSSL_FUNC_PROVIDER_TEARDOWN = 1024
OSSL_FUNC_PROVIDER_QUERY_OPERATION = 1027
OSSL_FUNC_PROVIDER_GET_CAPABILITIES = 1030
ELF_SYMTAB, ELF_FUNC, ELF_SHARED_OBJECT = 2, 2, 3


class OsslParam(ctypes.Structure):
    _fields_ = [
        ("key", ctypes.c_char_p),
        ("data_type", ctypes.c_uint),
        ("data", ctypes.c_void_p),
        ("data_size", ctypes.c_size_t),
        ("return_size", ctypes.c_size_t),
    ]


class OsslDispatch(ctypes.Structure):
    _fields_ = [("function_id", ctypes.c_int), ("function", ctypes.c_void_p)]


ParamCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
GetCapabilities = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ParamCallback, ctypes.c_void_p
)
QueryOperation = ctypes.CFUNCTYPE(
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)
)
Teardown = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
ProviderInit = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.POINTER(ctypes.c_void_p),
)

# OpenSSL keeps pointers to all of these for the life of the process.
_KEEP: list[Any] = []
_LOCK = threading.Lock()


def accepts_p224() -> bool:
    """Whether the bundled OpenSSL takes "P-224" in a groups list (as it does not, unaided)."""
    if not hasattr(lib, "SSL_CTX_set1_curves_list"):
        return False
    context = SSL.Context(SSL.DTLS_METHOD)
    return bool(lib.SSL_CTX_set1_curves_list(context._context, b"P-224") == 1)


def available() -> bool:
    """Make P-224 a TLS group of the bundled OpenSSL, once; whether it is one."""
    with _LOCK:
        return _graft()


@functools.cache
def _graft() -> bool:
    if accepts_p224():
        return True  # built with the deprecated groups: nothing to add
    try:
        install()
    except Exception as exc:
        log.warning("dtls_p224_unavailable", reason=f"{type(exc).__name__}: {exc}")
        return False
    if not accepts_p224():
        log.warning("dtls_p224_unavailable", reason="OpenSSL did not take the provider's group")
        return False
    return True


def allow_on(connection: SSL.Connection) -> bool:
    """Add P-224 to the groups of one connection, after OpenSSL's default ones."""
    return bool(lib.SSL_set1_curves_list(connection._ssl, b"DEFAULT:P-224") == 1)


def install() -> None:
    """Register and load the provider (raises if the wheel is not what this expects)."""
    if not sys.platform.startswith("linux"):
        raise RuntimeError(f"no ELF symbol table to read on {sys.platform}")
    if lib.OpenSSL_version_num() < 0x30000000:
        raise RuntimeError("OpenSSL before 3.0 has no providers")
    from cryptography.hazmat.bindings import _rust

    path = _rust.__file__
    if path is None:
        raise RuntimeError("the cryptography binding has no file")
    wanted = ("PyInit__rust", "OSSL_PROVIDER_add_builtin", "OSSL_PROVIDER_try_load")
    symbols = elf_functions(path, wanted)
    missing = [name for name in wanted if name not in symbols]
    if missing:
        raise RuntimeError(f"{path} has no symbol {', '.join(missing)}")
    base = _address(ctypes.CDLL(path).PyInit__rust) - symbols["PyInit__rust"]
    if base % 4096:
        raise RuntimeError(f"{path} is not loaded where its symbol table says")
    add_builtin = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ProviderInit)(
        base + symbols["OSSL_PROVIDER_add_builtin"]
    )
    try_load = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)(
        base + symbols["OSSL_PROVIDER_try_load"]
    )
    init = _provider()
    if add_builtin(None, PROVIDER_NAME, init) != 1:
        raise RuntimeError("OSSL_PROVIDER_add_builtin failed")
    # retain_fallbacks=1: loading a provider must not switch off the implicit default provider.
    provider = try_load(None, PROVIDER_NAME, 1)
    if not provider:
        raise RuntimeError("OSSL_PROVIDER_try_load failed")
    _KEEP.append(provider)


def elf_functions(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """Offsets of the named functions in a 64-bit little-endian ELF shared object's .symtab."""
    with open(path, "rb") as f:
        data = f.read()
    e_type = struct.unpack_from("<H", data, 0x10)[0]
    if data[:6] != b"\x7fELF\x02\x01" or e_type != ELF_SHARED_OBJECT:
        raise RuntimeError(f"{path} is not a 64-bit little-endian ELF shared object")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    found: dict[str, set[int]] = {name: set() for name in names}
    for section in sections:
        if section[1] != ELF_SYMTAB:
            continue
        strtab_offset = sections[section[6]][4]
        start, size = section[4], section[5]
        for st_name, st_info, _other, st_shndx, st_value, st_size in struct.iter_unpack(
            "<IBBHQQ", data[start : start + size]
        ):
            if (st_info & 0xF) != ELF_FUNC or not st_shndx or not st_value or not st_size:
                continue
            for name in names:
                if data.startswith(name.encode() + b"\0", strtab_offset + st_name):
                    found[name].add(st_value)
    if any(len(values) > 1 for values in found.values()):
        raise RuntimeError(f"{path} has a function name twice: {found}")
    return {name: values.pop() for name, values in found.items() if values}


def _address(function: Any) -> int:
    value = ctypes.cast(function, ctypes.c_void_p).value
    if not value:
        raise RuntimeError("a null function address")
    return value


def _provider() -> Any:
    """The provider's init function: its dispatch table answers TLS-GROUP with secp224r1."""

    def utf8(key: bytes, value: bytes) -> OsslParam:
        buffer = ctypes.create_string_buffer(value)
        _KEEP.append(buffer)
        return OsslParam(key, OSSL_PARAM_UTF8_STRING, ctypes.addressof(buffer), len(value) + 1, 0)

    def number(key: bytes, value: int, signed: bool) -> OsslParam:
        cell = ctypes.c_int(value) if signed else ctypes.c_uint(value)
        _KEEP.append(cell)
        kind = OSSL_PARAM_INTEGER if signed else OSSL_PARAM_UNSIGNED_INTEGER
        return OsslParam(key, kind, ctypes.addressof(cell), ctypes.sizeof(cell), 0)

    def group(tls_name: bytes) -> Any:
        params = (OsslParam * 11)(
            utf8(b"tls-group-name", tls_name),
            utf8(b"tls-group-name-internal", b"secp224r1"),
            utf8(b"tls-group-alg", b"EC"),
            number(b"tls-group-id", SECP224R1_GROUP_ID, signed=False),
            number(b"tls-group-sec-bits", 112, signed=False),
            number(b"tls-group-is-kem", 0, signed=False),
            number(b"tls-min-tls", TLS1_VERSION, signed=True),
            number(b"tls-max-tls", TLS1_2_VERSION, signed=True),
            number(b"tls-min-dtls", DTLS1_VERSION, signed=True),
            number(b"tls-max-dtls", DTLS1_2_VERSION, signed=True),
            OsslParam(),
        )
        _KEEP.append(params)
        return params

    groups = [group(b"secp224r1"), group(b"P-224")]

    @GetCapabilities
    def get_capabilities(_provctx: Any, capability: bytes, callback: Any, arg: Any) -> int:
        if capability == b"TLS-GROUP":
            for params in groups:
                if not callback(ctypes.addressof(params), arg):
                    return 0
        return 1

    @QueryOperation
    def query_operation(_provctx: Any, _operation: int, _no_store: Any) -> None:
        return None  # no algorithms: the key management is the default provider's "EC"

    @Teardown
    def teardown(_provctx: Any) -> None:
        return None

    dispatch = (OsslDispatch * 4)(
        OsslDispatch(OSSL_FUNC_PROVIDER_GET_CAPABILITIES, _address(get_capabilities)),
        OsslDispatch(OSSL_FUNC_PROVIDER_QUERY_OPERATION, _address(query_operation)),
        OsslDispatch(OSSL_FUNC_PROVIDER_TEARDOWN, _address(teardown)),
        OsslDispatch(0, None),
    )

    @ProviderInit
    def init(_handle: Any, _core: Any, out: Any, provctx: Any) -> int:
        out[0] = ctypes.addressof(dispatch)
        provctx[0] = None
        return 1

    _KEEP.extend([get_capabilities, query_operation, teardown, dispatch, init])
    return init
