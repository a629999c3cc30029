"""`libtv-sessions.json`: the read model older tools read (CONTRACT section 3), a cache of the journals in the legacy shape.

The journal is the source of truth. This module owns the file: its shape, its lock, and
keeping it current. Standard library only at import, so `recover` answered from the snapshot
index keeps the file current without importing the machine; filelock is imported only to write.
The one-time import of an older tool's file is legacy.py.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from libtv_fsm.snapshots import (IMPORT_MARKER, JOURNAL_DIR, READ_MODEL, SNAPSHOT_DIR, Summary, code_stamp,
                                 _timestamp, legacy_import_pending, list_sessions)

MAX_SESSIONS = 50
LOCK_TIMEOUT = 10.0

__all__ = ["READ_MODEL", "IMPORT_MARKER", "MAX_SESSIONS", "legacy_status", "legacy_from_view", "legacy_record",
           "build", "read_model_text", "rebuild", "update", "sync", "refresh"]


# -- the shape ------------------------------------------------------------------------------


def legacy_status(state: str) -> str:
    if state in ("completed", "delivered"):
        return "completed"
    return state if state in ("failed", "timeout") else "submitted"


def legacy_from_view(view: Mapping[str, Any]) -> Dict[str, Any]:
    """One session in the legacy shape (CONTRACT section 3), from its `recover` view."""
    record: Dict[str, Any] = {
        "session_id": view["session_id"],
        "project_uuid": view["project_uuid"],
        "status": legacy_status(view["state"]),
        "submitted_text": view["submitted_text"][:80],
        "auth_mode": view["auth_mode"],
        "delivery": view["delivery"],
        "created_at": view["created_at"],
        "updated_at": view["updated_at"],
    }
    if view["result_urls"]:
        record["result_urls"] = list(view["result_urls"])
    for name in ("completed_at", "failure_message", "delivered_at"):
        if view.get(name) is not None:
            record[name] = view[name]
    return record


def legacy_record(session: Any) -> Dict[str, Any]:
    """One replayed session in the legacy shape (built from its view, as the snapshot index builds it)."""
    from libtv_fsm.timeline import session_view

    return legacy_from_view(session_view(session))


def build(sessions: List[Any]) -> List[Dict[str, Any]]:
    """The most recent sessions by ``created_at``, newest first, in the legacy shape (from replayed sessions)."""
    dated = [s for s in sessions if s.created_at is not None]
    dated.sort(key=lambda s: (s.created_at, s.session_id), reverse=True)
    return [legacy_record(s) for s in dated[:MAX_SESSIONS]]


def dump(records: List[Dict[str, Any]]) -> str:
    """The file's text for ``records`` (the one spelling every writer uses, so texts compare)."""
    return json.dumps(records, ensure_ascii=False, indent=1)


def read_model_text(rows: List[Summary]) -> str:
    """The read model's text: the most recent sessions by ``created_at``, newest first.

    ``rows`` come newest first (list_sessions' order), so the candidates are a short prefix: the
    first MAX_SESSIONS, plus any that tie with the last of them on ``created_at``.
    """
    dated: List[Summary] = []
    for row in rows:
        created = row.created
        if not created:
            continue  # never submitted: not in the read model
        if len(dated) >= MAX_SESSIONS and created < dated[MAX_SESSIONS - 1].created:
            break
        dated.append(row)
    dated.sort(key=lambda r: (r.created, r.session_id), reverse=True)
    return dump([legacy_from_view(r.view()) for r in dated[:MAX_SESSIONS]])


# -- the file -------------------------------------------------------------------------------
#
# Kept current by the store (projections.ReadModelProjection): after each append, :func:`update`
# replaces that one session's row; a listing calls :func:`sync`. An update edits the file in place
# only when the stamp beside it (in the snapshot folder) says the last writer left it whole and
# made by this code; a failed or timed-out write removes the stamp, so the next append or listing
# rebuilds the file from every journal instead of building on a file that missed a change.

STAMP = "read-model.stamp"             # in <journal>/snapshots/


@contextmanager
def _locked(home: Path) -> Iterator[bool]:
    """The read model's lock; yields False (and distrusts the file) if it could not be had in time."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(home / READ_MODEL) + ".lock", timeout=LOCK_TIMEOUT)
    try:
        lock.acquire()
    except Timeout:
        # Someone holds it for long: our change may be lost in what they write. Say so.
        _distrust(home)
        yield False
        return
    try:
        yield True
    except BaseException:
        _distrust(home)  # a half-done update: the next one starts from the journals
        raise
    finally:
        lock.release()


def _replace(home: Path, text: str) -> None:
    """Write ``text`` if the file says something else; then the file is ours, current, and trusted."""
    from libtv_fsm.atomicfile import write_atomic

    path = home / READ_MODEL
    if _read(path) != text:
        write_atomic(path, text.encode("utf-8"), 0o600)  # prompts and chat ids: the user's alone
    _trust(home)
    _mark_ours(home)


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _stamp_path(home: Path) -> Path:
    return home / JOURNAL_DIR / SNAPSHOT_DIR / STAMP


def _stamp() -> str:
    """The replaying code's stamp and this module's: a change to the shape makes every file untrusted."""
    try:
        st = os.stat(__file__)
        mine = f"{st.st_size}.{st.st_mtime_ns}"
    except OSError:
        mine = "-"
    return f"{code_stamp()}:{mine}"


def _trusted(home: Path) -> bool:
    return _read(_stamp_path(home)) == _stamp()


def _trust(home: Path) -> None:
    if not _trusted(home):
        path = _stamp_path(home)
        from libtv_fsm.atomicfile import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, _stamp().encode("ascii"), 0o600, durable=False)


def _distrust(home: Path) -> None:
    try:
        os.unlink(_stamp_path(home))
    except OSError:
        pass  # absent already, or the folder is gone: either way nothing vouches for the file


def _mark_ours(home: Path) -> None:
    """The file is ours, made from the journals: mark it so that no later run takes it for a
    legacy file to import (which would send `recover` down the slow path once more)."""
    marker = home / JOURNAL_DIR / IMPORT_MARKER
    if not marker.exists() and (home / JOURNAL_DIR).is_dir():
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        marker.write_text(stamp + "\n")


def _order(record: Mapping[str, Any]) -> Tuple[float, str]:
    """A row's place, newest first, exactly as read_model_text orders Summaries (timestamp, then id)."""
    return (_timestamp(str(record["created_at"])), str(record["session_id"]))


def _rows(text: Optional[str]) -> Optional[List[Dict[str, Any]]]:
    """The file's rows if it is exactly what this code writes (parsed, ordered, spelled our way); else None."""
    if text is None:
        return None
    try:
        rows = json.loads(text)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or dump(rows) != text:
            return None
        keys = [_order(r) for r in rows]
    except (ValueError, KeyError, TypeError):
        return None
    return rows if keys == sorted(keys, reverse=True) and len(rows) <= MAX_SESSIONS else None


def rebuild(home: Path, fresh: Optional[Callable[[], List[Summary]]] = None) -> None:
    """Rebuild the file from every journal (through the snapshot index), under the lock."""
    home = Path(home)
    if legacy_import_pending(home):
        return  # an older tool's file: legacy.import_legacy reads it first, then rebuilds
    with _locked(home) as held:
        if held:
            _replace(home, read_model_text(fresh() if fresh is not None else list_sessions(home)))


def update(home: Path, session_id: str, latest: Callable[[], Any]) -> None:
    """Replace one session's row (or place it among the newest MAX_SESSIONS): the store's per-append projection.

    ``latest()`` is called under the lock and gives the session as its journal is now, so of two
    processes projecting the same session, the one that writes last writes the newer state. An
    untrusted or foreign file is rebuilt from every journal instead.
    """
    home = Path(home)
    if legacy_import_pending(home):
        return
    with _locked(home) as held:
        if not held:
            return
        rows = _rows(_read(home / READ_MODEL)) if _trusted(home) else None
        if rows is None:
            _replace(home, read_model_text(list_sessions(home)))
            return
        session = latest()
        rows = [r for r in rows if r.get("session_id") != session_id]
        if session.created_at is not None:
            rows.append(legacy_record(session))
            rows.sort(key=_order, reverse=True)
        _replace(home, dump(rows[:MAX_SESSIONS]))


def sync(home: Path, rows: List[Summary], fresh: Optional[Callable[[], List[Summary]]] = None) -> None:
    """After a listing: rewrite libtv-sessions.json if it says something else than ``rows`` (best effort).

    Before writing, the list is taken again with ``fresh()`` under the read model's lock, so a
    slower process can never replace a newer read model with the older list it computed.
    """
    home = Path(home)
    if _read(home / READ_MODEL) == read_model_text(rows) and _trusted(home):
        return  # nothing changed: no lock, no write, no filelock import
    try:
        rebuild(home, fresh)
    except OSError:
        pass


def refresh(store: Any) -> None:
    """Rebuild the read model from every journal of ``store`` (best effort: it is only a cache).

    From the snapshot index: a session that did not change since the last listing is not replayed.
    """
    try:
        sync(store.home, store.summaries(), store.summaries)
    except OSError:
        pass
