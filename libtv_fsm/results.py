"""The pure rule for what a poll's messages say: result URLs, failure, and when a session is complete."""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

import attrs

if TYPE_CHECKING:  # the rule stays pure: no HTTP stack at import time
    from libtv_fsm.backends.base import Message

RESULT_PREFIXES: Tuple[str, ...] = (
    "https://libtv-res.liblib.art/sd-gen-save-img/",
    "https://libtv-res.liblib.art/claw/",
)
# A longer "URL" is not a result; it only costs memory and log space.
MAX_URL_LENGTH = 2048
MAX_FAILURE_TEXT = 500
# Quiet polls (no new message) after which results are taken as final.
QUIET_POLLS_TO_COMPLETE = 2

# RFC 3986 characters minus brackets, so prose such as `见：https://…，` or `[x](https://…)` stops
# at the right place; trailing sentence punctuation is stripped afterwards.
_URL_IN_PROSE = re.compile(r"https?://[A-Za-z0-9\-._~:/?#@!$&'()*+,;=%]+")
_TRAILING = ").,;:!?\"'"
_FAILED_STATUSES = frozenset({"failed", "fail", "error", "failure"})


def result_prefixes(extra: Optional[str]) -> Tuple[str, ...]:
    """The allowed result prefixes plus those in a LIBTV_EXTRA_RESULT_PREFIXES value (comma-separated)."""
    found = list(RESULT_PREFIXES)
    for item in (extra or "").split(","):
        item = item.strip()
        # A prefix must name a scheme, a host and a path ending in "/" to be checked strictly.
        parts = urlsplit(item) if item else None
        if parts and parts.scheme in ("http", "https") and parts.netloc and item.endswith("/") and item not in found:
            found.append(item)
    return tuple(found)


def _has_unsafe_chars(url: str) -> bool:
    return any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url)


def is_result_url(url: object, prefixes: Sequence[str]) -> bool:
    """True when ``url`` starts with one of ``prefixes`` by exact scheme, host (with port) and path.

    Look-alike hosts (``libtv-res.liblib.art.evil.com``), userinfo tricks
    (``https://libtv-res.liblib.art@evil.com/``), ``http://`` and dot segments are refused.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or _has_unsafe_chars(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if "@" in parts.netloc or any(seg in (".", "..") for seg in unquote(parts.path).split("/")):
        return False
    for prefix in prefixes:
        want = urlsplit(prefix)
        if (parts.scheme == want.scheme and parts.netloc.lower() == want.netloc.lower()
                and parts.path.startswith(want.path) and len(parts.path) > len(want.path)):
            return True
    return False


@attrs.frozen
class Batch:
    """What one poll's messages say."""

    last_seq: int
    urls: Tuple[str, ...]
    last_result_seq: Optional[int]
    last_assistant_seq: Optional[int]
    failure: Optional[str]


def _loads(text: Any) -> Any:
    """Parse JSON content, also when it was encoded twice; None when it is not JSON."""
    for _ in range(2):
        if not isinstance(text, str):
            return text
        stripped = text.strip()
        if not stripped or stripped[0] not in "{[\"":
            return None
        try:
            text = json.loads(stripped)
        except ValueError:
            return None
    return text


def _task_result(content: str) -> Optional[Dict[str, Any]]:
    doc = _loads(content)
    if not isinstance(doc, dict):
        return None
    result = _loads(doc.get("task_result"))
    return result if isinstance(result, dict) else None


def _entries(value: Any) -> List[Dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _tool_urls(result: Dict[str, Any]) -> Iterator[Any]:
    for image in _entries(result.get("images")):
        yield image.get("previewPath")
    for video in _entries(result.get("videos")):
        # One URL per video: the preview path when it is there, else the plain url.
        yield video.get("previewPath") if video.get("previewPath") else video.get("url")


def _failure_text(result: Dict[str, Any], has_urls: bool) -> Optional[str]:
    status = result.get("status")
    failed = isinstance(status, str) and status.strip().lower() in _FAILED_STATUSES
    error = result.get("error_message") or result.get("error")
    if not failed and not (error and not has_urls):
        return None
    if isinstance(error, dict):
        error = error.get("user_message") or error.get("message")
    if not isinstance(error, str) or not error.strip():
        message = result.get("message")
        error = message if isinstance(message, str) and message.strip() else "Generation failed"
    text = " ".join(error.split())
    return text if len(text) <= MAX_FAILURE_TEXT else text[: MAX_FAILURE_TEXT - 3] + "..."


def prose_urls(text: str) -> List[str]:
    """Every http(s) URL in free text, with trailing sentence punctuation stripped."""
    found = []
    for match in _URL_IN_PROSE.finditer(text):
        url = match.group(0)
        while url and url[-1] in _TRAILING:
            url = url[:-1]
        found.append(url)
    return found


def read_batch(messages: Sequence["Message"], after_seq: int, prefixes: Sequence[str]) -> Batch:
    """Read the results, failure and progress markers of the messages after ``after_seq``.

    Messages are taken in ``seq`` order; user messages never contribute (a user's own prompt
    may quote a result URL of an earlier turn).
    """
    last_seq = after_seq
    urls: List[str] = []
    seen = set()
    last_result_seq: Optional[int] = None
    last_assistant_seq: Optional[int] = None
    failure: Optional[str] = None
    for message in sorted(messages, key=lambda m: m.seq):
        last_seq = max(last_seq, message.seq)
        if message.seq <= after_seq:
            continue
        if message.role == "tool":
            result = _task_result(message.content)
            if result is None:
                continue
            found = [url for url in _tool_urls(result) if is_result_url(url, prefixes)]
            if found:
                last_result_seq = message.seq
            failure = _failure_text(result, bool(found)) or failure
        elif message.role == "assistant":
            last_assistant_seq = message.seq
            found = [url for url in prose_urls(message.content) if is_result_url(url, prefixes)]
        else:
            continue
        for url in found:
            if url not in seen:
                seen.add(url)
                urls.append(url)
    return Batch(last_seq=last_seq, urls=tuple(urls), last_result_seq=last_result_seq,
                 last_assistant_seq=last_assistant_seq, failure=failure)


def is_complete(has_urls: bool, last_result_seq: Optional[int], last_assistant_seq: Optional[int],
                quiet_polls: int) -> bool:
    """CONTRACT: results exist after the submission point and either an assistant message follows
    the last result-bearing tool message, or no new message arrived for two polls in a row."""
    if not has_urls:
        return False
    if quiet_polls >= QUIET_POLLS_TO_COMPLETE:
        return True
    if last_assistant_seq is None:
        return False
    # Results only in assistant prose: that message is itself the closing answer.
    return last_result_seq is None or last_assistant_seq > last_result_seq
