"""The journal on both stores, side by side in one run: JSONL files against PostgreSQL (CONTRACT 9).

Usage: LIBTV_TEST_DATABASE_URL=postgresql://... python bench/store_rate.py [--url URL] [--appends 200]
       [--sessions 1000] [--runs 3]
(`eval "$(tests/toolchain/postgres.sh start)"` gives a database; loopback.) The same measurements
run on a fresh JSONL home and on a fresh schema of the database (dropped at the end):
journal_rate.rates (SessionStore.record appends/s from 1 process, from 8 processes on their own
sessions, from 8 on one session) and replay_rate.rates (load: read + parse + replay, sessions/s
and events/s). The stores alternate (JSONL, PG, JSONL, PG...) --rounds times and each figure is
the median of its rounds, so a busy machine slows both alike; the ratio is PG / JSONL. JSONL
fsyncs every append; the test server runs with fsync=off (tests/toolchain/postgres.sh), so the
header prints the server's fsync: `ALTER SYSTEM SET fsync = on; SELECT pg_reload_conf();` first
for a like-for-like figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import journal_rate  # noqa: E402
import replay_rate  # noqa: E402
from common import database_url, open_store, pg_schema  # noqa: E402


def one_round(url: Optional[str], appends: int, sessions: int, runs: int) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        got = journal_rate.rates(home, url, appends)
    with tempfile.TemporaryDirectory() as home:
        store = open_store(home, url)
        n, per, took = replay_rate.rates(store, sessions, runs)
        store.journal.close()
    got["load_sessions"] = n / took["load"]
    got["load_events"] = n * per / took["load"]
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    if not database_url(ap):
        return 2
    a = ap.parse_args()
    import psycopg

    with psycopg.connect(a.url) as conn:  # JSONL fsyncs every append; say whether the server does
        server = ", ".join(f"{k}={conn.execute(f'SHOW {k}').fetchone()[0]}"  # type: ignore[index]
                           for k in ("fsync", "synchronous_commit", "shared_buffers"))
    started, load0 = time.monotonic(), os.getloadavg()[0]
    rounds: Dict[str, List[Dict[str, float]]] = {"jsonl": [], "pg": []}
    for _ in range(a.rounds):
        rounds["jsonl"].append(one_round(None, a.appends, a.sessions, a.runs))
        with pg_schema(a.url) as url:  # a fresh schema each round, as a fresh home
            rounds["pg"].append(one_round(url, a.appends, a.sessions, a.runs))
    w = journal_rate.WRITERS
    lines = [
        ("`SessionStore.record`, 1 process: appends/s", "one"),
        (f"`SessionStore.record`, {w} processes on their own sessions: appends/s in total", "own"),
        (f"`SessionStore.record`, {w} processes on one session: appends/s in total", "shared"),
        (f"`load` ({a.sessions} sessions x 12 events, read + parse + replay): sessions/s", "load_sessions"),
        ("`load`: events/s", "load_events"),
    ]

    def med(store: str, key: str) -> Optional[float]:
        ok = [r[key] for r in rounds[store] if r[key] == r[key]]  # NaN: a writer failed in that round
        return statistics.median(ok) if ok else None

    def cell(store: str, key: str) -> str:
        m, bad = med(store, key), sum(1 for r in rounds[store] if r[key] != r[key])
        return ("failed" if m is None else f"{m:,.0f}") + (f" (writers failed in {bad} of {a.rounds} rounds)" if bad else "")

    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, medians of {a.rounds} "
          f"alternating rounds, {time.monotonic() - started:.0f} s, 1-min load {load0:.1f} -> {os.getloadavg()[0]:.1f}; "
          f"PostgreSQL {server} (loopback)")
    print()
    print("| what | JSONL | PostgreSQL | PG / JSONL |")
    print("|---|---|---|---|")
    for what, key in lines:
        j, p = med("jsonl", key), med("pg", key)
        print(f"| {what} | {cell('jsonl', key)} | {cell('pg', key)} | {f'{p / j:.2f}x' if j and p else '-'} |")
    print()
    for store, rs in rounds.items():
        print(f"rounds {store}: " + "; ".join(", ".join(f"{k} {v:,.0f}" for k, v in r.items()) for r in rs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
