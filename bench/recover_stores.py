"""`recover --json` on the same sessions in a JSONL home and in PostgreSQL, side by side in one run.

Usage: LIBTV_TEST_DATABASE_URL=postgresql://... python bench/recover_stores.py [--sessions 10000] [--runs 5]
(`eval "$(tests/toolchain/postgres.sh start)"` gives a database; loopback.) A home is filled as
history_scale.py fills it (no API key, so nothing goes upstream; 1% of the sessions still
waiting), then copied into a fresh schema with `journal import`. The first `recover --json` of
each is reported on its own (the JSONL one builds its snapshots); the timed runs alternate.
With the database, every session is read and replayed (there is no snapshot index); whether a
waiter runs is one look at pg_locks for the sessions that need none, one per session otherwise.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from common import CLI, clean_env, database_url, fill_home, median_ms, pg_schema, run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    if not database_url(ap):
        return 2
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, pg_schema(a.url) as url:
        home = Path(tmp) / "home"
        fill_home(home, a.sessions, in_flight=max(1, a.sessions // 100))
        envs = {"jsonl": clean_env(home, LIBTV_SKIP_BACKGROUND_WAITER="1"),
                "pg": clean_env(Path(tmp) / "pg-home", LIBTV_SKIP_BACKGROUND_WAITER="1", LIBTV_JOURNAL_URL=url)}
        started = time.perf_counter()
        run(CLI + ["journal", "import", "--from", str(home)], envs["pg"])
        print(f"journal import of {a.sessions} sessions into PostgreSQL: {time.perf_counter() - started:.1f} s")
        first = {name: run(CLI + ["recover", "--json"], env) for name, env in envs.items()}
        times: Dict[str, List[float]] = {name: [] for name in envs}
        for _ in range(a.runs):
            for name, env in envs.items():
                times[name].append(run(CLI + ["recover", "--json"], env))
    jsonl, pg = median_ms(times["jsonl"]), median_ms(times["pg"])
    print(f"| `recover --json`, {a.sessions} sessions | JSONL | PostgreSQL | PG / JSONL |")
    print("|---|---|---|---|")
    print(f"| first run | {first['jsonl'] * 1000:,.0f} ms | {first['pg'] * 1000:,.0f} ms | {first['pg'] / first['jsonl']:.2f}x |")
    print(f"| median of {a.runs} | {jsonl:,.0f} ms | {pg:,.0f} ms | {pg / jsonl:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
