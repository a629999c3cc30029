"""`history` in words: one readable line per journal event, with its time and the time since the first."""
from __future__ import annotations

import posixpath
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence
from urllib.parse import urlsplit

Event = Mapping[str, Any]


def _name(url: Any) -> str:
    return posixpath.basename(urlsplit(str(url)).path) or str(url)[:60]


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _submitted(e: Event) -> str:
    text = " ".join(str(e.get("text") or "").split())
    line = f'"{text[:70]}{"…" if len(text) > 70 else ""}"' + (" (a new turn)" if e.get("continued") else "")
    line += f" via {e.get('auth_mode')}"
    delivery = e.get("delivery") or {}
    return line + (f", for {delivery.get('channel')} {delivery.get('chat_id')}" if delivery else ", no chat")


def _polled(e: Event) -> str:
    new = int(e.get("new_messages") or 0)
    line = "nothing new" if new == 0 else _count(new, "new message")
    if e.get("urls"):
        line += ", " + _count(len(e["urls"]), "result") + ": " + ", ".join(_name(u) for u in e["urls"])
    if e.get("failure"):
        line += f"; upstream says it failed: {e['failure']}"
    return line + (f" (by {e['source']})" if e.get("source") not in (None, "waiter") else "")


def _sent(e: Event) -> str:
    line = f"sent {_name(e.get('url'))} as {e.get('sent_as')}"
    line += f" ({e['message_id']})" if e.get("message_id") else ""
    return line + (" — uncertain: it may show twice" if e.get("uncertain") else "")


def _downloaded(e: Event) -> str:
    return f"kept a copy: {e['path']}" if e.get("path") else f"no local copy of {_name(e.get('url'))}: {e.get('error')}"


_DESCRIBE: Dict[str, Callable[[Event], str]] = {
    "submitted": _submitted,
    "waiter_started": lambda e: f"background waiter started (pid {e.get('pid')})",
    "poll_answered": _polled,
    "completed": lambda e: _count(len(e.get("urls") or ()), "result") + ": "
                           + ", ".join(_name(u) for u in e.get("urls") or ()),
    "failed": lambda e: str(e.get("reason") or "no reason given"),
    "timed_out": lambda e: f"gave up after {_count(int(e.get('polls') or 0), 'poll')} "
                           f"({float(e.get('waited_seconds') or 0):.0f} s); it may still finish upstream",
    "resumed": lambda e: str(e.get("reason") or "waiting again"),
    "delivery_attempted": lambda e: f"sending {_name(e.get('url'))} to {e.get('channel')} {e.get('chat_id')}",
    "delivery_succeeded": _sent,
    "delivery_failed": lambda e: f"{_name(e.get('url'))} not sent: {e.get('error')}"
                                 + (" (will retry)" if e.get("transient") else ""),
    "delivered": lambda e: str(e.get("note") or "every result is in the chat"),
    "notice_sent": lambda e: f"told the chat it {'failed' if e.get('kind') == 'failed' else 'is still generating'}",
    "downloaded": _downloaded,
}


def describe(event: Event) -> str:
    """One event's meaning in a few words (an unknown type shows its fields)."""
    known = _DESCRIBE.get(str(event.get("type")))
    if known is not None:
        try:
            return known(event)
        except (TypeError, ValueError, KeyError):
            pass  # a field of an unexpected shape: fall back to the raw fields
    return "  ".join(f"{k}={v}" for k, v in event.items()
                     if k not in ("type", "at", "seq", "ignored") and v not in (None, "", [], {}))


def _parse(at: Any) -> Optional[datetime]:
    try:
        return datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    except ValueError:
        return None


def _since(start: Optional[datetime], at: Optional[datetime]) -> str:
    if start is None or at is None:
        return ""
    seconds = (at - start).total_seconds()
    if seconds < 120:
        return f"+{seconds:.1f} s"
    if seconds < 7200:
        return f"+{seconds / 60:.0f} min"
    return f"+{seconds / 3600:.1f} h"


def event_lines(events: Sequence[Event]) -> List[str]:
    """The timeline: `#seq  date time  +elapsed  type  what happened`, ignored events flagged."""
    times = [_parse(e.get("at")) for e in events]
    start = next((t for t in times if t is not None), None)
    lines = []
    for event, at in zip(events, times):
        when = str(event.get("at") or "?")[:19].replace("T", " ")
        flag = f"  [ignored: {event['ignored']}]" if event.get("ignored") else ""
        lines.append(f"  #{event.get('seq', '?')!s:<3} {when:<19} {_since(start, at):>9}  "
                     f"{event.get('type')!s:<19} {describe(event)}{flag}")
    return lines
