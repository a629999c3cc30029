"""Projections: the caches the store keeps current after each of its appends, in one place.

Like eventsourcing's process applications (or a projection runner): after an append succeeds,
SessionStore hands each of its projections the session it just applied and the new events;
after a listing it hands them the rows it read. So no command, waiter or embedding runtime has
to remember to refresh anything. A JSONL store under a ``NEXU_HOME`` has two by default: the
legacy read model (``libtv-sessions.json``) and the session's timeline snapshot.

A projection is a cache the journals can always rebuild: its failure never fails the append
(OSError is ignored, anything else logged), and it does not stay wrong (the read model is
rebuilt whole by the next append or listing after a failed write; a snapshot whose key does
not match its journal is never used).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:
    from libtv_fsm.replay import Session
    from libtv_fsm.snapshots import Summary

log = logging.getLogger("libtv_fsm.journal.projections")


class Projection:
    """Something kept from the journal. Override :meth:`appended`, and :meth:`listed` if a listing helps."""

    def appended(self, store: Any, session: "Session", events: Sequence[Any]) -> None:
        """``events`` were appended; ``session`` is the session with them applied (do not change it)."""

    def listed(self, store: Any, rows: List["Summary"]) -> None:
        """``rows`` is every session as a listing just read them (``store.summaries()``)."""

    def listing(self, store: Any) -> "Optional[List[Summary]]":
        """Every session as a listing shows it, newest first, if this projection can answer; else None."""
        return None


class ReadModelProjection(Projection):
    """``libtv-sessions.json`` (CONTRACT section 3): the appended session's row replaced, not every journal replayed."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def appended(self, store: Any, session: "Session", events: Sequence[Any]) -> None:
        from libtv_fsm import readmodel

        if self._import_first(store):
            return
        sid = session.session_id

        def latest() -> "Session":
            # Under the read model's lock: if the journal is still as our append left it, the
            # session we applied is its state; otherwise someone appended since, so replay.
            is_at = getattr(store.journal, "is_at", None)
            if is_at is not None and is_at(sid, session.version):
                return session
            replayed: "Session" = store.replay(sid)
            return replayed

        readmodel.update(self.home, sid, latest)

    def listed(self, store: Any, rows: List["Summary"]) -> None:
        from libtv_fsm import readmodel
        from libtv_fsm.snapshots import list_sessions

        if self._import_first(store):
            return
        readmodel.sync(self.home, rows, lambda: list_sessions(self.home))

    def _import_first(self, store: Any) -> bool:
        """An older tool's file not yet imported is imported (and the file rebuilt), never overwritten."""
        from libtv_fsm.snapshots import legacy_import_pending

        if not legacy_import_pending(self.home):
            return False
        from libtv_fsm import events as ev
        from libtv_fsm.legacy import import_legacy

        import_legacy(store, ev.now())
        return True


class TimelineSnapshotProjection(Projection):
    """The appended session's timeline snapshot, so `history` answers from it without replaying.

    Rebuilt from a steady read of the journal, never from the session in memory: a snapshot's key
    must describe exactly the bytes it was built from. The listing index is not rewritten per
    append (it holds every session: rewriting it costs as much as the home is big); its entry for
    this session no longer matches the journal's key, so the next listing replays that one session.
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home)

    def appended(self, store: Any, session: "Session", events: Sequence[Any]) -> None:
        from libtv_fsm.snapshots import rebuild_timeline

        rebuild_timeline(self.home, session.session_id)


class DatabaseViews(Projection):
    """Each session's listing row in the database's ``libtv_session_views`` (postgres.py), so a listing reads rows
    instead of replaying every session. A row is built from the session the append just applied, at that
    version; a listing replays (and saves) only the sessions whose row is behind their events, missing,
    or from other code. Like the JSONL snapshot index, for a journal that every host shares.
    """

    def appended(self, store: Any, session: "Session", events: Sequence[Any]) -> None:
        store.journal.save_views([(session.session_id, session.version, _view_doc(session))])

    def listing(self, store: Any) -> "Optional[List[Summary]]":
        from libtv_fsm.snapshots import Summary, content_stamp, newest_first

        stamp = content_stamp()
        rows: List[Summary] = []
        stale: List[str] = []
        for sid, (last, version, doc) in store.journal.cached_views().items():
            try:
                if version != last or not isinstance(doc, dict) or doc.get("stamp") != stamp:
                    raise ValueError("behind its events, or from other code")
                rows.append(Summary.of_timeline(sid, None, doc))
            except (ValueError, KeyError, TypeError):
                stale.append(sid)
        replayed = store.replay_many(stale)
        rows.extend(Summary.of(session, None) for session in replayed)
        try:
            store.journal.save_views([(s.session_id, s.version, _view_doc(s)) for s in replayed if s.version > 0])
        except Exception as err:  # a cache: the listing stands without it
            log.warning("could not save %d session views: %s", len(replayed), err)
        return sorted(rows, key=newest_first, reverse=True)


def _view_doc(session: "Session") -> Dict[str, Any]:
    from libtv_fsm.snapshots import _NOTICE_KINDS, content_stamp
    from libtv_fsm.timeline import session_view

    return {"stamp": content_stamp(), "view": session_view(session),
            "notices": [n for n in session.notices if n in _NOTICE_KINDS]}


def default_projections(store: Any) -> List[Projection]:
    """What a store keeps by default: the read model and the snapshots for a JSONL store of a NEXU_HOME; the
    session views for a database journal that keeps them; else nothing."""
    home = store.snapshots_home()
    if home is None:
        return [DatabaseViews()] if hasattr(store.journal, "cached_views") else []
    return [ReadModelProjection(home), TimelineSnapshotProjection(home)]


def notify_appended(projections: Sequence[Projection], store: Any, session: "Session", events: Sequence[Any]) -> None:
    """Tell every projection about an append that succeeded; none of them can make it fail."""
    for projection in projections:
        try:
            projection.appended(store, session, events)
        except OSError:
            pass  # a cache that cannot be written now: it is rebuilt by the next append or listing
        except Exception as err:  # a bug in a projection must not undo (or hide) a recorded event
            log.warning("projection %s failed after an append to session %s: %s",
                        type(projection).__name__, session.session_id, err)


def notify_listed(projections: Sequence[Projection], store: Any, rows: List["Summary"]) -> None:
    """Tell every projection about a listing; none of them can make it fail."""
    for projection in projections:
        try:
            projection.listed(store, rows)
        except OSError:
            pass
        except Exception as err:
            log.warning("projection %s failed after a listing: %s", type(projection).__name__, err)
