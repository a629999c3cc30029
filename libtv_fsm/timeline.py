"""Plain-JSON views of sessions and their events, for `history`, `recover` and the read model."""
from __future__ import annotations

from typing import Any, Dict, Optional

from libtv_fsm import events as ev
from libtv_fsm.replay import Entry, Session


def _time(value: Any) -> Optional[str]:
    return ev.format_time(value) if value is not None else None


def event_view(entry: Entry) -> Dict[str, Any]:
    """One timeline event: ``type``, ``at`` (ISO 8601 UTC), ``seq``, its fields; ``ignored`` if replay skipped it."""
    event = entry.event
    if isinstance(event, ev.UnknownEvent):
        view = {k: v for k, v in event.raw.items() if k != "seq"}
        view["type"] = event.type
    else:
        view = ev.to_record(event)
    view["seq"] = entry.seq
    view.setdefault("at", None)
    if not entry.applied:
        view["ignored"] = entry.note
    return view


def delivery_view(session: Session) -> Dict[str, str]:
    d = session.delivery
    return {"channel": d.channel, "chat_id": d.chat_id} if d else {}


def session_view(session: Session) -> Dict[str, Any]:
    """The fields every listing of a session shares (CONTRACT section 4, `recover --json`)."""
    view: Dict[str, Any] = {
        "session_id": session.session_id,
        "state": session.state,
        "project_uuid": session.project_uuid,
        "project_url": session.project_url,
        "submitted_text": session.submitted_text,
        "result_urls": list(session.result_urls),
        "delivery": delivery_view(session),
        "auth_mode": session.auth_mode,
        "turn": session.turn,
        "created_at": _time(session.created_at),
        "updated_at": _time(session.updated_at),
        "completed_at": _time(session.completed_at),
        "delivered_at": _time(session.delivered_at),
        "delivered_urls": sorted(u for u in session.delivered if u in session.result_urls),
    }
    if session.failure_message is not None:
        view["failure_message"] = session.failure_message
    if session.uncertain_urls:
        view["uncertain_urls"] = session.uncertain_urls
    if session.skipped_lines:
        view["skipped_lines"] = session.skipped_lines
        view["journal_problems"] = list(session.journal_problems)
    return view
