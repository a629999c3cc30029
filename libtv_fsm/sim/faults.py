"""The broken answers an upstream can give, shaped for the route that gives them."""
from __future__ import annotations

from typing import Any, List

from libtv_fsm.sim.server import Reply, json_reply, text_reply

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


def fault_reply(fault: str, style: str, n: int = 0) -> Reply:
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
    raise ValueError(f"unknown fault {fault!r}")
