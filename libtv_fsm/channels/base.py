"""The chat channel interface every platform implements, and the HTTP plumbing they share."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

import requests

from libtv_fsm import errors

MB = 1024 * 1024


class PermissionDenied(errors.PermanentError):
    """The platform app lacks a permission (Feishu 99991672); ``grant_link`` lets an admin grant it."""

    def __init__(self, message: str, *, grant_link: Optional[str] = None,
                 status: Optional[int] = None, code: Optional[str] = None) -> None:
        super().__init__(message, status=status, code=code)
        self.grant_link = grant_link


class FileRefused(errors.PermanentError):
    """The platform will not take this file; the delivery step sends the URL as text instead.

    ``reason`` is shown to the user beside the link ("over the size limit" when not given).
    """

    def __init__(self, message: str, *, reason: str = "", status: Optional[int] = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message, status=status, code=code)
        self.reason = reason


class TooLarge(FileRefused):
    """The platform refused a file for its size; the delivery step sends the URL instead."""


class SendInDoubt(errors.TransientError):
    """A send reached the platform but no answer came back: the message may or may not be in the chat.

    On a platform that de-duplicates this is an ordinary transient error; on one that does not,
    the waiter reconciles (``find_sent``) or resends at most once, as after a crash.
    """


C = TypeVar("C")


class Channel(ABC, Generic[C]):
    """One chat platform: send a video, an image or a text to one target.

    Instances are cheap; credentials are read on first use (``check_ready`` reads them early so a
    submit can refuse at once). ``dedupes`` tells the waiter whether a retried send with the same
    ``dedupe_key`` is dropped by the platform (then a resend after a crash is safe) or whether it
    must journal the attempt and reconcile it (``find_sent``) before sending again.

    A platform says how it reads its credentials in ``load_credentials``; ``credentials`` keeps
    them, and the default ``check_ready`` is reading them. ``sleep`` replaces time.sleep in the
    429 waits (``pause``), so a test need not wait them out.
    """

    name: ClassVar[str]
    dedupes: ClassVar[bool]
    max_video_bytes: ClassVar[int]
    max_image_bytes: ClassVar[int]

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None, sleep: Optional[Callable[[float], None]] = None) -> None:
        if variant:
            # Only a delegating channel (openclaw:<ch>) takes a sub-name; others refuse it.
            raise errors.InputError(f"Channel '{self.name}' takes no sub-channel (got '{self.name}:{variant}')")
        self.env: Mapping[str, str] = env
        if session is None:
            from libtv_fsm.transport import new_session

            session = new_session()
        self.http: requests.Session = session
        self._sleep = sleep
        self._creds: Optional[C] = None

    def pause(self, seconds: float) -> None:
        """Wait out a rate limit: the ``sleep`` the channel was made with (tests pass one), else time.sleep."""
        (self._sleep or time.sleep)(seconds)

    @property
    def credentials(self) -> C:
        """What :meth:`load_credentials` found, read once on first use."""
        if self._creds is None:
            self._creds = self.load_credentials()
        return self._creds

    def load_credentials(self) -> C:
        """The platform's credentials from ``env`` (and openclaw.json); ConfigError when missing or unusable."""
        raise NotImplementedError(f"Channel '{self.name}' reads no credentials")

    def check_ready(self) -> None:
        """Raise ConfigError with a clear message when credentials are missing or unusable."""
        _ = self.credentials  # resolving them raises the ConfigError a submit should show

    @abstractmethod
    def normalize_target(self, chat_id: str) -> str:
        """The platform's own id for a target as the agent passed it; InputError on junk. Idempotent."""

    @abstractmethod
    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        """Upload and send a video file; returns the platform's message id."""

    @abstractmethod
    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        """Upload and send an image file; returns the platform's message id."""

    @abstractmethod
    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        """Send a plain text message; returns the platform's message id."""

    def find_sent(self, target: str, dedupe_key: str) -> Optional[str]:
        """The message id of an earlier send with this key, where the platform can tell; else None.

        Only channels that do not de-duplicate (Slack: the channel's recent files) override this.
        """
        return None


class UploadChannel(Channel[C]):
    """A channel that sends a video and an image alike: one upload of the file under a name."""

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        return self._send_file(target, path, file_name or path.name, dedupe_key)

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        return self._send_file(target, path, path.name, dedupe_key)

    @abstractmethod
    def _send_file(self, target: str, path: Path, name: str, dedupe_key: str) -> str:
        """Upload ``path`` as ``name`` and send it to ``target``; the platform's message id."""


# ---- talking to a chat platform: bounded 429 waits, errors without secrets ----

# A 429 is waited out inside the send this many times, each wait at most this long; after that it
# is a transient error and the waiter's own backoff takes over.
RATE_LIMIT_WAITS = 3
RATE_LIMIT_MAX_SECONDS = 30.0


class RateLimit:
    """The 429 waits of one send; ``wait`` sleeps out one, or raises UnavailableError when spent."""

    def __init__(self, platform: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self.platform = platform
        self.sleep = sleep
        self.waits = 0

    def wait(self, retry_after: Any, what: str) -> None:
        try:
            seconds = float(retry_after)
        except (TypeError, ValueError):
            seconds = 1.0  # a 429 without a usable hint: a short pause, still bounded
        if self.waits >= RATE_LIMIT_WAITS or seconds != seconds:  # NaN guard
            raise errors.UnavailableError(f"{self.platform} {what}: still rate limited after {self.waits} wait(s)",
                                          status=429)
        self.waits += 1
        self.sleep(min(max(seconds, 0.0), RATE_LIMIT_MAX_SECONDS))


def request_error(err: requests.RequestException, platform: str, what: str, url: str,
                  sent_message: bool) -> errors.TransientError:
    """The error for a failed call, naming only the host (a Telegram URL holds the token).

    ``sent_message``: the call posts a chat message, so a timeout or a dropped connection after the
    request went out leaves it in doubt (SendInDoubt) rather than plainly failed.
    """
    host = urlsplit(url).netloc
    never_sent = isinstance(err, requests.ConnectTimeout) or "NewConnectionError" in repr(err) \
        or "NameResolution" in repr(err)
    if isinstance(err, requests.Timeout):
        text = f"{platform} {what}: timed out talking to {host}"
    else:
        text = f"{platform} {what}: cannot reach {host} ({type(err).__name__})"
    if sent_message and not never_sent and isinstance(err, (requests.Timeout, requests.ConnectionError)):
        return SendInDoubt(text + "; the message may have been sent")
    return errors.NetworkError(text)


def exchange(http: requests.Session, platform: str, method: str, url: str, what: str, *,
             sent_message: bool = False, **kwargs: Any) -> Tuple[requests.Response, Any]:
    """One streamed HTTP call to a chat platform: the (closed) response and its JSON body, None when not JSON.

    A failed call raises :func:`request_error`'s error; a multipart body's file handles are closed either way.
    """
    from libtv_fsm.transport import request

    try:
        response = request(http, method, url, stream=True, **kwargs)
    except requests.RequestException as err:
        raise request_error(err, platform, what, url, sent_message) from None
    finally:
        close_fields(kwargs.get("data"))
    return response, response_json(response)


def response_json(response: requests.Response) -> Any:
    """The body as JSON (capped), or None when it is not JSON; the response is closed either way."""
    from libtv_fsm.transport import read_json

    try:
        return read_json(response)
    except (ValueError, requests.RequestException):
        return None
    finally:
        response.close()


def scrub(text: Any, *secrets: Optional[str]) -> str:
    """A platform's error text, cut short, with every secret we hold masked (it could echo them)."""
    out = str(text or "")
    for secret in secrets:
        if secret:
            out = out.replace(secret, "****")
    return out[:500]


def close_fields(encoder: Any) -> None:
    """Close the file handles of a requests_toolbelt MultipartEncoder."""
    for value in getattr(encoder, "fields", {}).values():
        if isinstance(value, tuple) and len(value) > 1 and hasattr(value[1], "close"):
            value[1].close()


__all__ = [
    "Channel", "UploadChannel", "PermissionDenied", "FileRefused", "TooLarge", "SendInDoubt", "MB",
    "RateLimit", "request_error", "exchange", "response_json", "scrub", "close_fields",
]
