"""The one HTTP session every upstream and chat client shares: pooling, timeouts, safe retries.

Retries live here and nowhere else. Only idempotent requests (GET, HEAD) are retried by
urllib3, on connection errors and 408/429/5xx, honouring ``Retry-After``; a POST is sent
once, because re-posting a session create on a read timeout would start a second paid job.
Redirects are never followed for API calls (a 3xx would carry ``X-API-KEY`` to another
host); callers pass ``allow_redirects=False`` through :func:`request`.

Every call also has a wall-clock deadline (connect, send, headers and body together). The
per-read timeout alone cannot stop a slow-loris peer that sends one byte every few seconds;
a watchdog thread cuts the socket of a call that outlives its deadline, and the call ends
as a ``ReadTimeout``.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from libtv_fsm import __version__, failpoints

# (connect, read) seconds; every call has one, so a slow-loris upstream cannot hang us.
DEFAULT_TIMEOUT: Tuple[float, float] = (10.0, 60.0)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The most of a JSON body we read; a hostile upstream cannot make us hold more.
MAX_JSON_BYTES = 8 * 1024 * 1024
# The longest Retry-After we sleep inside one call; longer waits are the waiter's backoff's job.
MAX_RETRY_AFTER = 10.0
# The whole of one call, body included, unless the caller gives its own (uploads, downloads).
DEFAULT_DEADLINE = 300.0
DEADLINE_ENV = "LIBTV_HTTP_DEADLINE_SECONDS"
# An upload gets DEFAULT_DEADLINE plus its size at this (slow) rate.
UPLOAD_MIN_BYTES_PER_SECOND = 64 * 1024


def default_deadline() -> float:
    """DEFAULT_DEADLINE, or LIBTV_HTTP_DEADLINE_SECONDS when set to a positive number (tests, slow links)."""
    raw = os.environ.get(DEADLINE_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_DEADLINE
    except ValueError:
        return DEFAULT_DEADLINE
    return value if value > 0 else DEFAULT_DEADLINE


def upload_deadline(size: int) -> float:
    """The deadline of a call that sends ``size`` bytes."""
    return default_deadline() + max(0, size) / UPLOAD_MIN_BYTES_PER_SECOND


class _DeadlinePassed(Exception):
    """Raised inside urllib3 when a retry would start after the deadline: not an OSError, so not retried."""


class _Guard:
    """The deadline of one call on one thread, and the connection it is using."""

    __slots__ = ("ident", "seconds", "deadline", "conn", "expired", "cut", "done")

    def __init__(self, seconds: float) -> None:
        self.ident = threading.get_ident()
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.conn: Any = None
        self.expired = False
        self.cut = False
        self.done = False


class _Watchdog:
    """One daemon thread for the process: cuts the socket of a call past its deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._guards: Dict[int, _Guard] = {}  # thread -> the call it is making now
        self._thread: Optional[threading.Thread] = None

    def start(self, seconds: float) -> _Guard:
        guard = _Guard(seconds)
        with self._cond:
            previous = self._guards.get(guard.ident)
            if previous is not None:
                previous.done = True  # one call at a time per thread: the earlier body was left unread
            self._guards[guard.ident] = guard
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="libtv-http-deadline", daemon=True)
                self._thread.start()
            self._cond.notify()
        return guard

    def stop(self, guard: _Guard) -> None:
        with self._cond:
            guard.done = True
            if self._guards.get(guard.ident) is guard:
                del self._guards[guard.ident]

    def attach(self, conn: Any) -> None:
        """Called by the connection as it starts a request (a retry too), in the calling thread."""
        with self._cond:
            guard = self._guards.get(threading.get_ident())
            if guard is None or guard.done:
                return
            guard.conn, guard.cut = conn, False
            expired = guard.expired
        if expired:  # a retry after the deadline: do not even start it
            raise _DeadlinePassed(f"deadline of {guard.seconds:g} s passed")

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                nearest: Optional[float] = None
                for guard in list(self._guards.values()):
                    if guard.done:
                        continue
                    if not guard.expired and guard.deadline <= now:
                        guard.expired = True
                    if guard.expired and not guard.cut:
                        guard.cut = _cut(guard.conn)
                        if not guard.cut:  # still connecting: try again shortly
                            nearest = now + 0.25 if nearest is None else min(nearest, now + 0.25)
                    elif not guard.expired:
                        nearest = guard.deadline if nearest is None else min(nearest, guard.deadline)
                self._cond.wait(None if nearest is None else max(0.01, nearest - now))


def _cut(conn: Any) -> bool:
    """Shut the connection's socket down under the thread blocked on it; False if it has none yet."""
    sock = getattr(conn, "sock", None)
    if sock is None:
        return False
    try:
        # The plain socket's shutdown even for TLS: SSLSocket.shutdown would also drop the TLS
        # object under the reading thread.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass
    return True


_WATCHDOG = _Watchdog()


class _WatchedHTTPConnection(HTTPConnection):
    def putrequest(self, *args: Any, **kwargs: Any) -> None:
        _WATCHDOG.attach(self)
        super().putrequest(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def putrequest(self, *args: Any, **kwargs: Any) -> None:
        _WATCHDOG.attach(self)
        super().putrequest(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter, with connections the deadline watchdog can cut."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if getattr(manager, "pool_classes_by_scheme", None) is not None and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager


class _Retry(Retry):
    """urllib3's Retry, but a `Retry-After: 3600` cannot stall one call for an hour."""

    def get_retry_after(self, response: Any) -> Optional[float]:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_RETRY_AFTER)


def _no_netrc(request: requests.PreparedRequest) -> requests.PreparedRequest:
    # A session-level auth, even a no-op one, stops requests from reading ~/.netrc, which
    # would otherwise replace our `Authorization: Bearer` or add the user's own credentials.
    return request


def retry_policy(total: int = 3, backoff: float = 0.5) -> Retry:
    """urllib3 retries for idempotent methods only, honouring Retry-After (capped)."""
    return _Retry(
        total=total,
        connect=total,
        read=total,
        status=total,
        other=0,
        redirect=0,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def new_session(retries: Optional[Retry] = None, pool_size: int = 8) -> requests.Session:
    """A ``requests.Session`` with connection reuse and the retry policy mounted."""
    session = requests.Session()
    adapter = _Adapter(max_retries=retries or retry_policy(), pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"libtv-fsm/{__version__}"
    # Proxies from the environment are the user's business; a .netrc must never add credentials.
    session.trust_env = True
    session.auth = _no_netrc
    return session


def request(session: requests.Session, method: str, url: str, *, deadline: Optional[float] = None,
            **kwargs: Any) -> requests.Response:
    """One call with a per-read timeout, a wall-clock ``deadline`` and no redirects unless asked for.

    With ``stream=True`` the deadline runs on while the body is read, until the response is closed.
    A call past its deadline raises ``requests.ReadTimeout`` (during the body: a RequestException).
    """
    kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    if failpoints.ARMED:
        failpoints.hit(f"before_http:{method.upper()}:{urlsplit(url).path}")
    if deadline is None or deadline <= 0:
        deadline = upload_deadline(_body_size(kwargs))  # an upload gets time for its bytes
    guard = _WATCHDOG.start(deadline)
    try:
        response = session.request(method, url, **kwargs)
    except (requests.RequestException, _DeadlinePassed) as err:
        _WATCHDOG.stop(guard)
        if guard.expired or isinstance(err, _DeadlinePassed):
            raise requests.exceptions.ReadTimeout(f"no complete answer within {guard.seconds:g} s") from None
        raise
    except BaseException:
        _WATCHDOG.stop(guard)
        raise
    if kwargs.get("stream"):
        response.close = _closer(response.close, guard)  # type: ignore[method-assign]
        response._libtv_deadline = guard  # type: ignore[attr-defined]
    else:
        _WATCHDOG.stop(guard)
    if failpoints.ARMED:
        failpoints.hit(f"after_http:{method.upper()}:{urlsplit(url).path}")
    return response


def _body_size(kwargs: Dict[str, Any]) -> int:
    """Best guess of how many bytes a call sends (0 when it sends none or nobody can tell)."""
    def size_of(value: Any) -> int:
        if value is None:
            return 0
        if isinstance(value, (bytes, bytearray, str)):
            return len(value)
        length = getattr(value, "len", None)  # requests_toolbelt's MultipartEncoder
        if isinstance(length, int):
            return length
        if isinstance(value, (tuple, list)):
            return sum(size_of(v) for v in value)
        if isinstance(value, dict):
            return sum(size_of(v) for v in value.values())
        try:
            return os.fstat(value.fileno()).st_size  # an open file
        except (AttributeError, OSError, ValueError):
            return 0

    return size_of(kwargs.get("data")) + size_of(kwargs.get("files"))


def _closer(close: Callable[[], None], guard: _Guard) -> Callable[[], None]:
    def close_and_stop() -> None:
        _WATCHDOG.stop(guard)
        close()

    return close_and_stop


def deadline_passed(response: requests.Response) -> bool:
    """Whether the watchdog cut this streamed response for taking too long."""
    guard = getattr(response, "_libtv_deadline", None)
    return bool(guard is not None and guard.expired)


def join_url(base: str, path: str) -> str:
    """Join a base URL (with or without a trailing slash) and a path without a `//`."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def read_json(response: requests.Response, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON body, reading at most ``limit`` bytes; ValueError if it is not JSON or too big."""
    import json

    if response.raw is not None and not getattr(response, "_content_consumed", True):  # streamed: cap what we read
        chunks = []
        size = 0
        try:
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > limit:
                    response.close()
                    raise ValueError(f"response body larger than {limit} bytes")
                chunks.append(chunk)
        except requests.RequestException:
            if deadline_passed(response):
                raise requests.exceptions.ReadTimeout("the answer took too long to arrive") from None
            raise
        if deadline_passed(response):  # a body that ends at the cut looks whole but is not
            raise requests.exceptions.ReadTimeout("the answer took too long to arrive")
        body = b"".join(chunks)
    else:
        body = response.content
        if len(body) > limit:
            raise ValueError(f"response body larger than {limit} bytes")
    return json.loads(body.decode("utf-8"))
