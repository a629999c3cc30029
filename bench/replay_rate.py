"""Replay rate: sessions/s and events/s for `SessionStore.load` over real journal files.

Usage: python bench/replay_rate.py [--sessions N] [--runs R] [--url postgresql://...]
Builds N delivered sessions (12 events each) in a temporary NEXU_HOME (or, with --url, in that
database's journal), then times (a) pure replay of already-read entries and (b) load() from the
journal, median of R runs. bench/store_rate.py runs JSONL and PostgreSQL side by side.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Dict, Tuple

from common import open_store
from libtv_fsm import events as ev
from libtv_fsm.replay import replay
from libtv_fsm.store import SessionStore


def build(store: SessionStore, n: int) -> int:
    t0 = ev.now()
    url = "https://libtv-res.liblib.art/claw/{}.mp4"
    per = 0
    for i in range(n):
        at = t0 + timedelta(seconds=i)
        events = [
            ev.Submitted(at=at, project_uuid=f"p{i}", project_url="https://www.liblib.tv/canvas?projectId=p", text="a cat",
                         message="a cat, video ratio 16:9", auth_mode="nexu_gateway", after_seq=1,
                         delivery=ev.Delivery("feishu", "oc_x")),
            ev.WaiterStarted(at=at, pid=1),
        ]
        events += [ev.PollAnswered(at=at, after_seq=1, last_seq=1, new_messages=0) for _ in range(4)]
        events += [
            ev.PollAnswered(at=at, after_seq=1, last_seq=3, new_messages=2, urls=(url.format(i),), last_result_seq=2, last_assistant_seq=3),
            ev.Completed(at=at, urls=(url.format(i),)),
            ev.DeliveryAttempted(at=at, url=url.format(i), channel="feishu", chat_id="oc_x"),
            ev.DeliverySucceeded(at=at, url=url.format(i), sent_as="video", message_id="m"),
            ev.Delivered(at=at),
            ev.Downloaded(at=at, url=url.format(i), path="/tmp/x.mp4"),
        ]
        store.journal.append(f"s{i:05d}", events, 0)
        per = len(events)
    return per


def rates(store: SessionStore, sessions: int, runs: int) -> Tuple[int, int, Dict[str, float]]:
    """(sessions, events each, median seconds per pass over all of them): "replay" in memory, "load" from the journal."""
    per = build(store, sessions)
    ids = store.journal.session_ids()
    reads = [(sid, store.journal.read(sid).entries) for sid in ids]
    pure, disk = [], []
    for _ in range(runs):
        t = time.perf_counter()
        for sid, entries in reads:
            replay(sid, entries)
        pure.append(time.perf_counter() - t)
        t = time.perf_counter()
        for sid in ids:
            store.load(sid)
        disk.append(time.perf_counter() - t)
    return len(ids), per, {"replay": statistics.median(pure), "load": statistics.median(disk)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--url", help="postgresql://... : load from that database's journal instead of JSONL files")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        store = open_store(home, args.url)
        n, per, took = rates(store, args.sessions, args.runs)
        store.journal.close()
    print(f"{n} sessions x {per} events, median of {args.runs} runs")
    print(f"{'what':<28}{'sessions/s':>12}{'events/s':>12}")
    for name, key in (("replay (entries in memory)", "replay"), ("load (read + parse + replay)", "load")):
        print(f"{name:<28}{n / took[key]:>12,.0f}{n * per / took[key]:>12,.0f}")


if __name__ == "__main__":
    main()
