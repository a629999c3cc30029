"""recover: every known session from the journals; unfinished ones re-checked upstream; lost waiters respawned."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from libtv_fsm.errors import LibtvError
from libtv_fsm.machine import COMPLETED, FAILED, POLLING, SUBMITTED, TIMEOUT
from libtv_fsm.timeline import session_view

RECHECK = (SUBMITTED, POLLING, TIMEOUT)


def needs_waiter(session: Any) -> bool:
    """Unfinished, or finished upstream but not yet told to the chat (a Session or a snapshot Summary)."""
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
            log: Callable[[str], None], waited: Optional[Callable[[str], bool]] = None) -> List[Dict[str, Any]]:
    """One entry per session (CONTRACT `recover --json`), newest first; side effects as the docstring above.

    ``waited``: whether something other than a claimed waiter is waiting on the session (a queued job).
    """
    from libtv_fsm.results import result_prefixes
    from libtv_fsm.waiter import observe

    prefixes = result_prefixes(env.get("LIBTV_EXTRA_RESULT_PREFIXES"))
    claimed = _running_check(store)

    def running(sid: str) -> bool:
        return claimed(sid) or (waited is not None and waited(sid))

    report = []
    # Summaries, not replays: a session whose journal did not change comes from the snapshot index.
    rows = store.summaries()
    # Where nothing is decided on it (a session that needs no waiter), "is a waiter running?" is only
    # reported: a database answers that for every session at once.
    bulk = getattr(store.journal, "waiters_held", None)
    held = bulk([r.session_id for r in rows if not needs_waiter(r)]) if bulk is not None else None
    for row in rows:
        sid = row.session_id
        if held is not None and not needs_waiter(row):
            report.append(dict(row.view(), waiter="running" if sid in held else "none"))
            continue
        session: Any = row
        view: Optional[Dict[str, Any]] = None
        if row.state in RECHECK and backend is not None and not running(sid):
            try:
                session = store.replay(sid)
                messages = backend.query_session(sid, after_seq=session.last_seq)
                session = observe(store, sid, messages, prefixes, "recover", always=False)
            except LibtvError as err:
                log(f"{sid}: could not re-check upstream: {err}")
            view = session_view(session)
        if running(sid):
            waiter = "running"
        elif needs_waiter(session) and spawn is not None:
            spawn(sid)
            waiter = "started"
        else:
            waiter = "none"
        view = view if view is not None else row.view()
        view["waiter"] = waiter
        report.append(view)
    return report


def _running_check(store: Any) -> Callable[[str], bool]:
    """Whether a session's waiter runs, asked at the moment of deciding: a bare flock probe when the journal is JSONL files."""
    import os

    from libtv_fsm.runlocks import probe_one
    from libtv_fsm.snapshots import JOURNAL_DIR

    home = store.snapshots_home() if hasattr(store, "snapshots_home") else None
    probe = probe_one(os.path.join(home, JOURNAL_DIR)) if home is not None else None
    if probe is None:
        probe = getattr(store.journal, "waiter_held", None)  # PostgreSQL: a look at pg_locks, no new connection
    return probe if probe is not None else (lambda sid: waiter_running(store, sid))


# -- submits whose create-session died ---------------------------------------------------------

# A task created this long before its intent was written still counts (clocks differ).
CLOCK_SKEW_SECONDS = 600.0
# At most this many unknown upstream sessions are opened to look for one intent's words.
MAX_CANDIDATES = 20


def resolve_submits(store: Any, backend: Optional[Any], log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """Finish every submit intent whose create-session is gone; one report entry per intent handled.

    ``status`` is ``recovered`` (the session is journaled now; the normal recover pass gives it a
    waiter), ``closed`` (it cannot be finished; ``reason`` says why, and the record is kept), or
    ``open`` (not decided yet, e.g. upstream could not be asked; tried again next time).
    """
    intents = store.journal.intents() if hasattr(store.journal, "intents") else None
    if intents is None:
        return []
    report = []
    matched: Set[str] = set()
    for intent in intents.orphans():
        record = intent.record
        entry: Dict[str, Any] = {"intent": intent.id, "at": record.get("at"),
                                 "submitted_text": str(record.get("text") or "")[:80]}
        try:
            sid, reason = _resolve(store, backend, record, matched)
        except LibtvError as err:
            sid, reason = None, f"could not check with LibTV: {err}"
            entry.update(status="open", reason=reason)
            intent.release()
            log(f"submit {intent.id}: {reason}")
            report.append(entry)
            continue
        if sid is not None:
            entry.update(status="recovered", session_id=sid)
            intent.finish()
            log(f"submit {intent.id}: LibTV had it as session {sid}; recorded")
        elif reason.startswith("open:"):
            entry.update(status="open", reason=reason[5:].strip())
            intent.release()
        else:
            entry.update(status="closed", reason=reason)
            intent.close(reason)
            log(f"submit {intent.id}: {reason}")
        report.append(entry)
    return report


def _resolve(store: Any, backend: Optional[Any], record: Dict[str, Any], matched: Set[str]) -> Tuple[Optional[str], str]:
    """(session id, "") once the submission is journaled; else (None, why) — "open: ..." to retry later."""
    from libtv_fsm import events as ev
    from libtv_fsm.errors import TransitionRefused
    from libtv_fsm.ids import is_valid_id
    from libtv_fsm.submit import submitted_event

    try:
        at = ev.parse_time(record.get("at"))
    except ValueError:
        at = ev.now()
    message = str(record.get("message") or "")
    requested = record.get("session_id") or None
    created = record.get("created") if isinstance(record.get("created"), dict) else None

    def journaled(sid: str) -> bool:
        local = store.replay(sid)
        return local.version > 0 and local.message == message and local.submitted_at is not None and local.submitted_at >= at

    def adopt(sid: str, project_uuid: str, project_url: str) -> Tuple[Optional[str], str]:
        if journaled(sid):
            return sid, ""
        try:
            store.record(sid, submitted_event(record, sid, project_uuid, project_url, at=at))
        except TransitionRefused as err:
            return None, f"LibTV has it as session {sid}, but its journal cannot take it: {err}"
        matched.add(sid)
        return sid, ""

    if created and is_valid_id(created.get("session_id")):
        return adopt(created["session_id"], str(created.get("project_uuid") or ""), str(created.get("project_url") or ""))
    if requested and is_valid_id(requested) and journaled(requested):
        return requested, ""
    if backend is None:
        return None, "open: no API key configured to ask LibTV"
    if requested:
        if not is_valid_id(requested):
            return None, "the record names an invalid session id"
        messages = backend.query_session(requested, after_seq=int(record.get("after_seq") or 0))
        if any(m.role == "user" and m.content == message for m in messages):
            local = store.replay(requested)
            return adopt(requested, local.project_uuid or "", local.project_url or "")
        return None, f"session {requested} has no such new message: the request never reached LibTV"
    if getattr(backend, "auth_mode", "") != "nexu_gateway":
        return None, ("the direct LibTV API cannot list sessions, so a request that was sent but never recorded "
                      "cannot be found; if it was created, it is in your LibTV project")
    local = set(store.journal.session_ids())
    candidates = []
    for task in backend.tasks():
        if not is_valid_id(task.id) or task.id in matched:
            continue
        # (a journal file can exist empty: an append that failed on a full disk is undone, not the file)
        if task.id in local and store.replay(task.id).version > 0:
            continue
        try:
            if task.created_at and ev.parse_time(task.created_at).timestamp() < at.timestamp() - CLOCK_SKEW_SECONDS:
                continue
        except ValueError:
            pass  # no usable time: look at it anyway
        candidates.append(task.id)
    for sid in candidates[:MAX_CANDIDATES]:
        messages = backend.query_session(sid)
        first = next((m for m in messages if m.role == "user"), None)
        if first is not None and first.content == message:
            return adopt(sid, "", "")
    return None, "LibTV has no session with this request: it never reached LibTV (nothing to deliver)"
