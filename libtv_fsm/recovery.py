"""recover: every known session from the journals; unfinished ones re-checked upstream; lost waiters respawned."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional

from libtv_fsm.errors import LibtvError
from libtv_fsm.machine import COMPLETED, FAILED, POLLING, SUBMITTED, TIMEOUT
from libtv_fsm.replay import Session
from libtv_fsm.timeline import session_view

RECHECK = (SUBMITTED, POLLING, TIMEOUT)


def needs_waiter(session: Session) -> bool:
    """Unfinished, or finished upstream but not yet told to the chat."""
    if session.state in RECHECK:
        return True
    if session.delivery is None:
        return False
    if session.state == COMPLETED:
        return True
    return session.state == FAILED and "failed" not in session.notices


def waiter_running(store: Any, session_id: str) -> bool:
    claim = store.journal.claim_waiter(session_id)
    if claim.held:
        claim.release()
        return False
    return True


def recover(store: Any, env: Mapping[str, str], backend: Optional[Any], spawn: Optional[Callable[[str], int]],
            log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """One entry per session (CONTRACT `recover --json`), newest first; side effects as the docstring above."""
    from libtv_fsm.results import result_prefixes
    from libtv_fsm.waiter import observe

    prefixes = result_prefixes(env.get("LIBTV_EXTRA_RESULT_PREFIXES"))
    report = []
    for session in store.sessions():
        sid = session.session_id
        if session.state in RECHECK and backend is not None and not waiter_running(store, sid):
            try:
                messages = backend.query_session(sid, after_seq=session.last_seq)
                session = observe(store, sid, messages, prefixes, "recover", always=False)
            except LibtvError as err:
                log(f"{sid}: could not re-check upstream: {err}")
        if waiter_running(store, sid):
            waiter = "running"
        elif needs_waiter(session) and spawn is not None:
            spawn(sid)
            waiter = "started"
        else:
            waiter = "none"
        view = session_view(session)
        view["waiter"] = waiter
        report.append(view)
    return report
