"""HTTP plumbing of the simulator: read and record a request (streaming uploads), write a reply."""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Set, Tuple, Union
from urllib.parse import parse_qsl, unquote

from multipart import MultipartSegment, PushMultipartParser

READ_CHUNK = 64 * 1024
# A JSON or urlencoded body larger than this is counted, not kept: nobody sends one legitimately.
MAX_KEPT_BODY = 4 * 1024 * 1024
# Text form fields are kept up to this size; file parts are only counted.
MAX_KEPT_FIELD = 64 * 1024


class Headers(dict):
    """Request headers with case-insensitive lookup (keys are stored lower-case)."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


@dataclass
class Recorded:
    """One request as the simulator saw it; file parts are sizes, never contents."""

    method: str
    path: str
    query: Dict[str, str]
    headers: Headers
    json: Any = None
    form: Dict[str, str] = field(default_factory=dict)
    # field name -> (file name, size in bytes)
    files: Dict[str, Tuple[Optional[str], int]] = field(default_factory=dict)
    body_size: int = 0
    at: float = 0.0
    status: Optional[int] = None
    body_error: Optional[str] = None


@dataclass
class Reply:
    """What to answer. `body` may be an iterator so big files stream; `action` "reset" drops the socket."""

    status: int = 200
    body: Union[bytes, Iterable[bytes]] = b""
    length: Optional[int] = None
    headers: Dict[str, str] = field(default_factory=dict)
    action: Optional[str] = None
    # Seconds to wait before answering (a hanging upstream); cut short when the simulator stops.
    delay: float = 0.0


def json_reply(status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> Reply:
    data = json.dumps(obj).encode("utf-8")
    h = {"Content-Type": "application/json; charset=utf-8"}
    h.update(headers or {})
    return Reply(status=status, body=data, length=len(data), headers=h)


def text_reply(status: int, text: str, content_type: str = "text/html; charset=utf-8") -> Reply:
    data = text.encode("utf-8")
    return Reply(status=status, body=data, length=len(data), headers={"Content-Type": content_type})


def _body_chunks(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """The request body in chunks, for Content-Length and chunked transfer encoding alike."""
    rfile = handler.rfile
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        while True:
            size_line = rfile.readline(1024)
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            left = size
            while left:
                chunk = rfile.read(min(READ_CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
            rfile.readline(1024)
        return
    left = int(handler.headers.get("Content-Length") or 0)
    while left > 0:
        chunk = rfile.read(min(READ_CHUNK, left))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def _read_multipart(rec: Recorded, chunks: Iterator[bytes], boundary: str) -> None:
    """Parse a multipart body as it streams in: keep text fields, count file bytes."""
    segment: Optional[MultipartSegment] = None
    kept = bytearray()
    size = 0
    with PushMultipartParser(boundary) as parser:
        for chunk in chunks:
            rec.body_size += len(chunk)
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    segment, kept, size = event, bytearray(), 0
                elif event is None and segment is not None:
                    if segment.filename is None:
                        rec.form[segment.name] = kept.decode("utf-8", "replace")
                    else:
                        rec.files[segment.name] = (segment.filename, size)
                    segment = None
                elif event:
                    size += len(event)
                    if segment is not None and segment.filename is None and len(kept) < MAX_KEPT_FIELD:
                        kept += event


def read_request(handler: BaseHTTPRequestHandler) -> Recorded:
    """Consume the whole body (so keep-alive stays in step) and record what it held."""
    # The raw target: http.server collapses a leading "//", which would hide a client's join bug.
    words = handler.requestline.split()
    target = words[1] if len(words) >= 2 else handler.path
    path, _, query = target.partition("?")
    headers = Headers((k.lower(), v) for k, v in handler.headers.items())
    rec = Recorded(method=handler.command, path=unquote(path), query=dict(parse_qsl(query, keep_blank_values=True)),
                   headers=headers, at=time.time())
    ctype = headers.get("content-type") or ""
    chunks = _body_chunks(handler)
    try:
        if ctype.startswith("multipart/form-data"):
            boundary = dict(p.strip().split("=", 1) for p in ctype.split(";")[1:] if "=" in p).get("boundary", "")
            _read_multipart(rec, chunks, boundary.strip('"'))
            return rec
        kept = bytearray()
        for chunk in chunks:
            rec.body_size += len(chunk)
            if len(kept) < MAX_KEPT_BODY:
                kept += chunk
        if not kept:
            pass
        elif ctype.startswith("application/x-www-form-urlencoded"):
            rec.form = dict(parse_qsl(kept.decode("utf-8"), keep_blank_values=True))
        elif "json" in ctype or kept.lstrip()[:1] in (b"{", b"["):
            rec.json = json.loads(kept.decode("utf-8"))
    except Exception as exc:  # a broken body is recorded, answered 400, and the connection closed
        rec.body_error = f"{type(exc).__name__}: {exc}"
        for _ in chunks:
            pass
    return rec


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the server's `dispatch` and writes the Reply it returns."""

    protocol_version = "HTTP/1.1"
    # The headers and the body go out in separate writes: with Nagle's algorithm on, the body waits
    # for the client's delayed ACK of the headers, 40 ms on Linux, on every keep-alive request.
    # A real server does not stall so; neither may the simulator the benchmarks time.
    disable_nagle_algorithm = True
    server: "SimHTTPServer"

    def _serve(self) -> None:
        try:
            rec = read_request(self)
        except (ConnectionError, socket.timeout, ValueError):
            self.close_connection = True
            return
        reply = self.server.dispatch(rec)
        rec.status = reply.status if reply.action != "reset" else None
        if reply.delay:
            self.server.stopping.wait(reply.delay)
        if reply.action == "reset":
            # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            if reply.length is not None:
                self.send_header("Content-Length", str(reply.length))
            else:
                self.close_connection = True
            if rec.body_error:
                self.close_connection = True
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                body = reply.body
                for chunk in ([body] if isinstance(body, (bytes, bytearray)) else body):
                    self.wfile.write(chunk)
            self.wfile.flush()
        except OSError:  # the client went away, or stop() cut the connection
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # the simulator records requests; stderr noise would drown test output


class SimHTTPServer(ThreadingHTTPServer):
    """A threaded server whose handlers call `dispatch(recorded) -> Reply`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], dispatch: Callable[[Recorded], Reply], stopping: Any) -> None:
        super().__init__(address, _Handler)
        self.dispatch = dispatch
        self.stopping = stopping
        self._open: Set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open keep-alive connection, so a stopped simulator answers nobody."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
