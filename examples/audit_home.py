"""Audit a NEXU_HOME: replay every session journal and print a table of outcomes and durations.

    python examples/audit_home.py [NEXU_HOME] [--json]

Reads only (the journals are replayed, never written): safe on a live home while waiters run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

from libtv_fsm import Session, SessionStore


def seconds(start: Optional[datetime], end: Optional[datetime]) -> Optional[float]:
    return None if start is None or end is None else round((end - start).total_seconds(), 3)


def human(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def outcome(session: Session) -> str:
    n = len(session.result_urls)
    if session.state == "delivered":
        text = f"{n} result(s) in the chat"
        return text + (f", {len(session.uncertain_urls)} uncertain" if session.uncertain_urls else "")
    if session.state == "completed":
        return f"{n} result(s), " + ("not delivered yet" if session.delivery else "no chat to send to")
    if session.state == "failed":
        return f"failed: {(session.failure_message or '')[:50]}"
    if session.state == "timeout":
        return "waiter gave up; may still finish upstream"
    return "still generating"


def row(session: Session, now: datetime) -> Dict[str, Any]:
    """One session's line of the audit, as plain data."""
    ended = {"delivered": session.delivered_at, "completed": session.completed_at, "failed": session.updated_at,
             "timeout": session.timed_out_at}.get(session.state)
    chat = f"{session.delivery.channel}:{session.delivery.chat_id}" if session.delivery else ""
    problems = len(session.ignored) + session.skipped_lines
    return {
        "session_id": session.session_id,
        "state": session.state,
        "outcome": outcome(session),
        "chat": chat,
        "created_at": session.created_at.isoformat() if session.created_at else None,
        # submitted -> final state (or -> now while it is still running)
        "took_seconds": seconds(session.submitted_at, ended or now),
        "finished": ended is not None,
        # the job finished upstream -> the last result was in the chat
        "delivery_seconds": seconds(session.completed_at, session.delivered_at),
        "journal_problems": problems,
    }


def table(rows: Sequence[Dict[str, Any]]) -> List[str]:
    head = f"{'SESSION':<28} {'STATE':<10} {'TOOK':>9} {'DELIVERY':>9}  {'CHAT':<26} OUTCOME"
    lines = [head, "-" * len(head)]
    for r in rows:
        took = human(r["took_seconds"]) + ("" if r["finished"] else "+")
        note = f"  ({r['journal_problems']} journal problem(s))" if r["journal_problems"] else ""
        lines.append(f"{r['session_id'][:28]:<28} {r['state']:<10} {took:>9} {human(r['delivery_seconds']):>9}  "
                     f"{r['chat'][:26]:<26} {r['outcome']}{note}")
    return lines


def summary(rows: Sequence[Dict[str, Any]]) -> str:
    counts: Dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    done = [r["took_seconds"] for r in rows if r["state"] == "delivered" and r["took_seconds"] is not None]
    text = f"{len(rows)} session(s): " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    if done:
        text += f"; submit to delivered: median {human(statistics.median(done))}, longest {human(max(done))}"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Replay every journal of a NEXU_HOME; print outcomes and durations.")
    parser.add_argument("home", nargs="?", default=os.environ.get("NEXU_HOME") or os.path.expanduser("~/.nexu"))
    parser.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    args = parser.parse_args(argv)
    now = datetime.now(timezone.utc)
    rows = [row(session, now) for session in SessionStore(args.home).sessions()]
    if args.json:
        print(json.dumps({"home": str(args.home), "sessions": rows, "summary": summary(rows)}, ensure_ascii=False))
        return 0
    if not rows:
        print(f"No sessions in {args.home}")
        return 0
    print("\n".join(table(rows)))
    print()
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
