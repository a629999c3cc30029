"""The broken answers an upstream can give, shaped for the route that gives them."""
from __future__ import annotations

import time
from typing import Any, Iterator, List, Optional

from libtv_fsm.sim.server import Reply, json_reply, text_reply

# Every fault a request (inject) or a scenario's poll can answer with. "hang" delays a normal reply.
FAULTS = frozenset({
    "500", "502", "503", "429", "reset", "html", "hang", "malformed", "forbidden",
    # hostile upstreams (issue 5)
    "html502", "empty", "huge", "wrong_types", "path_id", "redirect", "slowloris", "echo",
})
# Where a "redirect" fault points when the simulator names no place: off-host, unroutable.
OFF_HOST = "http://evil.invalid/steal"
HUGE_BYTES = 20 * 1024 * 1024
SLOWLORIS_BYTES = 4096
SLOWLORIS_GAP = 0.2

_HTML = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"

# Poll bodies of the wrong shape, taken in turn: none of them is {"messages": [ {..}, ... ]}.
_MALFORMED_GATEWAY: List[Any] = [
    {"messages": "not a list"},
    {"messages": [1, "two", None]},
    ["messages", "as", "a", "list"],
    {"msgs": []},
]
_MALFORMED_DIRECT: List[Any] = [
    {"code": 0, "message": "success", "data": {"messages": "not a list"}},
    {"code": 0, "message": "success", "data": None},
    {"code": 0, "message": "success", "data": {"messages": [{"seq": "x"}, 3]}},
    {"code": "zero", "data": []},
]


def error_body(style: str, status: int, message: str, code: Any = None) -> Any:
    """An error body in the route's own shape."""
    if style == "direct":
        return {"code": code if code is not None else status, "message": message, "data": None}
    if style == "feishu":
        return {"code": code if code is not None else status, "msg": message}
    return {"error": {"code": code if code is not None else status, "user_message": message}}


def _code(style: str, status: int, name: str) -> Any:
    """Each upstream's kind of error code: numbers for the direct API and Feishu, words for the gateway."""
    return status * 100 if style == "direct" else status if style == "feishu" else name


def _wrong_types(style: str) -> Any:
    # Every field a client reads is present, none has the type it should.
    doc = {"sessionId": 12345, "projectUuid": ["p"], "projectUrl": 7, "messages": {"seq": 1},
           "urls": "https://libtv-res.liblib.art/claw/x.mp4", "url": 42, "remaining_uses": "10",
           "max_uses": None, "tasks": {"id": 1}, "tenant_access_token": 99, "expire": "soon",
           "data": {"file_key": 1, "image_key": None, "message_id": []}}
    if style == "direct":
        return {"code": 0, "message": "success", "data": doc}
    if style == "feishu":
        return {"code": 0, "msg": "ok", **doc}
    return doc


def _path_id(style: str) -> Any:
    # Ids that would climb out of a folder or into another URL path if used as they are.
    doc = {"sessionId": "../../../tmp/libtv-escape", "projectUuid": "..\\..\\evil", "projectUrl": "https://www.liblib.tv/x",
           "messages": [{"id": "../m", "seq": 1, "role": "tool", "content": "{}"}], "url": "file:///etc/passwd",
           "urls": ["https://libtv-res.liblib.art/claw/../../etc/passwd.mp4"]}
    return {"code": 0, "message": "success", "data": doc} if style == "direct" else doc


def _huge() -> Iterator[bytes]:
    yield b'{"messages": [], "padding": "'
    block = b"x" * 65536
    for _ in range(HUGE_BYTES // len(block)):
        yield block
    yield b'"}'


def _trickle(size: int, gap: float) -> Iterator[bytes]:
    # One byte at a time, each well inside any per-read timeout: only a total deadline ends it.
    for _ in range(size):
        time.sleep(gap)
        yield b" "


def _echo(request: Any) -> str:
    # A careless upstream that repeats the credentials it was sent in its error text.
    if request is None:
        return "bad request"
    headers = request.headers
    body = request.json if isinstance(request.json, dict) else {}
    return (f"bad request from key {headers.get('x-api-key')} auth {headers.get('authorization')} "
            f"app {body.get('app_id')} secret {body.get('app_secret')} form {dict(request.form)}")


def fault_reply(fault: str, style: str, n: int = 0, redirect_to: Optional[str] = None, request: Any = None) -> Reply:
    """The reply for one fault name ("hang" is not here: it delays a normal reply)."""
    if fault == "reset":
        return Reply(action="reset")
    if fault == "html":
        # 200 with a proxy's error page: not JSON, so transient.
        return text_reply(200, _HTML)
    if fault == "malformed":
        variants = _MALFORMED_DIRECT if style == "direct" else _MALFORMED_GATEWAY
        return json_reply(200, variants[n % len(variants)])
    if fault == "forbidden":
        if style == "direct":
            # The direct API answers business errors with HTTP 200 and a non-zero code.
            return json_reply(200, error_body(style, 403, "Forbidden", 40300))
        return json_reply(403, error_body(style, 403, "Forbidden", _code(style, 403, "forbidden")))
    if fault == "429":
        return json_reply(429, error_body(style, 429, "Too many requests, slow down", _code(style, 429, "rate_limited")),
                          headers={"Retry-After": "1"})
    if fault in ("500", "502", "503"):
        status = int(fault)
        return json_reply(status, error_body(style, status, "Service temporarily unavailable",
                                             _code(style, status, "upstream_error")))
    if fault == "html502":
        return text_reply(502, _HTML)
    if fault == "empty":
        return Reply(status=200, body=b"", length=0, headers={"Content-Type": "application/json"})
    if fault == "huge":
        return Reply(status=200, body=_huge(), length=None, headers={"Content-Type": "application/json"})
    if fault == "wrong_types":
        return json_reply(200, _wrong_types(style))
    if fault == "path_id":
        return json_reply(200, _path_id(style))
    if fault == "redirect":
        return Reply(status=302, body=b"", length=0, headers={"Location": redirect_to or OFF_HOST})
    if fault == "echo":
        code = 40000 if style == "direct" else 230001 if style == "feishu" else "bad_request"
        return json_reply(400, error_body(style, 400, _echo(request), code))
    if fault == "slowloris":
        return Reply(status=200, body=_trickle(SLOWLORIS_BYTES, SLOWLORIS_GAP), length=SLOWLORIS_BYTES,
                     headers={"Content-Type": "application/json"})
    raise ValueError(f"unknown fault {fault!r}")
