"""One result URL to one chat: download within the channel's limit, send it as a video or image, else send the URL."""
from __future__ import annotations

import posixpath
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import BinaryIO, Optional
from urllib.parse import SplitResult, urljoin, urlsplit

import attrs
import requests

from libtv_fsm import errors
from libtv_fsm.channels.base import MB, Channel, FileRefused, PermissionDenied

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
# (connect, read): the read timeout bounds every single read of the body.
DOWNLOAD_TIMEOUT = (10.0, 60.0)
# A body that trickles in under the read timeout must still end some time: this many times the
# transport's deadline (900 s by default), enforced by its watchdog.
DOWNLOAD_DEADLINE_FACTOR = 3.0
MAX_REDIRECTS = 5
CHUNK_BYTES = 256 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "libtv-fsm:delivery")


def result_kind(url: str) -> str:
    """`video`, `image` or `other`, from the URL path's extension (the query string does not count)."""
    ext = posixpath.splitext(urlsplit(url).path.lower())[1]
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return "other"


def dedupe_key(session_id: str, url: str, purpose: str = "result") -> str:
    """A stable 32-character key for one message: the same session, URL and purpose give the same key."""
    return uuid.uuid5(_NAMESPACE, f"{purpose}\n{session_id}\n{url}").hex


@attrs.frozen
class Outcome:
    """What one delivery sent: the URL, how (`video`, `image` or `text`), the platform's message id, and why."""

    url: str
    sent_as: str
    message_id: str
    note: str = ""


class _NotFetched(Exception):
    """The file cannot be sent as a file (too big, or off-host redirect); send the URL instead."""


def deliver_result(channel: Channel, target: str, session_id: str, url: str, *,
                   http: requests.Session, workdir: Path) -> Outcome:
    """Deliver one result URL once: as a file when it fits, else as one text with the URL.

    Raises TransientError subclasses for download problems (the waiter retries); a retry is safe
    because every message of this result carries the same dedupe key.
    """
    kind = result_kind(url)
    key = dedupe_key(session_id, url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise errors.InputError(f"Not an http(s) result URL: {url[:200]}")
    if kind == "other":
        return _send_link(channel, target, url, key, f"Your result is ready: {url}", "not a video or image")
    limit = channel.max_video_bytes if kind == "video" else channel.max_image_bytes
    workdir.mkdir(parents=True, exist_ok=True)
    # The file keeps the result's own name (a channel that passes the path on shows that name in the
    # chat); a private folder per delivery keeps two deliveries of the same name apart.
    folder = Path(tempfile.mkdtemp(prefix=".libtv-delivery-", dir=str(workdir)))
    path = folder / file_name_for(url)
    try:
        try:
            with path.open("xb") as out:
                download(http, url, out, limit)
        except _NotFetched as why:
            return _send_link(channel, target, url, key, _ready_text(kind, url, str(why)), str(why))
        try:
            if kind == "video":
                message_id = channel.send_video(target, path, file_name=file_name_for(url), dedupe_key=key)
            else:
                message_id = channel.send_image(target, path, dedupe_key=key)
            return Outcome(url, kind, message_id)
        except FileRefused as err:
            reason = err.reason or f"over the {channel.name} size limit"
            return _send_link(channel, target, url, key, _ready_text(kind, url, reason), reason)
        except PermissionDenied as err:
            text = f"Your {kind} is ready: {url}"
            if err.grant_link:
                text += f"\n(The chat app may not upload files yet; an admin can grant it here: {err.grant_link})"
            note = "permission denied" + (f"; grant at {err.grant_link}" if err.grant_link else "")
            return _send_link(channel, target, url, key, text, note)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def download(http: requests.Session, url: str, out: BinaryIO, limit: int) -> int:
    """Stream ``url`` into ``out``; the byte count. _NotFetched past ``limit`` or on an off-host redirect."""
    from libtv_fsm.transport import request

    origin = urlsplit(url)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = request(http, "GET", current, stream=True, timeout=DOWNLOAD_TIMEOUT, allow_redirects=False,
                               headers={"Accept-Encoding": "identity"}, deadline=download_deadline())
        except requests.RequestException as err:
            raise errors.NetworkError(f"Download of {_short(url)} failed ({type(err).__name__})") from None
        with response:
            if response.is_redirect:
                current = urljoin(current, response.headers.get("Location", ""))
                if not same_host(origin, urlsplit(current)):
                    raise _NotFetched("redirected to another host")
                continue
            return _stream_body(response, url, out, limit)
    raise errors.NetworkError(f"Download of {_short(url)} failed (too many redirects)")


def download_deadline() -> float:
    """How long one result download may take in all (the watchdog cuts it after that)."""
    from libtv_fsm.transport import default_deadline

    return default_deadline() * DOWNLOAD_DEADLINE_FACTOR


def same_host(origin: SplitResult, hop: SplitResult) -> bool:
    """A redirect we follow: same host and port, no https->http downgrade; http->https on default ports is fine."""
    if hop.scheme not in ("http", "https") or not hop.hostname or hop.hostname != origin.hostname:
        return False
    if origin.scheme == "https" and hop.scheme != "https":
        return False
    try:
        ports = (origin.port or _DEFAULT_PORTS[origin.scheme], hop.port or _DEFAULT_PORTS[hop.scheme])
    except ValueError:  # a port that is not a number
        return False
    return ports[0] == ports[1] or (origin.port is None and hop.port is None)


def _stream_body(response: requests.Response, url: str, out: BinaryIO, limit: int) -> int:
    status = response.status_code
    if status >= 400 or status < 200:
        cls = errors.UnavailableError if status >= 500 or status in (408, 429) else errors.TransientError
        raise cls(f"Download of {_short(url)} failed (HTTP {status})", status=status)
    declared = _content_length(response)
    if declared is not None and declared > limit:
        raise _NotFetched(f"larger than the {_mb(limit)} the chat accepts")
    from libtv_fsm.transport import deadline_passed

    size = 0
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise _NotFetched(f"larger than the {_mb(limit)} the chat accepts")
            out.write(chunk)
    except requests.RequestException as err:
        if deadline_passed(response):
            raise errors.NetworkError(f"Download of {_short(url)} took too long") from None
        raise errors.NetworkError(f"Download of {_short(url)} broke off ({type(err).__name__})") from None
    if deadline_passed(response):  # cut at the deadline right at the end of a chunk
        raise errors.NetworkError(f"Download of {_short(url)} took too long")
    if (declared is not None and size != declared) or size == 0:
        raise errors.NetworkError(f"Download of {_short(url)} was incomplete ({size} bytes)")
    return size


def _content_length(response: requests.Response) -> Optional[int]:
    try:
        value = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def file_name_for(url: str) -> str:
    """The URL's file name, reduced to safe characters (the chat shows it)."""
    base = posixpath.basename(urlsplit(url).path)
    ext = posixpath.splitext(base)[1].lower()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", base).strip("._")[-100:]
    return safe if safe and "." in safe else f"result{ext or '.mp4'}"


def _send_link(channel: Channel, target: str, url: str, key: str, text: str, note: str) -> Outcome:
    # Same key as the file would have had: a result never shows twice, whichever form went first.
    return Outcome(url, "text", channel.send_text(target, text, dedupe_key=key), note)


def _ready_text(kind: str, url: str, why: str) -> str:
    return f"Your {kind} is ready ({why}; open it here): {url}"


def _mb(limit: int) -> str:
    return f"{limit // MB} MB" if limit >= MB else f"{limit} bytes"


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]


def notice_text(kind: str, session_id: str, detail: str) -> str:
    """The one text a `failed` or `timeout` session sends to the chat."""
    detail = (detail or "").strip()[:1000]
    if kind == "failed":
        return f"❌ The generation failed (session {session_id}): {detail or 'no reason was given'}"
    if kind == "timeout":
        text = (f"⏳ Still generating (session {session_id}); it is taking longer than usual. "
                f"To get the result later, ask me to check session {session_id} "
                f"(or run `query-session {session_id}`).")
        return f"{text}\n{detail}" if detail else text
    raise ValueError(f"unknown notice kind {kind!r}")


def send_notice(channel: Channel, target: str, session_id: str, kind: str, detail: str) -> Outcome:
    """Send the failed/timeout notice once (its dedupe key is fixed per session and kind)."""
    text = notice_text(kind, session_id, detail)
    message_id = channel.send_text(target, text, dedupe_key=dedupe_key(session_id, kind, "notice"))
    return Outcome("", "text", message_id, kind)


__all__ = ["Outcome", "result_kind", "dedupe_key", "deliver_result", "download", "notice_text",
           "send_notice", "file_name_for", "same_host"]
