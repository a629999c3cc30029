"""N sessions in flight on the home worker against the same N on the task queue, side by side in one run.

Usage: LIBTV_TEST_DATABASE_URL=postgresql://... python bench/worker_vs_queue.py [--sessions 200] [--ready 40]
       [--spread 10] [--first 1] [--cap 4] [--concurrency 8]
(`eval "$(tests/toolchain/postgres.sh start)"` gives a database; loopback only.) Both halves are
worker_scale.measure with the same arguments and the same concurrency: first the home worker
(JSONL journal, the worker started by the first create-session), then the queue (a fresh schema
of the database, one `libtv-video worker` process running queue workers, started first). Worker
RSS, CPU per poll, polls/s with all in flight, detection latency and delivered-exactly-once are
measured the same way for both (see worker_scale.py); the schema is dropped at the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker_scale  # noqa: E402
from common import database_url, pg_schema  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--ready", type=float, default=40.0)
    ap.add_argument("--spread", type=float, default=10.0)
    ap.add_argument("--first", type=float, default=1.0)
    ap.add_argument("--cap", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=8)
    if not database_url(ap):
        return 2
    a = ap.parse_args()
    args = (a.sessions, a.ready, a.spread, a.first, a.cap)
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    home = worker_scale.measure(*args, label="home worker", concurrency=a.concurrency)
    with pg_schema(a.url) as url:
        queue = worker_scale.measure(*args, label="queue", url=url, concurrency=a.concurrency)
    print(f"{started}, {os.cpu_count()} CPUs, {a.sessions} sessions each, concurrency {a.concurrency}")
    print()
    print("| what | home worker (JSONL) | queue (PostgreSQL, 1 worker process) |")
    print("|---|---|---|")
    for h, q in zip(home, queue):
        what = h["what"].split(": ", 1)[1]
        print(f"| {what} | {h['verdict']} {h['figure']} | {q['verdict']} {q['figure']} |")
    print()
    for h, q in zip(home, queue):
        print(f"- {h['what'].split(': ', 1)[1]}: home: {h['note']}; queue: {q['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
