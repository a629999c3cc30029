"""Submitting a request: relay the user's words upstream, journal the submission, return at once."""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Tuple

import attr

from libtv_fsm import events as ev
from libtv_fsm.errors import ConfigError, InputError
from libtv_fsm.ids import validate_session_id
from libtv_fsm.machine import POLLING, SUBMITTED


@attr.frozen
class Target:
    """Where the result will go, as captured at submit time, and whether it can actually get there."""

    channel: str = ""
    chat_id: str = ""
    problem: str = ""

    @property
    def deliverable(self) -> bool:
        return bool(self.channel and self.chat_id and not self.problem)

    @property
    def delivery(self) -> Optional[ev.Delivery]:
        return ev.Delivery(self.channel, self.chat_id) if self.channel and self.chat_id else None


def _context_chat_id(env: Mapping[str, str]) -> str:
    raw = env.get("OPENCLAW_CHANNEL_CONTEXT", "")
    if not raw:
        return ""
    try:
        chat = json.loads(raw).get("chat") or {}
        value = chat.get("id")
    except (ValueError, AttributeError):
        return ""
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""


def resolve_target(channel: Optional[str], chat_id: Optional[str], env: Mapping[str, str], http: Any = None) -> Target:
    """The delivery target: flags first, then OPENCLAW_CHANNEL_TYPE / OPENCLAW_CHAT_ID (CONTRACT section 4).

    An unknown channel or a malformed chat id is refused (InputError); missing credentials
    keep the target but make it not deliverable, with the reason.
    """
    name = (channel or env.get("OPENCLAW_CHANNEL_TYPE") or "").strip()
    chat = (chat_id or env.get("OPENCLAW_CHAT_ID") or _context_chat_id(env) or "").strip()
    if not name:
        return Target(chat_id="", problem="no chat channel was given" if not chat else "a chat id was given without --channel")
    from libtv_fsm.channels import get_channel

    ch = get_channel(name, env, session=http)
    if not chat:
        return Target(channel=name.lower(), problem=f"no chat id was given for {name}")
    target = ch.normalize_target(chat)
    try:
        ch.check_ready()
    except ConfigError as err:
        return Target(channel=name.lower(), chat_id=target, problem=str(err))
    return Target(channel=name.lower(), chat_id=target)


def submission_point(backend: Any, session_id: str) -> int:
    """The highest message seq upstream before our message: later messages belong to the new turn."""
    messages = backend.query_session(session_id)
    return max((m.seq for m in messages), default=0)


def submit(store: Any, backend: Any, text: str, relayed: str, *, session_id: Optional[str], target: Target) -> Tuple[Any, ev.Submitted]:
    """Create (or continue) the session upstream and journal it; returns (session, event)."""
    after_seq = 0
    if session_id:
        validate_session_id(session_id)
        local = store.replay(session_id)
        if local.state in (SUBMITTED, POLLING):
            raise InputError(f"Session {session_id} is still generating; wait for its result or start a new session")
        after_seq = max(local.last_seq, submission_point(backend, session_id))
    created = backend.create_session(relayed, session_id)
    event = ev.Submitted(
        at=ev.now(), project_uuid=created.project_uuid, project_url=created.project_url, text=text, message=relayed,
        auth_mode=backend.auth_mode, after_seq=after_seq if created.session_id == session_id else 0,
        delivery=target.delivery, continued=bool(session_id),
    )
    session = store.record(created.session_id, event)
    return session, event


def note_for(session_id: str, target: Target, waiter: bool) -> str:
    """What the agent should tell the user (the `note` of create-session)."""
    if target.deliverable and waiter:
        return (f"Generation started (session {session_id}). It usually takes a few minutes; the result will be "
                f"sent to this chat automatically when it is ready. No need to wait or check.")
    reason = target.problem or "the background waiter is disabled"
    return (f"Generation started (session {session_id}), but it will not be sent to the chat automatically: {reason}. "
            f"Ask me later to check session {session_id} (query-session / download-results).")


def summary(session: Any, target: Target, note: str) -> Dict[str, Any]:
    """The one JSON line create-session prints."""
    return {
        "status": "submitted",
        "sessionId": session.session_id,
        "projectUuid": session.project_uuid,
        "projectUrl": session.project_url,
        "channel": target.channel,
        "deliverable": target.deliverable,
        "note": note,
    }
