"""What a poll's messages say, journaled, and the conclusion (completed, failed) the journal then supports."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from libtv_fsm import events as ev
from libtv_fsm.machine import CREATED, POLLING, SUBMITTED
from libtv_fsm.replay import Session
from libtv_fsm.results import is_complete, read_batch

# States in which the session still waits on upstream.
WAITING = (SUBMITTED, POLLING)


def observe(store: Any, session_id: str, messages: Sequence[Any], prefixes: Sequence[str], source: str,
            always: bool = True) -> Session:
    """Journal what a poll's messages say (results, failure, progress) and any conclusion they allow.

    ``always`` records even a poll that brought nothing new (the waiter's quiet polls count);
    ``query-session`` records only news.
    """
    def poll_event(session: Session) -> List[ev.Event]:
        if session.state == CREATED:
            return []
        fresh = [m for m in messages if m.seq > session.last_seq]
        if not fresh and not always:
            return []
        batch = read_batch(fresh, max(session.last_seq, session.after_seq), prefixes)
        return [ev.PollAnswered(
            at=ev.now(), after_seq=session.last_seq, last_seq=batch.last_seq, new_messages=len(fresh),
            urls=batch.urls, last_result_seq=batch.last_result_seq, last_assistant_seq=batch.last_assistant_seq,
            failure=batch.failure, source=source,
        )]

    store.record_with(session_id, poll_event)
    return settle(store, session_id)


def conclusion(session: Session) -> Optional[ev.Event]:
    """The event the session's own facts call for while it waits: failed, completed, or none yet."""
    if session.state not in WAITING:
        return None
    if session.reported_failure:
        return ev.Failed(at=ev.now(), reason=session.reported_failure)
    if is_complete(bool(session.result_urls), session.last_result_seq, session.last_assistant_seq, session.quiet_polls):
        return ev.Completed(at=ev.now(), urls=tuple(session.result_urls))
    return None


def settle(store: Any, session_id: str) -> Session:
    """Record the conclusion the journal already supports (idempotent; safe after a crash)."""
    def decide(session: Session) -> List[ev.Event]:
        event = conclusion(session)
        return [event] if event is not None else []

    return store.record_with(session_id, decide)
