"""The errors every service raises, each with one wire code.

    BaycastError                 INTERNAL        500
    ├── InvalidArgument          INVALID_ARGUMENT 400  (names the offending field)
    │   ├── PayloadTooLarge      INVALID_ARGUMENT 413
    │   └── UnsupportedMediaType INVALID_ARGUMENT 415
    ├── Unauthenticated          UNAUTHENTICATED 401
    ├── PermissionDenied         PERMISSION_DENIED 403
    ├── NotFound                 NOT_FOUND       404
    ├── AlreadyExists            ALREADY_EXISTS  409
    ├── Conflict                 CONFLICT        409  (a compare-and-swap lost, a busy resource)
    ├── ResourceExhausted        RESOURCE_EXHAUSTED 503  (full: sessions, viewers, talk sources)
    │   └── TooManyRequests      RESOURCE_EXHAUSTED 429  (one client over its rate)
    └── Unavailable              UNAVAILABLE     503

The same code goes out as a NATS error reply (`ErrorReply.code`), a gRPC status and an HTTP status,
so an operator reads the same word wherever a command failed.
"""

from __future__ import annotations

import grpc


class BaycastError(Exception):
    code = "INTERNAL"
    http_status = 500
    grpc_status = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(BaycastError):
    code = "INVALID_ARGUMENT"
    http_status = 400
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class PayloadTooLarge(InvalidArgument):
    http_status = 413


class UnsupportedMediaType(InvalidArgument):
    http_status = 415


class Unauthenticated(BaycastError):
    code = "UNAUTHENTICATED"
    http_status = 401
    grpc_status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(BaycastError):
    code = "PERMISSION_DENIED"
    http_status = 403
    grpc_status = grpc.StatusCode.PERMISSION_DENIED


class NotFound(BaycastError):
    code = "NOT_FOUND"
    http_status = 404
    grpc_status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BaycastError):
    code = "ALREADY_EXISTS"
    http_status = 409
    grpc_status = grpc.StatusCode.ALREADY_EXISTS


class Conflict(BaycastError):
    code = "CONFLICT"
    http_status = 409
    grpc_status = grpc.StatusCode.ABORTED


class ResourceExhausted(BaycastError):
    code = "RESOURCE_EXHAUSTED"
    http_status = 503
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class TooManyRequests(ResourceExhausted):
    http_status = 429


class Unavailable(BaycastError):
    code = "UNAVAILABLE"
    http_status = 503
    grpc_status = grpc.StatusCode.UNAVAILABLE


_BY_CODE: dict[str, type[BaycastError]] = {
    cls.code: cls
    for cls in (
        BaycastError,
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        Conflict,
        ResourceExhausted,
        Unavailable,
    )
}


def from_code(code: str, message: str, field: str = "") -> BaycastError:
    """Rebuild the exception a remote side reported (used by command clients)."""
    return _BY_CODE.get(code, BaycastError)(message, field=field)
