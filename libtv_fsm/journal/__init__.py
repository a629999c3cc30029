"""The journal layer: where session events are stored (one interface, the JSONL store) and the projections kept from them.

``from libtv_fsm.journal import Journal, JsonlJournal`` is the public way in; the modules are
``base`` (the interface), ``jsonl`` (the JSONL + filelock store) and ``projections`` (what the
store keeps current after each append: the legacy read model, the snapshots).
"""
from __future__ import annotations

from libtv_fsm.journal.base import Journal, JournalRead, WaiterClaim
from libtv_fsm.journal.jsonl import JOURNAL_DIR, LOCK_TIMEOUT, JsonlJournal, parse_lines

__all__ = ["Journal", "JsonlJournal", "JournalRead", "WaiterClaim", "parse_lines", "JOURNAL_DIR", "LOCK_TIMEOUT"]
