"""LibTV upstreams: the Nexu gateway (/api/v1, /libtv/v1) and the direct OpenAPI (/openapi)."""
from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from libtv_fsm.sim.faults import error_body, fault_reply
from libtv_fsm.sim.server import Recorded, Reply, json_reply

if TYPE_CHECKING:
    from libtv_fsm.sim.sessions import SimSession
    from libtv_fsm.sim.simulator import Simulator

GATEWAY_PREFIX = "mgk_"
DIRECT_PREFIX = "sk-libtv-"
CANVAS = "https://www.liblib.tv/canvas?projectId="

_SESSION_PATH = re.compile(r"^/(?:libtv/v1|openapi)/session/([^/]+)(/results)?$")

# key error -> (gateway status, gateway code, direct status, direct code, message)
_KEY_ERRORS: Dict[str, Tuple[int, str, int, int, str]] = {
    "invalid": (401, "invalid_api_key", 200, 40100, "Invalid API Key"),
    "exhausted": (403, "trial_exhausted", 200, 40310, "Free trial uses exhausted"),
    "expired": (403, "key_expired", 200, 40311, "Key expired"),
    # 503 on both: an outage is transient, never a permanent business error.
    "unavailable": (503, "service_unavailable", 503, 50300, "Service temporarily unavailable"),
}


def _error(style: str, status: int, message: str, code: Any = None) -> Reply:
    return json_reply(status, error_body(style, status, message, code))


def _key_error(style: str, error: str) -> Reply:
    g_status, g_code, d_status, d_code, message = _KEY_ERRORS[error]
    if style == "direct":
        return _error(style, d_status, message, d_code)
    return _error(style, g_status, message, g_code)


def _ok(style: str, data: Any) -> Reply:
    if style == "direct":
        return json_reply(200, {"code": 0, "message": "success", "data": data})
    return json_reply(200, data)


def _authorize(sim: "Simulator", rec: Recorded, style: str) -> Tuple[Optional[str], Optional[Reply]]:
    """The caller's key, or the error reply; a key of the other mode is refused like a bad one."""
    if style == "gateway":
        key = rec.headers.get("x-api-key") or ""
        good = key.startswith(GATEWAY_PREFIX)
    else:
        auth = rec.headers.get("authorization") or ""
        key = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        if not key and rec.path == "/openapi/upload":
            key = rec.form.get("accessKey", "")  # the older deployment takes the key as a field
        good = key.startswith(DIRECT_PREFIX)
    if not good:
        if style == "direct":
            return None, _error(style, 401, "Invalid API Key", 40100)
        return None, _error(style, 401, "Invalid API Key", "invalid_api_key")
    state = sim.key_state(key)
    if state.error:
        return None, _key_error(style, state.error)
    return key, None


def gateway(sim: "Simulator", rec: Recorded) -> Reply:
    """Every /api/v1 and /libtv/v1 route of the Nexu gateway."""
    return _handle(sim, rec, "gateway")


def direct(sim: "Simulator", rec: Recorded) -> Reply:
    """Every /openapi route of the direct LibTV OpenAPI."""
    if rec.path == "/openapi/file/upload" and sim.direct_legacy_upload:
        # An older deployment: Spring's stock 404, before any auth check.
        return json_reply(404, {"timestamp": "2025-01-01T00:00:00.000+00:00", "status": 404,
                                "error": "Not Found", "path": rec.path})
    if rec.path == "/openapi/upload" and not sim.direct_legacy_upload:
        return json_reply(404, {"status": 404, "error": "Not Found", "path": rec.path})
    return _handle(sim, rec, "direct")


def _handle(sim: "Simulator", rec: Recorded, style: str) -> Reply:
    key, denied = _authorize(sim, rec, style)
    if denied is not None:
        return denied
    assert key is not None
    if rec.body_error:
        return _error(style, 400, "Invalid request body", 40000 if style == "direct" else "bad_request")
    path, method = rec.path, rec.method
    base = "/libtv/v1" if style == "gateway" else "/openapi"
    if style == "gateway" and path == "/api/v1/key/status" and method == "GET":
        return _key_status(sim, key)
    if style == "gateway" and path == "/api/v1/tasks" and method == "GET":
        with sim.lock:
            tasks = [s.task() for s in sorted(sim.sessions.values(), key=lambda s: -s.created_at) if s.key == key]
        return _ok(style, {"tasks": tasks})
    if path in ("/libtv/v1/upload", "/openapi/file/upload", "/openapi/upload") and method == "POST":
        return _upload(sim, rec, style)
    if path == f"{base}/session/change-project" and method == "POST":
        with sim.lock:
            project = sim.project_for(key, renew=True)
        return _ok(style, {"projectUuid": project})
    if path == f"{base}/session" and method == "POST":
        return _create(sim, rec, style, key)
    m = _SESSION_PATH.match(path)
    # Only the gateway has a results view.
    if m and method == "GET" and path.startswith(base) and not (m.group(2) and style == "direct"):
        return _poll(sim, rec, style, m.group(1), bool(m.group(2)))
    return _error(style, 404, "Not found", 40400 if style == "direct" else "not_found")


def _key_status(sim: "Simulator", key: str) -> Reply:
    state = sim.key_state(key)
    return json_reply(200, {"remaining_uses": state.remaining_uses, "max_uses": state.max_uses,
                            "expires_at": state.expires_at})


def _create(sim: "Simulator", rec: Recorded, style: str, key: str) -> Reply:
    body = rec.json if rec.json is not None else {}
    if not isinstance(body, dict):
        return _error(style, 400, "Request body must be a JSON object", 40000 if style == "direct" else "bad_request")
    message, session_id = body.get("message"), body.get("sessionId")
    if (message is not None and not isinstance(message, str)) or (session_id is not None and not isinstance(session_id, str)):
        return _error(style, 400, "message and sessionId must be strings", 40000 if style == "direct" else "bad_request")
    with sim.lock:
        existing = sim.sessions.get(session_id) if session_id else None
        if session_id and existing is None:
            return _not_found(style)
        if message and style == "gateway":
            # Each generation costs one of the key's uses; the gateway counts, the direct API does not.
            state = sim.key_state(key)
            if state.remaining_uses <= 0:
                return _key_error(style, "exhausted")
            state.remaining_uses -= 1
        if existing is not None:
            session = existing
            if message:
                sim.add_turn(session, message)
        else:
            session = sim.new_session(key, message)
        data = {"sessionId": session.id, "projectUuid": session.project_uuid}
    if style == "gateway":
        data["projectUrl"] = CANVAS + session.project_uuid
    return _ok(style, data)


def _not_found(style: str) -> Reply:
    return _error(style, 404, "Session not found", 40400 if style == "direct" else "session_not_found")


def _poll(sim: "Simulator", rec: Recorded, style: str, session_id: str, results: bool) -> Reply:
    after: Optional[int] = None
    raw = rec.query.get("afterSeq")
    if raw not in (None, ""):
        try:
            after = int(raw)
        except ValueError:
            return _error(style, 400, "afterSeq must be an integer", 40000 if style == "direct" else "bad_request")
    with sim.lock:
        session: Optional["SimSession"] = sim.sessions.get(session_id)
        if session is None:
            return _not_found(style)
        if results:
            # Read-only: the results view never advances the generation.
            return _ok(style, {"urls": session.published_urls()})
        fault = session.poll(sim.clock())
        turn = session.turns[-1] if session.turns else None
        if fault and fault != "hang":
            return fault_reply(fault, style, turn.polls - 1 if turn else 0)
        reply = _ok(style, {"messages": session.after(after)})
        if fault == "hang" and turn is not None:
            reply.delay = turn.scenario.hang_seconds
        return reply


def _upload(sim: "Simulator", rec: Recorded, style: str) -> Reply:
    if "file" not in rec.files:
        return _error(style, 400, "Missing file field", 40000 if style == "direct" else "bad_request")
    filename, size = rec.files["file"]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", filename or "upload.bin")[-80:] or "upload.bin"
    with sim.lock:
        url = sim.publish(f"uploads/{uuid.uuid4().hex[:16]}/{name}", size)
        sim.uploads.append({"route": rec.path, "url": url, "filename": filename, "size": size,
                            "form": dict(rec.form)})
    return _ok(style, {"url": url})
