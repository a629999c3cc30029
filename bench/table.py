"""The whole performance budget in one table: every measurement of bench/, PASS/FAIL against its target.

Usage: bench/run [--quick]   (markdown on stdout; also written to bench/latest.md)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Row, markdown  # noqa: E402


def sections(quick: bool) -> List[Callable[[], List[Row]]]:
    import cli_latency
    import history_scale
    import journal_rate
    import peer_compare
    import upload_rss
    import waiters
    import worker_scale

    def against_peer() -> List[Row]:
        peer = peer_compare.peer_script(None)
        if peer is None:
            return [Row("against the peer (Nexu's own skill): not measured", "", note=peer_compare.HOW_TO_GET_PEER)]
        return peer_compare.measure(peer, runs=7 if quick else 15)

    return [
        lambda: cli_latency.measure(runs=7 if quick else 15),
        upload_rss.measure,
        lambda: history_scale.measure(sessions=10_000, runs=3 if quick else 7),
        lambda: waiters.measure(sessions=50, ready=20.0, spread=10.0, first=1.0, cap=4.0, label="50 waiters"),
        lambda: waiters.measure(sessions=20, ready=6.0, spread=6.0, first=0.5, cap=2.0, label="detection, 20 sessions"),
        lambda: worker_scale.measure(sessions=100 if quick else 200, ready=40.0, spread=10.0, first=1.0, cap=4.0),
        lambda: journal_rate.measure(appends=100 if quick else 200),
        against_peer,
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (noisier)")
    quick = ap.parse_args().quick
    started = time.monotonic()
    rows: List[Row] = []
    for measure in sections(quick):
        rows.extend(measure())
        print(f"... {len(rows)} rows, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    text = markdown(rows, f"`bench/run{' --quick' if quick else ''}`", started)
    print(text)
    (Path(__file__).resolve().parent / "latest.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
