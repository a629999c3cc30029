"""SessionStore: load sessions by replaying their journals, and record new events safely.

The embedding API of CONTRACT section 6. Writes go through :meth:`SessionStore.record`:
replay, check every new event against the machine, append with the version replay saw;
if another process appended first, reload and decide again. So two processes can never
both make the same transition (say, two waiters both delivering). After each append the
store's projections (journal/projections.py: the read model, the snapshots) are brought up to date,
so whoever records an event, a command, a waiter or an embedding runtime, keeps them current.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, List, Optional, Tuple, Union

from libtv_fsm import events as ev
from libtv_fsm.errors import ConcurrencyConflict, TransitionRefused, UnknownSession
from libtv_fsm.ids import validate_session_id
from libtv_fsm.journal import Journal, JsonlJournal
from libtv_fsm.machine import attached
from libtv_fsm.replay import Session, apply, may, replay

if TYPE_CHECKING:
    from libtv_fsm.journal import Appended, JournalRead
    from libtv_fsm.journal.projections import Projection
    from libtv_fsm.snapshots import Summary

MAX_CONFLICT_RETRIES = 60
# After losing a race, wait a random moment: at most 1 ms x 2^(tries - 1), and never more than this.
CONFLICT_BACKOFF_CAP = 0.05
# Sessions read per query by a listing on a journal that can read several at once.
READ_BATCH = 500


class SessionStore:
    """Sessions of one ``NEXU_HOME`` (or any :class:`Journal`).

    ``projections`` are told about every append and listing (journal/projections.py); by default a JSONL
    store of a NEXU_HOME keeps the legacy read model and the snapshots, any other store nothing.
    """

    def __init__(self, home: Union[str, Path, None] = None, journal: Optional[Journal] = None,
                 projections: Optional[Iterable["Projection"]] = None) -> None:
        if home is None:
            home = os.environ.get("NEXU_HOME") or os.path.expanduser("~/.nexu")
        self.home = Path(home)
        self.journal: Journal = journal if journal is not None else JsonlJournal(self.home)
        if projections is None:
            from libtv_fsm.journal.projections import default_projections

            projections = default_projections(self)
        self.projections: List["Projection"] = list(projections)

    @classmethod
    def from_url(cls, url: str, home: Union[str, Path, None] = None) -> "SessionStore":
        """The store whose journal is the database ``url`` names (``postgresql://...``); ``home`` keeps the rest.

        The key, ``libtv.json`` and the waiters' logs stay under ``home`` (default ``NEXU_HOME``).
        """
        from libtv_fsm.journal import open_journal

        return cls(home, journal=open_journal(url))

    # -- reading ------------------------------------------------------------------------------

    def exists(self, session_id: str) -> bool:
        return self.journal.exists(validate_session_id(session_id))

    def load(self, session_id: str) -> Session:
        """Replay the session's journal; UnknownSession if it has none."""
        session = self.replay(session_id)
        if session.version == 0 and not self.journal.exists(session_id):
            where = str(self.home) if self.snapshots_home() is not None else self.journal.location(session_id)
            raise UnknownSession(f"Unknown session {session_id}: no journal for it in {where}")
        return session

    def replay(self, session_id: str) -> Session:
        """Replay the session's journal; an unknown session replays to an empty ``created`` one."""
        return _replayed(session_id, self.journal.read(validate_session_id(session_id)))

    def sessions(self) -> List[Session]:
        """Every known session, newest first (by creation time, then last change)."""
        return sorted(self.replay_many(self.journal.session_ids()), key=_newest_first_key, reverse=True)

    def replay_many(self, session_ids: List[str]) -> List[Session]:
        """Replay these sessions (in that order), read a batch at a time (one query per batch on a database)."""
        found: List[Session] = []
        for start in range(0, len(session_ids), READ_BATCH):
            batch = self.journal.read_many(session_ids[start:start + READ_BATCH])
            found.extend(_replayed(sid, batch[sid]) for sid in session_ids[start:start + READ_BATCH])
        return found

    def summaries(self) -> List["Summary"]:
        """Every known session as a listing shows it, newest first, in the order of :meth:`sessions`.

        With the JSONL journal this reads the snapshot index and replays only the sessions
        whose journal changed since it was written; the answer is the same as a full replay.
        """
        from libtv_fsm import snapshots

        if self.snapshots_home() is not None:
            rows = snapshots.list_sessions(self.home)
        else:
            # A projection that keeps listing rows (the database's session views) answers; else replay all.
            answers = (p.listing(self) for p in self.projections)
            listed = next((r for r in answers if r is not None), None)
            rows = listed if listed is not None else [snapshots.Summary.of(session, None) for session in self.sessions()]
        if self.projections:
            from libtv_fsm.journal.projections import notify_listed

            notify_listed(self.projections, self, rows)
        return rows

    def snapshots_home(self) -> Optional[Path]:
        """The home whose snapshot cache mirrors this store's journal, or None (another kind of journal)."""
        from libtv_fsm.snapshots import JOURNAL_DIR

        journal = self.journal
        if isinstance(journal, JsonlJournal) and Path(journal.root) == self.home / JOURNAL_DIR:
            return self.home
        return None

    def subscribe(self, after: Optional[int] = None, idle_timeout: Optional[float] = None) -> Iterator["Appended"]:
        """New events as they are appended, by any process: ``Appended(session_id, seq, event, position)``.

        Starts from now (what is appended after this call); ``after=0`` starts from the first event,
        and on PostgreSQL ``after=<position>`` resumes after an event an earlier subscriber saw. Ends
        after ``idle_timeout`` seconds without a new event (None: never). PostgreSQL: LISTEN/NOTIFY, and
        rows read by position; JSONL: the journal folder polled for changed files (``position`` is None).
        """
        return self.journal.subscribe(after=after, idle_timeout=idle_timeout)

    # -- writing ------------------------------------------------------------------------------

    def record(self, session_id: str, *events: ev.Event) -> Session:
        """Append ``events`` if each is valid after the ones before it; return the new session.

        Raises TransitionRefused (nothing written) if one is not valid in the state it would
        arrive in; retries on a concurrent append, re-checking against what the other wrote.
        """
        return self.record_with(session_id, lambda _session: list(events))

    def record_with(self, session_id: str, decide: Callable[[Session], List[ev.Event]]) -> Session:
        """Like :meth:`record`, but ``decide`` picks the events from the freshly replayed session.

        ``decide`` may run more than once (after a concurrent append); return [] to write nothing.
        """
        from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

        validate_session_id(session_id)
        # A lost race replays and decides again, after a random moment (growing, capped) so racing
        # writers spread out instead of colliding again on the next replay.
        retrying = Retrying(retry=retry_if_exception_type(ConcurrencyConflict),
                            stop=stop_after_attempt(MAX_CONFLICT_RETRIES),
                            wait=wait_random_exponential(multiplier=0.001, max=CONFLICT_BACKOFF_CAP))
        try:
            for attempt in retrying:
                with attempt:
                    session = self.replay(session_id)
                    new_events = decide(session)
                    if not new_events:
                        return session
                    expected = session.version
                    _check_and_apply(session, new_events)
                    self.journal.append(session_id, new_events, expected)
        except RetryError:
            raise ConcurrencyConflict(f"Session {session_id} keeps changing under us; try again") from None
        if self.projections:
            from libtv_fsm.journal.projections import notify_appended

            notify_appended(self.projections, self, session, new_events)
        return session


def _replayed(session_id: str, read: "JournalRead") -> Session:
    return replay(session_id, read.entries, skipped_lines=read.skipped, problems=read.problems)


def _check_and_apply(session: Session, new_events: List[ev.Event]) -> None:
    """Apply the events to the replayed session in memory, refusing the batch if one is invalid."""
    version = session.version
    for event in new_events:
        ok, why = may(session, event)
        if not ok:
            raise TransitionRefused(f"Session {session.session_id}: {why}")
        version += 1
        with attached(session):
            apply(session, version, event)


def _newest_first_key(session: Session) -> Tuple[float, float, str]:
    created = session.created_at.timestamp() if session.created_at else 0.0
    updated = session.updated_at.timestamp() if session.updated_at else 0.0
    return (created, updated, session.session_id)
