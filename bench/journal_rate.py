"""Journal appends/s: one writer, and 8 writer processes at once (each its own session, then all on one).

Usage: python bench/journal_rate.py [--appends N]
Every append goes through SessionStore.record (replay, check against the machine, append
under the session's lock with the expected version, fsync), as the waiter writes.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from typing import List

from common import Row

WRITERS = 8


def _submit(store, sid: str) -> None:  # type: ignore[no-untyped-def]
    from libtv_fsm import events as ev

    store.record(sid, ev.Submitted(at=ev.now(), project_uuid="p", project_url="", text="t", message="t", auth_mode="nexu_gateway"))


def _write(home: str, sid: str, appends: int, start: float) -> None:
    from libtv_fsm import events as ev
    from libtv_fsm.store import SessionStore

    store = SessionStore(home)
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(appends):
        # A poll while polling: always valid, so every try is a real append (a conflict retries inside record).
        store.record(sid, ev.PollAnswered(at=ev.now(), after_seq=0, last_seq=0, new_messages=0))


def _parallel(home: str, sids: List[str], appends: int) -> float:
    ctx = multiprocessing.get_context("fork")
    start = time.time() + 0.5  # all start together, after their imports
    procs = [ctx.Process(target=_write, args=(home, sid, appends, start)) for sid in sids]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    return len(sids) * appends / (time.time() - start)


def measure(appends: int = 200) -> List[Row]:
    from libtv_fsm.store import SessionStore

    with tempfile.TemporaryDirectory() as home:
        store = SessionStore(home)
        for sid in ["one", "shared"] + [f"own{i}" for i in range(WRITERS)]:
            _submit(store, sid)
        one = _parallel(home, ["one"], appends)
        own = _parallel(home, [f"own{i}" for i in range(WRITERS)], appends // 2)
        shared = _parallel(home, ["shared"] * WRITERS, appends // 4)
        assert store.load("shared").version == 1 + WRITERS * (appends // 4)  # none lost, none doubled
    return [
        Row("journal: 1 writer, appends/s", f"{one:,.0f}/s", note="SessionStore.record: replay + check + locked append + fsync"),
        Row(f"journal: {WRITERS} writer processes, own sessions", f"{own:,.0f}/s in total"),
        Row(f"journal: {WRITERS} writer processes, one session", f"{shared:,.0f}/s in total",
            note="optimistic concurrency: a writer that lost the race replays and retries"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--appends", type=int, default=200)
    for row in measure(ap.parse_args().appends):
        print(f"{row['what']:<50} {row['figure']:<18} {row['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
