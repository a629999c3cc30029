"""The one-time import of a `libtv-sessions.json` an older tool wrote: each record becomes a session's events.

An existing legacy file found before any journal exists is imported into journals (CONTRACT
section 3), and kept beside as a backup, so nothing in it is lost. From then on the file is
the read model (readmodel.py), rebuilt from the journals.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List

from libtv_fsm.readmodel import IMPORT_MARKER, READ_MODEL, rebuild
from libtv_fsm.snapshots import JOURNAL_DIR, legacy_import_pending

CANVAS = "https://www.liblib.tv/canvas?projectId="

__all__ = ["READ_MODEL", "IMPORT_MARKER", "legacy_events", "import_legacy"]


def _time(value: Any, fallback: datetime) -> datetime:
    from libtv_fsm import events as ev

    try:
        return ev.parse_time(value)
    except (TypeError, ValueError):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, timezone.utc)
        return fallback


def legacy_events(record: Dict[str, Any], fallback: datetime) -> List[Any]:
    """The events that tell a legacy record's story: submitted, then as far as its status went."""
    from libtv_fsm import events as ev

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
    from libtv_fsm import events as ev
    from libtv_fsm.ids import validate_session_id

    home = Path(store.home)
    path = home / READ_MODEL
    marker = home / JOURNAL_DIR / IMPORT_MARKER
    if not legacy_import_pending(home):
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
    try:
        rebuild(home)  # from now on the file is the read model of the journals
    except OSError:
        pass  # a cache: the next append or listing tries again
    return imported
