"""The legacy read model (`libtv-sessions.json`, CONTRACT section 3) built from session views; standard library only.

readmodel.py owns the file (its lock, the legacy import); this is the shape, so that a
`recover` answered from the snapshot index can keep the file current without importing
the machine.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping

from libtv_fsm.snapshots import JOURNAL_DIR, Summary

READ_MODEL = "libtv-sessions.json"     # readmodel.READ_MODEL
IMPORT_MARKER = ".legacy-imported"     # readmodel.IMPORT_MARKER
MAX_LEGACY = 50                        # readmodel.MAX_SESSIONS


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


def read_model_text(rows: List[Summary]) -> str:
    """The read model's text: the most recent sessions by ``created_at``, newest first.

    ``rows`` come newest first (list_sessions' order), so the candidates are a short prefix: the
    first MAX_LEGACY, plus any that tie with the last of them on ``created_at``.
    """
    dated: List[Summary] = []
    for row in rows:
        created = row.created
        if not created:
            continue  # never submitted: not in the read model
        if len(dated) >= MAX_LEGACY and created < dated[MAX_LEGACY - 1].created:
            break
        dated.append(row)
    dated.sort(key=lambda r: (r.created, r.session_id), reverse=True)
    return json.dumps([legacy_from_view(r.view()) for r in dated[:MAX_LEGACY]], ensure_ascii=False, indent=1)


def sync_read_model(home: Path, rows: List[Summary], fresh: Callable[[], List[Summary]]) -> None:
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
    from libtv_fsm.readmodel import write_text

    try:
        write_text(Path(home), lambda: read_model_text(fresh()))
        if ours:
            # The file is ours, made from the journals: mark it so that no later run takes it for
            # a legacy file to import (which would send `recover` down the slow path once more).
            marker = Path(home) / JOURNAL_DIR / IMPORT_MARKER
            if not marker.exists() and (Path(home) / JOURNAL_DIR).is_dir():
                from datetime import datetime, timezone

                stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
                marker.write_text(stamp + "\n")
    except OSError:
        pass
