"""Copying every session from one journal to another (JSONL files <-> PostgreSQL), re-runnable without duplicates.

For each session of the source: the events the target already has must be exactly the source's
first ones (compared as records, the JSON a line or row holds); only the events past them are
appended, with the target's version as the expected one, so a second run appends nothing and a
writer racing the copy makes it refuse rather than interleave. A session whose target differs is
left untouched and reported. Events keep their order and content; their seqs are the target's
(contiguous), so a source line that could not be read is reported, not carried over.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import attr

from libtv_fsm.errors import ConcurrencyConflict
from libtv_fsm.events import to_record
from libtv_fsm.journal.base import AnyEvent, Journal


@attr.frozen
class Copied:
    """What the copy did for one session: ``appended`` new events after the ``kept`` the target had; ``problem`` if refused."""

    session_id: str
    appended: int = 0
    kept: int = 0
    skipped: int = 0
    problem: str = ""


def copy_journal(source: Journal, target: Journal) -> List[Copied]:
    """Bring every session of ``source`` into ``target``; one :class:`Copied` per session, in session-id order."""
    return [copy_session(source, target, sid) for sid in source.session_ids()]


def copy_session(source: Journal, target: Journal, session_id: str) -> Copied:
    read = source.read(session_id)
    events = [event for _, event in read.entries]
    ours = [_record(e) for e in events]
    there = target.read(session_id)
    theirs = [_record(e) for _, e in there.entries]
    if there.skipped:
        return Copied(session_id, problem=f"its journal in the target has {there.skipped} unreadable event(s); "
                                          "nothing copied")
    if len(theirs) > len(ours) or theirs != ours[: len(theirs)]:
        first = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        return Copied(session_id, kept=len(theirs), problem=f"the target already holds a different history (from "
                                                            f"its event {first + 1} on); nothing copied")
    new: Sequence[Any] = events[len(theirs):]  # UnknownEvents too: append writes to_record of each
    if new:
        try:
            target.append(session_id, new, there.version)
        except ConcurrencyConflict:
            return Copied(session_id, kept=len(theirs), problem="it changed in the target during the copy; run it again")
    return Copied(session_id, appended=len(new), kept=len(theirs), skipped=read.skipped)


def _record(event: AnyEvent) -> Dict[str, Any]:
    # to_record gives an UnknownEvent (a newer version's event) its raw record back: copied as it is.
    return to_record(event)  # type: ignore[arg-type]
