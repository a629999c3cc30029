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
from typing import TYPE_CHECKING, Any, List, Sequence

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


def default_projections(store: Any) -> List[Projection]:
    """What a store keeps by default: the read model and the snapshots for a JSONL store of a NEXU_HOME; else nothing."""
    home = store.snapshots_home()
    if home is None:
        return []
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
