"""`libtv-sessions.json`: the read model older tools read, rebuilt from journals; and the one-time legacy import.

The journal is the source of truth; this file is a cache of it in the legacy shape
(CONTRACT section 3). An existing legacy file found before any journal exists is imported
into journals first (each record becomes events), and kept beside as a backup, so nothing
in it is lost.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List

from filelock import FileLock, Timeout

from libtv_fsm import events as ev
from libtv_fsm.replay import Session
from libtv_fsm.legacy import legacy_from_view, legacy_status, sync_read_model  # noqa: F401 (legacy_status: API)
from libtv_fsm.timeline import session_view

READ_MODEL = "libtv-sessions.json"
IMPORT_MARKER = ".legacy-imported"
MAX_SESSIONS = 50
CANVAS = "https://www.liblib.tv/canvas?projectId="


def legacy_record(session: Session) -> Dict[str, Any]:
    """One session in the legacy shape (built from its view, as the snapshot index builds it)."""
    return legacy_from_view(session_view(session))


def build(sessions: List[Session]) -> List[Dict[str, Any]]:
    """The most recent sessions by ``created_at``, newest first, in the legacy shape."""
    dated = [s for s in sessions if s.created_at is not None]
    dated.sort(key=lambda s: (s.created_at, s.session_id), reverse=True)
    return [legacy_record(s) for s in dated[:MAX_SESSIONS]]


def write_text(home: Path, text: Callable[[], str]) -> Path:
    """Replace the read model atomically with what ``text()`` gives, computed under the lock."""
    path = Path(home) / READ_MODEL
    lock = FileLock(str(path) + ".lock", timeout=10)
    try:
        with lock:
            _write_atomic(path, text())
    except Timeout:
        pass  # another process is rebuilding it from the same journals right now
    return path


def refresh(store: Any) -> None:
    """Rebuild the read model from every journal of ``store`` (best effort: it is only a cache).

    From the snapshot index: a session that did not change since the last listing is not replayed.
    """
    try:
        sync_read_model(store.home, store.summaries(), store.summaries)
    except OSError:
        pass


def _write_atomic(path: Path, text: str) -> None:
    from libtv_fsm.atomicfile import write_atomic

    write_atomic(path, text.encode("utf-8"), 0o600)  # prompts and chat ids: the user's alone


# -- the one-time import of a legacy file --------------------------------------------------


def _time(value: Any, fallback: datetime) -> datetime:
    try:
        return ev.parse_time(value)
    except (TypeError, ValueError):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            from datetime import timezone

            return datetime.fromtimestamp(value, timezone.utc)
        return fallback


def legacy_events(record: Dict[str, Any], fallback: datetime) -> List[ev.Event]:
    """The events that tell a legacy record's story: submitted, then as far as its status went."""
    created = _time(record.get("created_at"), fallback)
    updated = _time(record.get("updated_at"), created)
    project = str(record.get("project_uuid") or "")
    delivery = record.get("delivery") or {}
    target = None
    if isinstance(delivery, dict) and delivery.get("channel") and delivery.get("chat_id"):
        target = ev.Delivery(str(delivery["channel"]), str(delivery["chat_id"]))
    text = str(record.get("submitted_text") or "")
    events: List[ev.Event] = [ev.Submitted(
        at=created, project_uuid=project, project_url=CANVAS + project if project else "", text=text, message=text,
        auth_mode=str(record.get("auth_mode") or "nexu_gateway"), delivery=target,
    )]
    status = record.get("status")
    urls = tuple(u for u in (record.get("result_urls") or []) if isinstance(u, str))
    if status == "completed" and urls:
        done = _time(record.get("completed_at"), updated)
        events.append(ev.Completed(at=done, urls=urls))
        if record.get("delivered_at"):
            at = _time(record.get("delivered_at"), done)
            events += [ev.DeliverySucceeded(at=at, url=u, sent_as="legacy") for u in urls]
            events.append(ev.Delivered(at=at, note="imported from libtv-sessions.json"))
    elif status == "failed":
        events.append(ev.Failed(at=updated, reason=str(record.get("failure_message") or "failed")))
    elif status == "timeout":
        events.append(ev.TimedOut(at=updated))
    # A "completed" record without URLs stays submitted: recover asks upstream for its results.
    return events


def import_legacy(store: Any, now: datetime) -> int:
    """Import a legacy ``libtv-sessions.json`` into journals once; returns how many sessions were imported."""
    from libtv_fsm.ids import validate_session_id

    home = Path(store.home)
    path = home / READ_MODEL
    marker = home / "libtv-journal" / IMPORT_MARKER
    if marker.exists() or not path.is_file():
        return 0
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        records = None
    imported = 0
    if isinstance(records, list):
        for record in records:
            if not isinstance(record, dict):
                continue
            try:
                sid = validate_session_id(record.get("session_id"))
            except Exception:
                continue
            if store.exists(sid):
                continue  # already a journal: the read model was ours, or imported before
            store.journal.append(sid, legacy_events(record, now), 0)
            imported += 1
        if imported:
            backup = home / f"{READ_MODEL}.legacy-{now.strftime('%Y%m%dT%H%M%SZ')}.bak"
            try:
                backup.write_bytes(path.read_bytes())
            except OSError:
                pass
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(ev.format_time(now) + "\n")
    return imported

