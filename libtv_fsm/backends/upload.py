"""Upload guards (exists, media type, size) and a streaming multipart body that never holds the file in memory."""
from __future__ import annotations

import contextlib
import mimetypes
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import attrs

from libtv_fsm.errors import InputError

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# Our own table first, so the content type does not depend on the platform's mime database.
MEDIA_TYPES: Dict[str, str] = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
    ".heic": "image/heic", ".heif": "image/heif", ".avif": "image/avif",
    ".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".webm": "video/webm",
    ".avi": "video/x-msvideo", ".mkv": "video/x-matroska", ".mpeg": "video/mpeg", ".mpg": "video/mpeg",
}
# An SVG is XML text that can carry script; upstream wants pixels.
_REFUSED_TYPES = frozenset({"image/svg+xml"})


@attrs.frozen
class UploadFile:
    """A file that passed the guards."""

    path: Path
    name: str
    content_type: str
    size: int


def media_type(path: Path) -> Optional[str]:
    """The image/video content type of ``path`` by its extension, or None when it is neither."""
    suffix = path.suffix.lower()
    if suffix in MEDIA_TYPES:
        return MEDIA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed and guessed.startswith(("image/", "video/")) and guessed not in _REFUSED_TYPES:
        return guessed
    return None


def check_upload(path: Path, limit: int = MAX_UPLOAD_BYTES) -> UploadFile:
    """The guards, in the contract's order, before any request: exists, media type, size."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"File not found: {path}")
    content_type = media_type(path)
    if content_type is None:
        raise InputError(f"Unsupported file type: {path.suffix or path.name} (images and videos only)")
    size = path.stat().st_size
    if size > limit:
        raise InputError(f"File too large: {size / 1048576:.1f} MB (max {limit // 1048576} MB)")
    return UploadFile(path=path, name=path.name, content_type=content_type, size=size)


@contextlib.contextmanager
def multipart(upload: UploadFile, fields: Optional[Dict[str, str]] = None, file_field: str = "file",
              progress: Optional[Callable[[int, int], None]] = None) -> Iterator[Tuple[object, str]]:
    """A streaming multipart body (MultipartEncoder over the open file) and its Content-Type.

    ``progress(sent, total)`` is called as the body is read out (bytes of the whole body).
    """
    from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

    with upload.path.open("rb") as handle:
        parts: Dict[str, object] = dict(fields or {})
        parts[file_field] = (upload.name, handle, upload.content_type)
        encoder = MultipartEncoder(fields=parts)
        if progress is None:
            yield encoder, encoder.content_type
        else:
            yield MultipartEncoderMonitor(encoder, lambda m: progress(m.bytes_read, m.len)), encoder.content_type
