"""The one HTTP session every upstream and chat client shares: pooling, timeouts, safe retries.

Retries live here and nowhere else. Only idempotent requests (GET, HEAD) are retried by
urllib3, on connection errors and 408/429/5xx, honouring ``Retry-After``; a POST is sent
once, because re-posting a session create on a read timeout would start a second paid job.
Redirects are never followed for API calls (a 3xx would carry ``X-API-KEY`` to another
host); callers pass ``allow_redirects=False`` through :func:`request`.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from libtv_fsm import __version__

# (connect, read) seconds; every call has one, so a slow-loris upstream cannot hang us.
DEFAULT_TIMEOUT: Tuple[float, float] = (10.0, 60.0)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The most of a JSON body we read; a hostile upstream cannot make us hold more.
MAX_JSON_BYTES = 8 * 1024 * 1024
# The longest Retry-After we sleep inside one call; longer waits are the waiter's backoff's job.
MAX_RETRY_AFTER = 10.0


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
    adapter = HTTPAdapter(max_retries=retries or retry_policy(), pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = f"libtv-fsm/{__version__}"
    # Proxies from the environment are the user's business; a .netrc must never add credentials.
    session.trust_env = True
    session.auth = _no_netrc
    return session


def request(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One call with a timeout and no redirects unless the caller asks for them."""
    kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    return session.request(method, url, **kwargs)


def join_url(base: str, path: str) -> str:
    """Join a base URL (with or without a trailing slash) and a path without a `//`."""
    return base.rstrip("/") + "/" + path.lstrip("/")


def read_json(response: requests.Response, limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON body, reading at most ``limit`` bytes; ValueError if it is not JSON or too big."""
    import json

    if response.raw is not None and not getattr(response, "_content_consumed", True):  # streamed: cap what we read
        chunks = []
        size = 0
        for chunk in response.iter_content(65536):
            size += len(chunk)
            if size > limit:
                response.close()
                raise ValueError(f"response body larger than {limit} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
    else:
        body = response.content
        if len(body) > limit:
            raise ValueError(f"response body larger than {limit} bytes")
    return json.loads(body.decode("utf-8"))
