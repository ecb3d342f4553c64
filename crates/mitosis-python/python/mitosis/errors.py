"""Exceptions raised by :mod:`mitosis`.

Every failure is a :class:`MitosisError` with two attributes:

``kind``
    a short string naming what went wrong (``"not_found"``, ``"unsupported"``, ...);
``exit_code``
    the exit status the ``mitosis`` command uses for the same failure
    (sysexits.h): 64 usage, 65 process cannot be prepared, 66 unknown seed,
    69 unavailable (daemon or seed host unreachable, seed gone), 70 internal,
    75 busy (try again later), 76 protocol version mismatch, 77 refused.

One subclass per kind::

    MitosisError
    ├── SeedNotFound        not_found           66
    ├── Unsupported         unsupported         65
    ├── Unavailable                             69
    │   ├── DaemonUnreachable  daemon_unreachable
    │   ├── SeedGone           seed_gone
    │   └── Busy               busy                75
    ├── PermissionDenied    permission_denied   77
    │   └── AuthFailed         auth_failed
    ├── VersionMismatch     version_mismatch    76
    ├── UsageError          usage               64
    │   └── BadRequest         bad_request
    ├── ConnectionLost      connection_lost     70
    └── InternalError       internal            70
"""

from __future__ import annotations

__all__ = [
    "MitosisError",
    "SeedNotFound",
    "Unsupported",
    "Unavailable",
    "DaemonUnreachable",
    "SeedGone",
    "Busy",
    "PermissionDenied",
    "AuthFailed",
    "VersionMismatch",
    "UsageError",
    "BadRequest",
    "ConnectionLost",
    "InternalError",
]


class MitosisError(Exception):
    """A mitosis operation failed. ``kind`` names the failure, ``exit_code``
    is what the ``mitosis`` command would exit with."""

    kind: str = "internal"
    exit_code: int = 70

    def __init__(self, message: str, kind: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class SeedNotFound(MitosisError):
    """No seed with that id on the host asked (it was never prepared, was
    dropped, or went with its unpinned process)."""

    kind = "not_found"
    exit_code = 66


class Unsupported(MitosisError):
    """The process uses something mitosis cannot capture or restore
    (several threads, shared writable memory, a different kernel)."""

    kind = "unsupported"
    exit_code = 65


class Unavailable(MitosisError):
    """Something mitosis needs cannot be reached or is gone."""

    kind = "unavailable"
    exit_code = 69


class DaemonUnreachable(Unavailable):
    """The local daemon's socket cannot be reached (is ``mitosis daemon`` running?)."""

    kind = "daemon_unreachable"


class SeedGone(Unavailable):
    """The seed host cannot be reached, or the seed was dropped or prepared
    again while it was being used."""

    kind = "seed_gone"


class Busy(Unavailable):
    """The daemon holds as many connections as it takes (from this user, or
    in total); try again later."""

    kind = "busy"
    exit_code = 75


class PermissionDenied(MitosisError):
    """The caller may not do this (another user's seed or process)."""

    kind = "permission_denied"
    exit_code = 77


class AuthFailed(PermissionDenied):
    """The daemons do not share the cluster key."""

    kind = "auth_failed"


class VersionMismatch(MitosisError):
    """The daemon speaks another protocol version."""

    kind = "version_mismatch"
    exit_code = 76


class UsageError(MitosisError):
    """The call was wrong (bad seed id, bad address, ...)."""

    kind = "usage"
    exit_code = 64


class BadRequest(UsageError):
    """The daemon refused the request as malformed or out of bounds."""

    kind = "bad_request"


class ConnectionLost(MitosisError):
    """The connection to the local daemon broke or carried garbage."""

    kind = "connection_lost"
    exit_code = 70


class InternalError(MitosisError):
    """The daemon could not do what was asked (I/O or system call failure)."""

    kind = "internal"
    exit_code = 70


_BY_KIND = {
    cls.kind: cls
    for cls in (
        SeedNotFound,
        Unsupported,
        DaemonUnreachable,
        SeedGone,
        Busy,
        PermissionDenied,
        AuthFailed,
        VersionMismatch,
        UsageError,
        BadRequest,
        ConnectionLost,
        InternalError,
    )
}


def _from_native(kind: str, exit_code: int, message: str) -> MitosisError:
    """The exception for an error of ``kind`` (called by the native module)."""
    cls = _BY_KIND.get(kind, MitosisError)
    return cls(message, kind=kind, exit_code=exit_code)
