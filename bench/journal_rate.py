"""Journal appends/s: one writer, and 8 writer processes at once (each its own session, then all on one).

Usage: python bench/journal_rate.py [--appends N] [--url postgresql://...]
Every append goes through SessionStore.record (replay, check against the machine, append
under the session's lock with the expected version, fsync), as the waiter writes. With --url,
the journal is that database (SessionStore.from_url) instead of the home's JSONL files;
bench/store_rate.py runs both side by side.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from typing import List, Optional

from common import Row, open_store

WRITERS = 8


class WritersFailed(RuntimeError):
    """A writer process raised (e.g. a conflict it could not resolve): no rate for that measurement."""


def _submit(store, sid: str) -> None:  # type: ignore[no-untyped-def]
    from libtv_fsm import events as ev

    store.record(sid, ev.Submitted(at=ev.now(), project_uuid="p", project_url="", text="t", message="t", auth_mode="nexu_gateway"))


def _write(home: str, url: Optional[str], sid: str, appends: int, start: float) -> None:
    from libtv_fsm import events as ev

    store = open_store(home, url)
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(appends):
        # A poll while polling: always valid, so every try is a real append (a conflict retries inside record).
        store.record(sid, ev.PollAnswered(at=ev.now(), after_seq=0, last_seq=0, new_messages=0))
    store.journal.close()


def _parallel(home: str, url: Optional[str], sids: List[str], appends: int) -> float:
    ctx = multiprocessing.get_context("fork")
    start = time.time() + 0.5  # all start together, after their imports
    procs = [ctx.Process(target=_write, args=(home, url, sid, appends, start)) for sid in sids]
    for p in procs:
        p.start()
    for p in procs:
        p.join()  # all of them, before anything is checked: none is left writing
    failed = sum(1 for p in procs if p.exitcode != 0)
    if failed:
        raise WritersFailed(f"{failed} of {len(procs)} writer processes raised (traceback above)")
    return len(sids) * appends / (time.time() - start)


def rates(home: str, url: Optional[str] = None, appends: int = 200) -> "dict[str, float]":
    """Appends/s into a fresh ``home`` (or database ``url``): 1 writer, WRITERS on their own sessions, WRITERS on one."""
    store = open_store(home, url)
    for sid in ["one", "shared"] + [f"own{i}" for i in range(WRITERS)]:
        _submit(store, sid)
    store.journal.close()  # the writers are forked: none inherits an open connection
    one = _parallel(home, url, ["one"], appends)
    own = _parallel(home, url, [f"own{i}" for i in range(WRITERS)], appends // 2)
    try:
        shared = _parallel(home, url, ["shared"] * WRITERS, appends // 4)
    except WritersFailed as e:
        print(f"{WRITERS} writers on one session: {e}", file=sys.stderr)
        shared = float("nan")  # reported as failed, not as a rate
    else:
        store = open_store(home, url)
        assert store.load("shared").version == 1 + WRITERS * (appends // 4)  # none lost, none doubled
        store.journal.close()
    return {"one": one, "own": own, "shared": shared}


def measure(appends: int = 200, url: Optional[str] = None) -> List[Row]:
    with tempfile.TemporaryDirectory() as home:
        r = rates(home, url, appends)
    one, own, shared = r["one"], r["own"], r["shared"]
    return [
        Row("journal: 1 writer, appends/s", f"{one:,.0f}/s", note="SessionStore.record: replay + check + locked append + fsync"),
        Row(f"journal: {WRITERS} writer processes, own sessions", f"{own:,.0f}/s in total"),
        Row(f"journal: {WRITERS} writer processes, one session", f"{shared:,.0f}/s in total",
            note="optimistic concurrency: a writer that lost the race replays and retries"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--url", help="postgresql://... : measure that database's journal instead of JSONL files")
    a = ap.parse_args()
    for row in measure(a.appends, a.url):
        print(f"{row['what']:<50} {row['figure']:<18} {row['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
