"""Streaming download of result URLs into one folder, under names we choose, never outside it."""
from __future__ import annotations

import mimetypes
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from libtv_fsm.errors import BadResponse, InputError, NetworkError, UpstreamError
from libtv_fsm.backends.base import error_for
from libtv_fsm.results import is_result_url

if TYPE_CHECKING:
    import requests

# A hostile or broken CDN must not fill the disk.
MAX_DOWNLOAD_BYTES = 2 * 1024 * 1024 * 1024
# One download may take this many times the transport's deadline (an hour by default): a result
# can be large, but a CDN that trickles must not hold the command forever.
DEADLINE_FACTOR = 12.0
CHUNK = 1024 * 1024
_KNOWN_EXTS = frozenset({"mp4", "mov", "webm", "m4v", "png", "jpg", "jpeg", "webp", "gif"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_prefix(text: Optional[str], default: str = "libtv") -> str:
    """A plain file-name part: no separators, no leading dots, at most 64 characters."""
    cleaned = _UNSAFE.sub("_", text or "").strip("._-")[:64].strip("._-")
    return cleaned or default


def extension_for(url: str, content_type: Optional[str] = None) -> str:
    """The file extension for a result: from the URL path, else from the content type, else `bin`."""
    suffix = os.path.splitext(urlsplit(url).path)[1].lower().lstrip(".")
    if suffix in _KNOWN_EXTS:
        return suffix
    if content_type:
        guessed = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
        if guessed.lstrip(".") in _KNOWN_EXTS:
            return guessed.lstrip(".")
    return "bin"


def target_in(folder: Path, name: str) -> Path:
    """``folder/name``, refusing any name that would land outside ``folder``."""
    folder = folder.resolve()
    target = (folder / name).resolve()
    if target.parent != folder or name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise InputError(f"Refusing to write outside {folder}: {name!r}")
    return target


def download(session: "requests.Session", url: str, folder: Path, stem: str, prefixes: Sequence[str],
             timeout: Tuple[float, float] = (10.0, 60.0), limit: int = MAX_DOWNLOAD_BYTES,
             progress: Optional[Callable[[int], None]] = None) -> Path:
    """Stream one result URL to ``folder/<stem>.<ext>`` (written whole or not at all); ``progress(n)`` per chunk."""
    import requests

    from libtv_fsm import transport

    if not is_result_url(url, prefixes):
        raise InputError(f"Not a result URL: {url[:200]}")
    try:
        # The CDN gets no credentials, but a redirect is still not followed: it would leave the
        # allowed result prefixes.
        response = transport.request(session, "GET", url, stream=True, timeout=timeout,
                                     deadline=transport.default_deadline() * DEADLINE_FACTOR)
        with response:
            if response.status_code != 200:
                raise error_for(response.status_code, f"Download failed (HTTP {response.status_code})")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise BadResponse(f"Result is larger than {limit // 1048576} MB")
            target = target_in(folder, f"{stem}.{extension_for(url, response.headers.get('Content-Type'))}")
            _stream_to(response, target, limit, progress)
            return target
    except UpstreamError:
        raise
    except (requests.ConnectionError, requests.Timeout):
        raise NetworkError("Network error: the download did not complete") from None
    except requests.RequestException as err:
        raise BadResponse(f"Download failed ({type(err).__name__})") from None


def _stream_to(response: "requests.Response", target: Path, limit: int,
               progress: Optional[Callable[[int], None]] = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=f".{target.name}.", suffix=".part")
    try:
        size = 0
        with os.fdopen(fd, "wb") as handle:
            for chunk in response.iter_content(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise BadResponse(f"Result is larger than {limit // 1048576} MB")
                handle.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        from libtv_fsm.transport import deadline_passed

        if deadline_passed(response):  # cut off at the deadline: what arrived is not the whole result
            raise NetworkError("Network error: the download took too long and was cut off")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a result is the user's ordinary file
        os.replace(tmp, str(target))  # replaces a symlink itself, never writes through it
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
