"""CLI latency: create-session (against the simulator) and the local commands, each against `import json, urllib.request`.

Usage: python bench/cli_latency.py [--runs N]
Every round runs the baseline and then each command once, so a noisy neighbour slows
all of them alike; the ratio is of medians over the rounds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

from common import BASELINE, CLI, Row, clean_env, fill_home, median_ms, run

TARGET_CREATE, TARGET_LOCAL = 1.6, 1.3


def measure(runs: int = 15) -> List[Row]:
    from libtv_fsm.sim import Simulator

    with tempfile.TemporaryDirectory() as tmp, Simulator() as sim:
        sim.set_key(Simulator.GATEWAY_KEY, remaining_uses=10_000, max_uses=10_000)
        local = Path(tmp) / "local"  # no key: history and recover never touch the network
        ids = fill_home(local, 10, in_flight=2)
        online = Path(tmp) / "online"
        online.mkdir()
        local_env = clean_env(local)
        online_env = clean_env(online, LIBTV_SKIP_BACKGROUND_WAITER="1", **sim.env())
        run(CLI + ["setup", "--api-key", Simulator.GATEWAY_KEY], online_env)
        commands: Dict[str, tuple] = {
            "create-session": (CLI + ["create-session", "a cat surfing", "--channel", "feishu", "--chat-id", "oc_bench"], online_env),
            "recover --json": (CLI + ["recover", "--json"], local_env),
            "history --json": (CLI + ["history", ids[0], "--json"], local_env),
            "history": (CLI + ["history", ids[-1]], local_env),
        }
        cold = {name: run(*commands[name]) for name in ("recover --json", "history --json")}  # builds the snapshots
        times: Dict[str, List[float]] = {"baseline": [], **{name: [] for name in commands}}
        for _ in range(runs):
            times["baseline"].append(run(BASELINE, local_env))
            for name, (args, env) in commands.items():
                times[name].append(run(args, env))
    base = median_ms(times["baseline"])
    rows = [Row("baseline: python -c 'import json, urllib.request'", f"{base:.1f} ms", note=f"median of {runs}")]
    for name in commands:
        ms = median_ms(times[name])
        limit = TARGET_CREATE if name == "create-session" else TARGET_LOCAL
        rows.append(Row(f"CLI `{name}`" + (" (sim, no waiter)" if name == "create-session" else " (10 sessions, no key)"),
                        f"{ms:.1f} ms = {ms / base:.2f}x", f"<= {limit}x", ms / base <= limit, f"median of {runs}"))
    for name, seconds in cold.items():
        rows.append(Row(f"CLI `{name}`, first run (snapshots built)", f"{seconds * 1000:.0f} ms"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    for row in measure(ap.parse_args().runs):
        print(f"{row['verdict']:<5} {row['what']:<55} {row['figure']:<22} {row['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
