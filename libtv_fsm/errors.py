"""The few errors the library raises; each carries the text a user should see."""
from __future__ import annotations

from typing import Optional


class LibtvError(Exception):
    """Base of every error the library means a user to read.

    ``str(err)`` is the one line the CLI prints after ``❌ ``; it must never hold a secret.
    ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(LibtvError):
    """Bad input from the command line or the caller: a flag, a path, an id."""


class InvalidSessionId(InputError):
    """A session id that could escape a folder or is not an upstream id."""


class UnknownSession(InputError):
    """No journal exists for the session id."""


class ConfigError(LibtvError):
    """Missing or broken ``libtv.json`` / API key."""


class JournalError(LibtvError):
    """A journal could not be read or written (permissions, full disk)."""


class ConcurrencyConflict(JournalError):
    """Another process appended to the session first; reload and decide again."""


class TransitionRefused(LibtvError):
    """The event is not valid in the session's current state."""


class UpstreamError(LibtvError):
    """Anything that went wrong talking to LibTV / the gateway / a chat platform.

    ``transient`` errors are worth retrying with backoff (network, 5xx, 408, 429,
    unexpected bodies); the others end the operation at once.
    """

    transient = False

    def __init__(self, message: str, *, status: Optional[int] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TransientError(UpstreamError):
    """Worth another try later."""

    transient = True


class NetworkError(TransientError):
    """Connection refused or reset, DNS, timeout."""


class UnavailableError(TransientError):
    """HTTP 5xx / 408 / 429 or an upstream 'Service temporarily unavailable'."""


class BadResponse(TransientError):
    """A body that is not the JSON shape we expect (HTML error page, truncated, wrong types)."""


class PermanentError(UpstreamError):
    """Upstream said no and will say no again: a 4xx, a non-zero direct-API code."""


class AuthError(PermanentError):
    """Invalid API key / credentials."""


class QuotaError(PermanentError):
    """Free trial uses exhausted."""


class ExpiredError(PermanentError):
    """Key expired."""
