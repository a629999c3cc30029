"""The background waiter's polling, seen from upstream: what it asks for, and when it gives up.

Real `wait-and-deliver` subprocesses against the loopback simulator; the simulator's request log
is what upstream saw.
"""
from __future__ import annotations

import subprocess
from typing import List, Optional

from faultkit import run_waiter, skill, submit  # noqa: F401
from libtv_fsm import SessionStore


def polls_of(sim, sid: str, since: int = 0) -> List[Optional[str]]:
    """The `afterSeq` of every poll of the session (GET of the session itself), from request ``since`` on."""
    path = f"/libtv/v1/session/{sid}"
    return [r.query.get("afterSeq") for r in sim.requests[since:] if r.method == "GET" and r.path == path]


def turn_events(home, sid: str, turn: int):  # type: ignore[no-untyped-def]
    """(the Submitted event, the PollAnswered events) of one turn of the session, from its journal."""
    entries = SessionStore(home).load(sid).events
    starts = [i for i, e in enumerate(entries) if e.type == "submitted"]
    begin = starts[turn - 1]
    end = starts[turn] if turn < len(starts) else len(entries)
    mine = entries[begin:end]
    return mine[0].event, [e.event for e in mine if e.type == "poll_answered"]


def test_every_poll_asks_only_for_messages_after_the_last_one_seen(skill, home, sim):
    """CONTRACT 2: poll with `afterSeq`. Each poll names the last seq the one before it brought; a continued
    session's first poll names the submission point, so upstream never re-sends an earlier turn."""
    sid = submit(skill, "a storyboard [sim:intermediate]")
    assert run_waiter(skill, sid).code == 0
    submitted, answered = turn_events(home, sid, 1)
    asked = polls_of(sim, sid)
    assert len(asked) >= 3, asked
    assert asked == [str(submitted.after_seq)] + [str(p.last_seq) for p in answered[:-1]], (
        f"polls asked afterSeq={asked}; the seqs seen before each were "
        f"{[submitted.after_seq] + [p.last_seq for p in answered[:-1]]}")
    assert int(asked[-1]) > 0

    before = len(sim.requests)
    ran = skill("create-session", "the same at night [sim:intermediate]", "--session-id", sid,
                env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code == 0, ran
    assert run_waiter(skill, sid).code == 0
    submitted, answered = turn_events(home, sid, 2)
    posted = max(i for i, r in enumerate(sim.requests) if r.method == "POST" and r.path == "/libtv/v1/session")
    asked = polls_of(sim, sid, since=posted)
    assert before < posted and submitted.after_seq > 0
    assert asked[0] == str(submitted.after_seq), (
        f"the continued turn's first poll asked afterSeq={asked[0]}, not its submission point {submitted.after_seq}")
    assert asked == [str(submitted.after_seq)] + [str(p.last_seq) for p in answered[:-1]], asked


def test_the_wait_timeout_alone_ends_a_waiter_whose_job_never_finishes(skill, home, sim):
    """LIBTV_WAIT_TIMEOUT_SECONDS with no LIBTV_MAX_POLLS: the waiter gives up after that long (exit 4)."""
    sid = submit(skill, "an epic [sim:never]")
    env = {"LIBTV_WAIT_TIMEOUT_SECONDS": "2", "LIBTV_MAX_POLLS": ""}
    try:
        ran = run_waiter(skill, sid, env=env, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError("the waiter was still polling 30 s into a 2 s wait timeout") from None
    assert ran.code == 4, ran
    session = SessionStore(home).load(sid)
    assert session.state == "timeout"
    [timed_out] = [e.event for e in session.events if e.type == "timed_out"]
    assert 1.9 <= timed_out.waited_seconds < 30, timed_out
    assert timed_out.polls > 1 and len(polls_of(sim, sid)) == timed_out.polls, "it should have polled until the time ran out"
