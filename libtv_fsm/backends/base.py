"""The backend interface, its value types, and the response checks and error mapping both routes share."""
from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, NoReturn, Optional, Sequence, Tuple, Type
from urllib.parse import quote

import attrs

from libtv_fsm.errors import (
    AuthError, BadResponse, ConfigError, ExpiredError, NetworkError, PermanentError, QuotaError,
    UnavailableError, UpstreamError,
)
from libtv_fsm.ids import is_valid_id, validate_session_id

if TYPE_CHECKING:
    import requests

CANVAS_URL = "https://www.liblib.tv/canvas?projectId="
# Upstream text is relayed verbatim, but one line and bounded: it ends up in a chat and a journal.
MAX_UPSTREAM_TEXT = 500
# Known upstream user messages and the error each one is (matched case-insensitively).
_KNOWN_MESSAGES: Tuple[Tuple[str, Type[UpstreamError]], ...] = (
    ("invalid api key", AuthError),
    ("free trial uses exhausted", QuotaError),
    ("key expired", ExpiredError),
    ("service temporarily unavailable", UnavailableError),
)
_TRANSIENT_STATUSES = frozenset({408, 429})


@attrs.frozen
class Message:
    """One session message, validated."""

    id: str
    seq: int
    role: str
    content: str


@attrs.frozen
class KeyStatus:
    remaining_uses: int
    max_uses: int
    expires_at: Optional[str]


@attrs.frozen
class Task:
    id: str
    status: str
    backend: Optional[str]
    created_at: Optional[str]
    completed_at: Optional[str]
    video_url: Optional[str]
    error_message: Optional[str]


@attrs.frozen
class Created:
    session_id: str
    project_uuid: str
    project_url: str


def canvas_url(project_uuid: str) -> str:
    """The project's canvas on liblib.tv."""
    return CANVAS_URL + quote(project_uuid, safe="")


# --- response checks -------------------------------------------------------------------------

def bad(what: str) -> NoReturn:
    raise BadResponse(f"Unexpected response from LibTV: {what}")


def expect_dict(value: Any, what: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        bad(f"{what} is not an object")
    return value


def expect_str(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        bad(f"{what} has no {key}")
    return value


def optional_str(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def expect_int(doc: Mapping[str, Any], key: str, what: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        bad(f"{what}.{key} is not a whole number")
    return value


def expect_id(doc: Mapping[str, Any], key: str) -> str:
    """A session id or project uuid from upstream: a plain token, or the response is bad."""
    value = doc.get(key)
    if not isinstance(value, str) or not is_valid_id(value):
        bad(f"missing or invalid {key}")
    return value


def expect_url(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or any(c.isspace() for c in value):
        bad(f"{what} has no valid {key}")
    return value


def parse_message(raw: Any) -> Message:
    doc = expect_dict(raw, "a message")
    seq = doc.get("seq")
    if isinstance(seq, str) and seq.isdigit():  # tolerate a seq serialised as a string
        seq = int(seq)
    if isinstance(seq, bool) or not isinstance(seq, int):
        bad("a message has no whole-number seq")
    msg_id = optional_str(doc.get("id"))
    role = doc.get("role")
    if msg_id is None or not isinstance(role, str):
        bad("a message has no id or role")
    content = doc.get("content")
    if content is None:
        content = ""
    elif isinstance(content, (dict, list)):  # structured tool output: keep it readable as JSON
        content = json.dumps(content, ensure_ascii=False)
    elif not isinstance(content, str):
        bad("a message content is not text")
    return Message(id=msg_id, seq=seq, role=role, content=content)


def parse_messages(doc: Any) -> List[Message]:
    raw = expect_dict(doc, "the session").get("messages")
    if not isinstance(raw, list):
        bad("the session has no messages list")
    return sorted((parse_message(item) for item in raw), key=lambda m: m.seq)


def parse_key_status(doc: Any) -> KeyStatus:
    doc = expect_dict(doc, "the key status")
    expires = doc.get("expires_at")
    if expires is not None and not isinstance(expires, str):
        bad("key status expires_at is not text")
    return KeyStatus(remaining_uses=expect_int(doc, "remaining_uses", "key status"),
                     max_uses=expect_int(doc, "max_uses", "key status"), expires_at=expires)


def parse_task(raw: Any) -> Task:
    doc = expect_dict(raw, "a task")
    task_id = optional_str(doc.get("id"))
    if task_id is None:
        bad("a task has no id")
    return Task(id=task_id, status=optional_str(doc.get("status")) or "unknown",
                backend=optional_str(doc.get("backend")), created_at=optional_str(doc.get("created_at")),
                completed_at=optional_str(doc.get("completed_at")), video_url=optional_str(doc.get("video_url")),
                error_message=optional_str(doc.get("error_message")))


# --- error mapping ---------------------------------------------------------------------------

def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_UPSTREAM_TEXT else text[: MAX_UPSTREAM_TEXT - 3] + "..."


def upstream_text(doc: Any) -> Optional[str]:
    """The text an error body means a user to read: gateway `error.user_message`, direct `message`."""
    if not isinstance(doc, dict):
        return None
    error = doc.get("error")
    candidates = []
    if isinstance(error, dict):
        candidates += [error.get("user_message"), error.get("message")]
    candidates += [error, doc.get("user_message"), doc.get("message"), doc.get("msg")]
    for item in candidates:
        if isinstance(item, str) and item.strip():
            return one_line(item)
    return None


def upstream_code(doc: Any) -> Optional[str]:
    if not isinstance(doc, dict):
        return None
    error = doc.get("error")
    code = error.get("code") if isinstance(error, dict) else doc.get("code")
    return None if code is None or isinstance(code, (dict, list)) else str(code)


def error_for(status: Optional[int], text: Optional[str], code: Optional[str] = None) -> UpstreamError:
    """The error a failed call is: known user messages first, then the HTTP status."""
    if text:
        lowered = text.lower()
        for needle, cls in _KNOWN_MESSAGES:
            if needle in lowered:
                return cls(text, status=status, code=code)
    if status is None or 200 <= status < 300:  # a direct-API non-zero code on a 2xx
        return PermanentError(text or f"LibTV refused the request (code {code})", status=status, code=code)
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return UnavailableError(text or f"LibTV service unavailable (HTTP {status})", status=status, code=code)
    if 300 <= status < 400:  # never followed: a redirect could carry the key to another host
        return BadResponse(f"Unexpected redirect from LibTV (HTTP {status}); not followed", status=status, code=code)
    if status == 401:
        return AuthError(text or "Invalid API Key", status=status, code=code)
    return PermanentError(text or f"LibTV refused the request (HTTP {status})", status=status, code=code)


def network_error(err: Exception) -> NetworkError:
    import requests

    if isinstance(err, requests.Timeout):
        return NetworkError("Network error: LibTV did not answer in time")
    return NetworkError(f"Network error: cannot reach LibTV ({type(err).__name__})")


class Backend(abc.ABC):
    """One route to LibTV; see CONTRACT section 2. Every method validates what it returns."""

    auth_mode: str = ""
    key_prefix: str = ""

    def __init__(self, api_key: str, base_url: str, session: "requests.Session",
                 prefixes: Sequence[str], timeout: Optional[Tuple[float, float]] = None) -> None:
        # Belt and braces over config.route_for_key: a key never travels on the other route.
        if not api_key.startswith(self.key_prefix):
            raise ConfigError("Invalid API Key format")
        from libtv_fsm import transport

        self._key = api_key
        self.base_url = base_url
        self.session = session
        self.prefixes = tuple(prefixes)
        self.timeout = timeout or transport.DEFAULT_TIMEOUT

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    # -- plumbing shared by both routes --

    def scrub(self, text: str) -> str:
        """Remove the API key from a text that may have echoed it."""
        from libtv_fsm.config import mask_secret

        return text.replace(self._key, mask_secret(self._key)) if self._key and self._key in text else text

    @abc.abstractmethod
    def auth_headers(self) -> Dict[str, str]:
        """The headers that carry the key on this route."""

    @abc.abstractmethod
    def unwrap(self, response: "requests.Response") -> Any:
        """The validated JSON payload of a response, or the mapped error."""

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One request to this route's base URL; returns the unwrapped payload or raises an UpstreamError."""
        import requests

        from libtv_fsm import transport

        headers = dict(kwargs.pop("headers", None) or {})
        headers.update(self.auth_headers())
        kwargs.setdefault("timeout", self.timeout)
        url = transport.join_url(self.base_url, path)
        try:
            response = transport.request(self.session, method, url, headers=headers, stream=True, **kwargs)
            try:
                return self.unwrap(response)
            finally:
                response.close()
        except UpstreamError as err:
            err.message = self.scrub(err.message)
            err.args = (err.message,)
            raise
        except (requests.ConnectionError, requests.Timeout) as err:
            raise network_error(err) from None
        except requests.RequestException as err:  # chunked/decoding errors: a broken body
            raise BadResponse(f"Unexpected response from LibTV ({type(err).__name__})") from None

    def read_body(self, response: "requests.Response") -> Any:
        """The JSON body, or None when it is not JSON (an HTML error page, a truncated body)."""
        from libtv_fsm import transport

        try:
            return transport.read_json(response)
        except (ValueError, UnicodeDecodeError):
            return None

    # -- the operations --

    @abc.abstractmethod
    def key_status(self) -> KeyStatus: ...

    @abc.abstractmethod
    def upload(self, path: Path, progress: Optional[Callable[[int, int], None]] = None) -> str:
        """Stream an image or video upstream; its URL. ``progress(sent, total)`` follows the body."""

    # The route's session resource: POST it to create or continue, GET <path>/<id> to read.
    session_path: str = ""

    def create_session(self, message: Optional[str] = None, session_id: Optional[str] = None) -> Created:
        """Create a session (or a new turn of ``session_id``); never retried, it starts a paid job."""
        body: Dict[str, str] = {}
        if message is not None:
            body["message"] = message
        if session_id is not None:
            body["sessionId"] = validate_session_id(session_id)
        doc = expect_dict(self.call("POST", self.session_path, json=body), "the session")
        project = expect_id(doc, "projectUuid")
        return Created(session_id=expect_id(doc, "sessionId"), project_uuid=project,
                       project_url=self.project_url(doc, project))

    def project_url(self, doc: Mapping[str, Any], project: str) -> str:
        """The canvas URL of the project (the gateway may name its own)."""
        return canvas_url(project)

    def query_session(self, session_id: str, after_seq: Optional[int] = None) -> List[Message]:
        sid = validate_session_id(session_id)
        params = {"afterSeq": int(after_seq)} if after_seq is not None else None
        return parse_messages(self.call("GET", f"{self.session_path}/{sid}", params=params))

    @abc.abstractmethod
    def results(self, session_id: str) -> List[str]: ...

    @abc.abstractmethod
    def tasks(self) -> List[Task]: ...

    @abc.abstractmethod
    def change_project(self) -> str: ...
