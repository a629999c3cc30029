"""Submitting a request: relay the user's words upstream, journal the submission, return at once."""
from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Tuple

import attr

from libtv_fsm import events as ev
from libtv_fsm.errors import ConfigError, InputError, JournalError, LibtvError, TransientError
from libtv_fsm.ids import validate_session_id
from libtv_fsm.machine import POLLING, SUBMITTED


@attr.frozen
class Target:
    """Where the result will go, as captured at submit time, and what stands in the way right now."""

    channel: str = ""
    chat_id: str = ""
    problem: str = ""

    @property
    def deliverable(self) -> bool:
        # CONTRACT 4: a channel and a chat id were captured. Missing credentials do not count:
        # the waiter reads them again when the result is ready, so they can be fixed meanwhile.
        return bool(self.channel and self.chat_id)

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
    keep the target deliverable and are named in ``problem`` (the note tells the user).
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


def intent_record(text: str, relayed: str, auth_mode: str, session_id: Optional[str], after_seq: int,
                  target: Target) -> Dict[str, Any]:
    """What a submit intent holds: enough to write the Submitted event without the process that began it."""
    delivery = target.delivery
    return {
        "at": ev.format_time(ev.now()), "text": text, "message": relayed, "auth_mode": auth_mode,
        "session_id": session_id, "after_seq": after_seq,
        "delivery": {"channel": delivery.channel, "chat_id": delivery.chat_id} if delivery else None,
    }


def submitted_event(record: Mapping[str, Any], session_id: str, project_uuid: str, project_url: str,
                    at: Optional[Any] = None) -> ev.Submitted:
    """The Submitted event of an intent whose request LibTV accepted as ``session_id``."""
    requested = record.get("session_id") or None
    delivery = record.get("delivery")
    target = (ev.Delivery(str(delivery["channel"]), str(delivery["chat_id"]))
              if isinstance(delivery, dict) and delivery.get("channel") and delivery.get("chat_id") else None)
    return ev.Submitted(
        at=at or ev.now(), project_uuid=project_uuid, project_url=project_url, text=str(record.get("text") or ""),
        message=str(record.get("message") or ""), auth_mode=str(record.get("auth_mode") or ""),
        after_seq=int(record.get("after_seq") or 0) if session_id == requested else 0,
        delivery=target, continued=bool(requested),
    )


def submit(store: Any, backend: Any, text: str, relayed: str, *, session_id: Optional[str], target: Target) -> Tuple[Any, ev.Submitted]:
    """Create (or continue) the session upstream and journal it; returns (session, event).

    The request is written down (a submit intent) before it is sent, and the session id as soon
    as LibTV answers, so a crash or a lost answer leaves something `recover` can finish.
    """
    after_seq = 0
    if session_id:
        validate_session_id(session_id)
        local = store.replay(session_id)
        if local.state in (SUBMITTED, POLLING):
            raise InputError(f"Session {session_id} is still generating; wait for its result or start a new session")
        after_seq = max(local.last_seq, submission_point(backend, session_id))
    record = intent_record(text, relayed, backend.auth_mode, session_id, after_seq, target)
    intents = store.journal.intents() if hasattr(store.journal, "intents") else None
    intent = None
    if intents is not None:
        try:
            intent = intents.begin(record)
        except JournalError as err:
            raise JournalError(f"{err}; nothing was sent to LibTV") from None
    try:
        created = backend.create_session(relayed, session_id)
    except TransientError as err:
        # The answer was lost, not necessarily the request: LibTV may be generating already.
        if intent is not None:
            intent.release()
            err.message = f"{err.message} (if LibTV got the request, `recover` will find the session and deliver it)"
            err.args = (err.message,)
        raise
    except LibtvError:
        if intent is not None:
            intent.finish()  # a definite no: nothing upstream to find
        raise
    except BaseException:
        if intent is not None:
            intent.release()  # interrupted mid-call: leave it for recover
        raise
    if intent is not None:
        try:
            intent.update(created={"session_id": created.session_id, "project_uuid": created.project_uuid,
                                   "project_url": created.project_url})
        except JournalError:
            pass  # recover can still find it upstream by its words; the journal write below matters more
    event = submitted_event(record, created.session_id, created.project_uuid, created.project_url)
    try:
        session = store.record(created.session_id, event)
    except JournalError as err:
        if intent is not None:
            intent.release()
        raise JournalError(f"{err}. LibTV accepted the request as session {created.session_id}; "
                           f"run `recover` when the journal can be written again to pick it up") from None
    if intent is not None:
        try:
            intent.finish()
        except JournalError:
            intent.release()  # recover will see the journal already has it
    return session, event


def note_for(session_id: str, target: Target, waiter: bool) -> str:
    """What the agent should tell the user (the `note` of create-session)."""
    started = f"Generation started (session {session_id})"
    later = f"me later to check session {session_id} (query-session / download-results)."
    if not target.deliverable:
        reason = target.problem or "no chat to deliver to was given"
        return f"{started}, but it will not be sent to the chat automatically: {reason}. Ask {later}"
    if not waiter:
        also = f"; also, {target.problem}" if target.problem else ""
        return (f"{started}, but it will not be sent to the chat automatically: the background waiter is "
                f"disabled{also}. Ask {later}")
    if target.problem:
        # Still deliverable: the waiter reads the credentials again when the result is ready.
        return (f"{started}. It usually takes a few minutes. The result is to be sent to this chat, but right now "
                f"it could not be: {target.problem}. Fix that before the result is ready and it will arrive by "
                f"itself; otherwise ask {later}")
    return (f"{started}. It usually takes a few minutes; the result will be sent to this chat automatically "
            f"when it is ready. No need to wait or check.")


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
