"""The result CDN: deterministic files of any size, generated on the fly, never held in memory."""
from __future__ import annotations

import hashlib
import struct
import zlib
from typing import TYPE_CHECKING, Dict, Iterator, Optional, Tuple

if TYPE_CHECKING:
    from libtv_fsm.sim.server import Recorded, Reply
    from libtv_fsm.sim.simulator import Simulator

CHUNK = 64 * 1024


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# A 1x1 RGBA PNG up to (not including) IEND; a padding chunk and IEND follow.
_PNG_HEAD = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0))
             + _png_chunk(b"IDAT", zlib.compress(b"\x00\x10\x80\xf0\xff")))
_PNG_IEND = _png_chunk(b"IEND", b"")
# Ancillary, private, safe-to-copy: decoders skip it.
_PNG_PAD_TYPE = b"paDd"
_MP4_FTYP = struct.pack(">I", 24) + b"ftypmp42" + struct.pack(">I", 0) + b"mp42isom"

CONTENT_TYPES = {
    "mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm", "png": "image/png",
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
}


class CdnFile:
    """A file as three parts: a fixed head, a seeded filler, a fixed tail (so any range is cheap)."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = max(0, int(size))
        self.ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
        self.content_type = CONTENT_TYPES.get(self.ext, "application/octet-stream")
        # The filler repeats one block seeded by the path, so two results never look alike.
        seed = hashlib.sha256(path.encode("utf-8")).digest()
        self._block = (seed * (CHUNK // len(seed) + 1))[:CHUNK]
        self._head, self._tail = self._frame()

    def _frame(self) -> Tuple[bytes, bytes]:
        if self.ext == "mp4" and self.size >= 32:
            return _MP4_FTYP + struct.pack(">I", self.size - 24) + b"free", b""
        if self.ext == "png" and self.size >= len(_PNG_HEAD) + 12 + len(_PNG_IEND):
            pad = self.size - len(_PNG_HEAD) - 12 - len(_PNG_IEND)
            head = _PNG_HEAD + struct.pack(">I", pad) + _PNG_PAD_TYPE
            crc = zlib.crc32(_PNG_PAD_TYPE)
            for chunk in self._filler(0, pad):
                crc = zlib.crc32(chunk, crc)
            return head, struct.pack(">I", crc & 0xFFFFFFFF) + _PNG_IEND
        return b"", b""

    def _filler(self, start: int, end: int) -> Iterator[bytes]:
        pos = start
        while pos < end:
            off = pos % CHUNK
            n = min(CHUNK - off, end - pos)
            yield self._block[off:off + n]
            pos += n

    def iter_bytes(self, start: int = 0, end: Optional[int] = None) -> Iterator[bytes]:
        """Bytes [start, end) of the file, in chunks of at most 64 KiB."""
        end = self.size if end is None else min(end, self.size)
        head, tail = self._head, self._tail
        fill_end = self.size - len(tail)
        if start < len(head):
            yield head[start:min(end, len(head))]
        lo, hi = max(start, len(head)), min(end, fill_end)
        if lo < hi:
            yield from self._filler(lo - len(head), hi - len(head))
        if end > fill_end:
            yield tail[max(start, fill_end) - fill_end:end - fill_end]

    def read(self) -> bytes:
        """The whole file (tests compare downloads with it; keep to small files)."""
        return b"".join(self.iter_bytes())


class Cdn:
    """Registered files by path under /cdn/."""

    def __init__(self) -> None:
        self.files: Dict[str, CdnFile] = {}

    def put(self, path: str, size: int) -> CdnFile:
        f = CdnFile(path.lstrip("/"), size)
        self.files[f.path] = f
        return f

    def get(self, path: str) -> Optional[CdnFile]:
        return self.files.get(path.lstrip("/"))


def parse_range(header: Optional[str], size: int) -> Optional[Tuple[int, int]]:
    """A single "bytes=a-b" range as [start, end), or None for the whole file or anything fancier."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].strip().partition("-")
    try:
        if first == "":
            n = int(last)
            return (max(0, size - n), size) if n > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return None
    return start, min(end, size)


def serve(sim: "Simulator", rec: "Recorded") -> "Reply":
    """GET or HEAD /cdn/<path>: real bytes, Content-Length, a single byte range if asked."""
    from libtv_fsm.sim.server import Reply, text_reply

    if rec.method not in ("GET", "HEAD"):
        return text_reply(405, "Method Not Allowed", "text/plain")
    with sim.lock:
        f = sim.cdn.get(rec.path[len("/cdn/"):])
    if f is None:
        return text_reply(404, "<html><body>404 Not Found</body></html>")
    headers = {"Content-Type": f.content_type, "Accept-Ranges": "bytes", "ETag": f'"{f.path}-{f.size}"'}
    rng = parse_range(rec.headers.get("range"), f.size)
    if rng is None:
        return Reply(200, f.iter_bytes(), f.size, headers)
    start, end = rng
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
    return Reply(206, f.iter_bytes(start, end), end - start, headers)
