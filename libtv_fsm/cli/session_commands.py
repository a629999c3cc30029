"""CLI commands about sessions and their journals: create-session, wait-and-deliver, recover, history."""
from __future__ import annotations

import argparse
from typing import Any, Dict

from libtv_fsm.cli import emit_json, not_implemented, say


def register(sub: argparse._SubParsersAction) -> None:
    for name in ("create-session", "wait-and-deliver", "recover"):
        p = sub.add_parser(name)
        p.set_defaults(func=not_implemented)

    p = sub.add_parser("history", help="the replayed event timeline of one session")
    p.add_argument("session_id", metavar="SESSION_ID")
    p.add_argument("--json", action="store_true", help="one JSON document instead of human lines")
    p.set_defaults(func=history)


def _store() -> Any:
    from libtv_fsm.config import nexu_home
    from libtv_fsm.store import SessionStore

    return SessionStore(nexu_home())


def history(args: argparse.Namespace) -> int:
    from libtv_fsm.timeline import event_view, session_view

    store = _store()
    session = store.load(args.session_id)
    journal = store.journal.location(session.session_id)
    if args.json:
        doc: Dict[str, Any] = {"session_id": session.session_id, "state": session.state, "journal": journal}
        doc.update(session_view(session))
        doc["events"] = [event_view(entry) for entry in session.events]
        emit_json(doc)
        return 0
    say(f"Session {session.session_id}: {session.state}  ({len(session.events)} events, journal {journal})")
    if session.delivery:
        say(f"  Chat: {session.delivery.channel} {session.delivery.chat_id}")
    for entry in session.events:
        view = event_view(entry)
        detail = "  ".join(f"{k}={v}" for k, v in view.items() if k not in ("type", "at", "seq", "ignored") and v not in (None, "", [], {}))
        flag = f"  [ignored: {view['ignored']}]" if "ignored" in view else ""
        say(f"  #{entry.seq:<3} {view.get('at') or '?':<27} {view['type']:<20} {detail}{flag}")
    for url in session.uncertain_urls:
        say(f"  uncertain: a send of {url} started but its outcome was never recorded")
    if session.skipped_lines:
        say(f"  {session.skipped_lines} unreadable journal line(s) skipped")
    return 0
