"""History scale: `recover --json` and `history` with 10,000 sessions in the home, against the same with 10.

Usage: python bench/history_scale.py [--sessions N] [--runs R]
Homes have no API key (no network) and most sessions final; every session has its run-lock
file, as a home whose waiters have come and gone does. The first run builds the snapshots and
is reported on its own; the timed runs alternate between the two homes.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from common import CLI, Row, clean_env, fill_home, median_ms, run

LIMIT_SECONDS, LIMIT_RATIO = 1.0, 3.0


def measure(sessions: int = 10_000, runs: int = 7) -> List[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        homes: Dict[int, Path] = {}
        ids: Dict[int, List[str]] = {}
        for n in (10, sessions):
            homes[n] = Path(tmp) / f"home{n}"
            ids[n] = fill_home(homes[n], n, in_flight=max(1, n // 100))
        commands = {"recover --json": lambda n: ["recover", "--json"], "history": lambda n: ["history", ids[n][n // 2]]}
        cold = {n: run(CLI + ["recover", "--json"], clean_env(homes[n])) for n in homes}
        # One session changes: only it is replayed, the other entries come from the index.
        with open(homes[sessions] / "libtv-journal" / f"{ids[sessions][-1]}.jsonl", "a") as fh:
            fh.write('{"seq":4,"type":"failed","at":"2026-01-01T00:00:00.000000Z","reason":"bench"}\n')
        one_changed = run(CLI + ["recover", "--json"], clean_env(homes[sessions]))
        times: Dict[str, Dict[int, List[float]]] = {name: {n: [] for n in homes} for name in commands}
        for _ in range(runs):
            for name, args in commands.items():
                for n in homes:
                    times[name][n].append(run(CLI + args(n), clean_env(homes[n])))
    rows = []
    for name in commands:
        small, big = median_ms(times[name][10]), median_ms(times[name][sessions])
        ok = big < LIMIT_SECONDS * 1000 and big / small <= LIMIT_RATIO
        rows.append(Row(f"`{name}` with {sessions:,} sessions (vs 10)", f"{big:.0f} ms vs {small:.0f} ms = {big / small:.2f}x",
                        f"< {LIMIT_SECONDS:g} s and <= {LIMIT_RATIO:g}x", ok, f"median of {runs}, snapshots current"))
    rows.append(Row(f"`recover --json` with {sessions:,} sessions, first run (every snapshot built)",
                    f"{cold[sessions] * 1000:.0f} ms", note="once per home, or after an upgrade"))
    rows.append(Row(f"`recover --json` with {sessions:,} sessions, one journal changed", f"{one_changed * 1000:.0f} ms",
                    note="replays that one session and rewrites the index"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    for row in measure(args.sessions, args.runs):
        print(f"{row['verdict']:<5} {row['what']:<70} {row['figure']:<28} {row['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
