"""`libtv-sessions.json`: the read model older tools read (CONTRACT section 3), a cache of the journals in the legacy shape.

The journal is the source of truth. This module owns the file: its shape, its lock, and
keeping it current. Standard library only at import, so `recover` answered from the snapshot
index keeps the file current without importing the machine; filelock is imported only to write.
The one-time import of an older tool's file is legacy.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping

from libtv_fsm.snapshots import IMPORT_MARKER, JOURNAL_DIR, READ_MODEL, Summary

MAX_SESSIONS = 50
LOCK_TIMEOUT = 10.0

__all__ = ["READ_MODEL", "IMPORT_MARKER", "MAX_SESSIONS", "legacy_status", "legacy_from_view", "legacy_record",
           "build", "read_model_text", "write_text", "sync", "refresh"]


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


def write_text(home: Path, text: Callable[[], str]) -> Path:
    """Replace the read model atomically with what ``text()`` gives, computed under the lock."""
    from filelock import FileLock, Timeout

    path = Path(home) / READ_MODEL
    lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)
    try:
        with lock:
            _write_atomic(path, text())
    except Timeout:
        pass  # another process is rebuilding it from the same journals right now
    return path


def _write_atomic(path: Path, text: str) -> None:
    from libtv_fsm.atomicfile import write_atomic

    write_atomic(path, text.encode("utf-8"), 0o600)  # prompts and chat ids: the user's alone


def _mark_ours(home: Path) -> None:
    """The file is ours, made from the journals: mark it so that no later run takes it for a
    legacy file to import (which would send `recover` down the slow path once more)."""
    marker = Path(home) / JOURNAL_DIR / IMPORT_MARKER
    if not marker.exists() and (Path(home) / JOURNAL_DIR).is_dir():
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        marker.write_text(stamp + "\n")


def sync(home: Path, rows: List[Summary], fresh: Callable[[], List[Summary]]) -> None:
    """Rewrite libtv-sessions.json if it says something else than ``rows`` (best effort).

    Before writing, the list is taken again with ``fresh()`` under the read model's lock, so a
    slower process can never replace a newer read model with the older list it computed.
    """
    path = Path(home) / READ_MODEL
    text = read_model_text(rows)
    try:
        if path.read_text(encoding="utf-8") == text:
            return  # nothing changed: no lock, no write, no filelock import
        ours = False
    except FileNotFoundError:
        ours = True
    except (OSError, UnicodeDecodeError):
        ours = False
    try:
        write_text(Path(home), lambda: read_model_text(fresh()))
        if ours:
            _mark_ours(Path(home))
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
