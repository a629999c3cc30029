"""Waiters at scale and detection latency: many sessions in flight against the simulator, each with its detached waiter.

This measures the per-session waiters (one `wait-and-deliver` process per session), so it runs
create-session with LIBTV_WAITER=process: since CONTRACT 8 create-session starts the home worker
by default, and without it there would be no waiter process here to measure. The home worker
(one process for every session) is measured by bench/worker_scale.py.

Usage: python bench/waiters.py [--sessions 50] [--ready 20] [--first 1] [--cap 4]
Polling is shortened (LIBTV_POLL_INTERVAL_SECONDS=--first, cap --cap) so a run takes about a
minute; the schedule's shape (x1.5 per poll, capped) is the production one. Each session is
ready --ready to --ready+spread seconds after its creation on the simulator's clock.
"""
from __future__ import annotations

import os
import random
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Tuple

from common import CLI, Row, clean_env, percentile, run, schedule_main

RSS_LIMIT_MIB = 20.0


def _memory(home: Path) -> Tuple[int, float, float, float]:
    """(waiter processes, total RSS, PSS, USS in MiB) of the waiters working in ``home`` (their cwd)."""
    count, rss, pss, uss = 0, 0, 0, 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if b"wait-and-deliver" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            if os.readlink(f"/proc/{pid}/cwd") != str(home):
                continue
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        field = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
        count += 1
        rss += field["Rss"]
        pss += field["Pss"]
        uss += field["Private_Clean"] + field["Private_Dirty"]
    return count, rss / 1024, pss / 1024, uss / 1024


def poll_times(first: float, cap: float, horizon: float) -> List[float]:
    """When the schedule polls, in seconds after its first poll (backoff.py, the waiter's own schedule)."""
    from libtv_fsm.backoff import delay

    times, t, i = [0.0], 0.0, 0
    while t <= horizon:
        t += delay(i, first, cap)
        times.append(t)
        i += 1
    return times


def measure(sessions: int = 50, ready: float = 20.0, spread: float = 10.0, first: float = 1.0, cap: float = 4.0,
            label: str = "waiters") -> List[Row]:
    from libtv_fsm.sim import Simulator
    from libtv_fsm.sim.scenarios import Scenario

    rng = random.Random(6)
    readies = [ready + rng.uniform(0, spread) for _ in range(sessions)]
    with tempfile.TemporaryDirectory() as tmp, Simulator() as sim:
        sim.set_key(Simulator.GATEWAY_KEY, remaining_uses=10_000, max_uses=10_000)
        home = Path(tmp) / "home"
        home.mkdir()
        env = clean_env(home, LIBTV_POLL_INTERVAL_SECONDS=str(first), LIBTV_MAX_POLL_INTERVAL_SECONDS=str(cap),
                        LIBTV_WAIT_TIMEOUT_SECONDS="600", LIBTV_WAITER="process", **sim.env())
        run(CLI + ["setup", "--api-key", Simulator.GATEWAY_KEY], env)
        chats = [f"oc_bench_{i:03d}" for i in range(sessions)]
        # One scenario per session, picked by the "[sim:...]" tag in its words.
        for i, seconds in enumerate(readies):
            sim.scenarios[f"bench{i}"] = Scenario(ready_after_seconds=seconds)

        def submit(i: int) -> None:
            run(CLI + ["create-session", f"clip {i} [sim:bench{i}]", "--channel", "feishu", "--chat-id", chats[i]], env)

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(submit, range(sessions)))
        submit_seconds = time.monotonic() - started
        peak = (0, 0.0, 0.0, 0.0)
        deadline = time.monotonic() + ready + spread + 120
        while time.monotonic() < deadline:
            sample = _memory(home)
            if sample[1] > peak[1]:
                peak = sample
            if len(sim.feishu.messages) >= sessions and sample[0] == 0:
                break
            time.sleep(0.5)
        with sim.lock:
            by_id = {s.id: s for s in sim.sessions.values()}
            requests = list(sim.requests)
    sent_at: Dict[str, float] = {}
    for r in requests:
        if r.path == "/open-apis/im/v1/messages" and r.status == 200 and isinstance(r.json, dict):
            sent_at.setdefault(r.json.get("receive_id"), r.at)
    latencies, polls, allowed_excess, per_session = [], [], [], []
    for sid, s in by_id.items():
        turn = s.turns[-1]
        chat = next(c for i, c in enumerate(chats) if f"[sim:bench{i}]" in s.messages[0]["content"])
        ready_at = turn.started_at + turn.scenario.ready_after_seconds
        gets = sorted(r.at for r in requests if r.method == "GET" and r.path.endswith(f"/session/{sid}"))
        polls.append(len(gets))
        per_session.append(sum(1 for r in requests if sid in r.path) + 1)  # + its create POST
        if chat in sent_at:
            latencies.append(sent_at[chat] - ready_at)
        # The schedule, from this waiter's first poll: the first poll at or after "ready" is the one that sees it.
        schedule = poll_times(first, cap, ready_at - gets[0] + cap + 1) if gets else []
        due = next((i + 1 for i, t in enumerate(schedule) if gets and gets[0] + t >= ready_at), None)
        allowed_excess.append(len(gets) - due if due else 0)
    feishu = sum(1 for r in requests if r.path.startswith("/open-apis/"))
    cdn = sum(1 for r in requests if r.path.startswith("/cdn/"))
    theory = [t_next - t_ready for t_ready, t_next in theoretical(readies, first, cap)]
    n, rss, pss, uss = peak
    delivered = len(latencies)
    return [
        Row(f"{label}: {sessions} sessions in flight, all waiters' memory (peak sample, {n} processes alive)",
            f"RSS {rss:.0f} MiB = {rss / max(n, 1):.1f}/session; PSS {pss / max(n, 1):.1f}; USS {uss / max(n, 1):.1f}",
            f"RSS < {RSS_LIMIT_MIB:g} MiB/session", n > 0 and rss / n < RSS_LIMIT_MIB,
            "/proc/<pid>/smaps_rollup summed over wait-and-deliver processes"),
        Row(f"{label}: polls per session to delivery (GET session)",
            f"mean {statistics.mean(polls):.1f}, max {max(polls)}; over schedule: {max(allowed_excess)}",
            "no poll beyond the backoff schedule", max(allowed_excess) <= 0,
            f"ready {ready:g}-{ready + spread:g} s after creation; LIBTV_POLL_INTERVAL_SECONDS={first:g}, cap {cap:g}"),
        Row(f"{label}: HTTP requests per session to delivery", f"{statistics.mean(per_session):.1f} to LibTV + "
            f"{(feishu + cdn) / sessions:.1f} Feishu/CDN", note=f"{delivered}/{sessions} delivered; "
            f"create-session x{sessions} took {submit_seconds:.1f} s"),
        Row(f"{label}: detection latency, simulator ready -> chat message (n={delivered})",
            f"median {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s" if latencies else "none",
            f"schedule's mean {statistics.mean(theory):.2f} s", None,
            f"LIBTV_POLL_INTERVAL_SECONDS={first:g} (cap {cap:g}); theory = next poll after ready, polls from creation"),
    ]


def theoretical(readies: List[float], first: float, cap: float) -> List[Tuple[float, float]]:
    """(ready, next poll) pairs if each waiter's first poll came at its session's creation."""
    out = []
    for r in readies:
        out.append((r, next(t for t in poll_times(first, cap, r + cap + 1) if t >= r)))
    return out


def main() -> int:
    return schedule_main(measure, sessions=50, ready=20.0)


if __name__ == "__main__":
    sys.exit(main())
