"""The home worker at scale: N sessions in flight on ONE `libtv-video worker` (CONTRACT 8), against the simulator.

Usage: python bench/worker_scale.py [--sessions 200] [--ready 40] [--spread 10] [--first 1] [--cap 4]
measure(..., url=postgresql://...) runs the same sessions on the task queue instead (CONTRACT 9):
the journal in that database, ONE `libtv-video worker --concurrency 8` process started first (it
runs queue workers), create-session starting nothing; bench/worker_vs_queue.py runs both.

N `create-session` calls (4 at a time; the first starts the worker detached, the others find it
alive), each ready --ready to --ready+spread seconds after its creation on the simulator's clock,
delivered to the simulated Feishu. Polling is shortened (LIBTV_POLL_INTERVAL_SECONDS=--first,
cap --cap) so a run takes a couple of minutes; the schedule's shape is the production one.
Every 0.5 s: the worker's /proc/<pid>/smaps_rollup (RSS, PSS, USS; peaks) and /proc/<pid>/stat
(utime+stime). Polls are counted on the simulator. Everything started in the home (the worker
included) is stopped at the end; nothing leaves 127.0.0.1.
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import CLI, Row, clean_env, home_pids, memory, percentile, run, schedule_main, stop  # noqa: E402
from waiters import theoretical  # noqa: E402

RSS_LIMIT_MIB = 20.0  # per in-flight session, as for the per-session waiters (bench/waiters.py)
SAMPLE_SECONDS = 0.5
TICK = os.sysconf("SC_CLK_TCK")


def _cmdline(pid: int) -> bytes:
    try:
        return b"\0" + Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of ``pid`` from /proc/<pid>/stat, in seconds (None: gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of proc(5), after pid and comm


def _serving(home: Path) -> Optional[int]:
    """The pid of the worker holding the home lock (its pid file), if any."""
    from libtv_fsm.waiting import homefiles

    try:
        return int(Path(homefiles.path(str(home), homefiles.PID_NAME)).read_text().strip())
    except (OSError, ValueError):
        return None


def measure(sessions: int = 200, ready: float = 40.0, spread: float = 10.0, first: float = 1.0, cap: float = 4.0,
            label: str = "home worker", url: Optional[str] = None, concurrency: int = 8) -> List[Row]:
    from libtv_fsm.backoff import delay
    from libtv_fsm.sim import Simulator
    from libtv_fsm.sim.scenarios import Scenario

    rng = random.Random(6)
    readies = [ready + rng.uniform(0, spread) for _ in range(sessions)]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, Simulator() as sim:
        sim.set_key(Simulator.GATEWAY_KEY, remaining_uses=100_000, max_uses=100_000)
        home = Path(tmp) / "home"
        home.mkdir()
        env = clean_env(home, LIBTV_POLL_INTERVAL_SECONDS=str(first), LIBTV_MAX_POLL_INTERVAL_SECONDS=str(cap),
                        LIBTV_WAIT_TIMEOUT_SECONDS="900", **sim.env())
        run(CLI + ["setup", "--api-key", Simulator.GATEWAY_KEY], env)
        queue_worker: Optional["subprocess.Popen[bytes]"] = None
        if url:  # the queue: one worker process, started before any submission, serving the database's jobs
            env["LIBTV_JOURNAL_URL"] = url
            run(CLI + ["db", "migrate"], env)
            queue_worker = subprocess.Popen(CLI + ["worker", "--concurrency", str(concurrency)], env=env, cwd=str(home),
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=open(home / "queue-worker.err", "wb"))
        chats = [f"oc_wbench_{i:04d}" for i in range(sessions)]
        for i, seconds in enumerate(readies):
            sim.scenarios[f"wb{i}"] = Scenario(ready_after_seconds=seconds)
        took: List[float] = []

        def submit(i: int) -> None:
            took.append(run(CLI + ["create-session", f"clip {i} [sim:wb{i}]", "--channel", "feishu",
                                   "--chat-id", chats[i]], env))

        workers: Set[int] = set()   # every `worker` process seen (concurrent create-sessions may start more than one)
        served: Set[int] = set()    # the ones that held the home (libtv-worker.pid): one is the goal
        others: Set[int] = set()    # any wait-and-deliver in this home (none is the goal)
        cpu: Dict[int, float] = {}  # last utime+stime seen per serving worker
        peak = {"rss": 0.0, "pss": 0.0, "uss": 0.0}
        delivered_at: Optional[float] = None
        started = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=4)
        futures = [pool.submit(submit, i) for i in range(sessions)]
        submit_seconds = None
        deadline = started + 300 + ready + spread + sessions * 0.5
        try:
            while time.monotonic() < deadline:
                for pid in home_pids(home):
                    line = _cmdline(pid)
                    if b"\0worker\0" in line:
                        workers.add(pid)
                    elif b"\0wait-and-deliver\0" in line:
                        others.add(pid)
                serving = queue_worker.pid if queue_worker else _serving(home)
                if serving is not None and serving in workers:
                    served.add(serving)
                    used = _cpu_seconds(serving)
                    if used is not None:
                        cpu[serving] = used
                    _, rss, pss, uss = memory([serving])
                    peak = {k: max(peak[k], v) for k, v in (("rss", rss), ("pss", pss), ("uss", uss))}
                if submit_seconds is None and all(f.done() for f in futures):
                    submit_seconds = time.monotonic() - started
                    for f in futures:
                        f.result()  # a failed create-session fails the benchmark
                with sim.lock:
                    reached = len({m["receive_id"] for m in sim.feishu.messages})
                if submit_seconds is not None and reached >= sessions:
                    if delivered_at is None:
                        delivered_at = time.monotonic()
                    elif time.monotonic() - delivered_at >= 2 * cap:
                        break  # a second message to any chat would have come by now
                time.sleep(SAMPLE_SECONDS)
        finally:
            pool.shutdown(wait=True)
            left = home_pids(home)
            stop(left)
            if queue_worker:
                queue_worker.wait(timeout=10)  # stopped above (it is in the home); reaped here
            load_after = os.getloadavg()
        with sim.lock:
            by_id = {s.id: s for s in sim.sessions.values()}
            requests = list(sim.requests)
            messages = list(sim.feishu.messages)
    wall = time.monotonic() - started

    per_chat = Counter(m["receive_id"] for m in messages)
    once = sum(1 for c in chats if per_chat.get(c) == 1)
    twice = sorted(c for c in chats if per_chat.get(c, 0) > 1)
    missing = sorted(c for c in chats if c not in per_chat)
    sent_at: Dict[str, float] = {}
    for r in requests:
        if r.path == "/open-apis/im/v1/messages" and r.status == 200 and isinstance(r.json, dict):
            sent_at.setdefault(str(r.json.get("receive_id")), r.at)
    latencies: List[float] = []
    late: List[Tuple[float, float]] = []  # (when, how late) of every poll after a session's first
    created: List[float] = []
    ready_ats: List[float] = []
    gets_all: List[float] = []
    for sid, s in by_id.items():
        turn = s.turns[-1]
        chat = next(c for i, c in enumerate(chats) if f"[sim:wb{i}]" in s.messages[0]["content"])
        ready_at = turn.started_at + (turn.scenario.ready_after_seconds or 0.0)
        created.append(turn.started_at)
        ready_ats.append(ready_at)
        gets = sorted(r.at for r in requests if r.method == "GET" and r.path.endswith(f"/session/{sid}"))
        gets_all.extend(gets)
        if chat in sent_at:
            latencies.append(sent_at[chat] - ready_at)
        # How much later than its schedule each poll came (the gap includes the step itself, as for a waiter).
        late.extend((b, b - a - delay(i, first, cap)) for i, (a, b) in enumerate(zip(gets, gets[1:])))
    polls = len(gets_all)
    cpu_total = sum(cpu.values())
    # Sustained: all N in flight, from the last creation to the first "ready".
    window = (max(created), min(ready_ats)) if created else (0.0, 0.0)
    in_window = sum(1 for t in gets_all if window[0] <= t < window[1])
    span = window[1] - window[0]
    rate = f"{in_window / span:.1f}/s over {span:.0f} s with all {sessions} in flight" if span >= 5 else "window < 5 s"
    steady = sessions / cap
    phases = [("submitting", [v for t, v in late if t < window[0]]),
              ("all in flight", [v for t, v in late if window[0] <= t < window[1]]),
              ("results coming in", [v for t, v in late if t >= window[1]])]
    lateness = "; ".join(f"{name} p95 {percentile(vs, 0.95):.2f} s, max {max(vs):.2f} s" for name, vs in phases if vs)
    theory = [t_next - t_ready for t_ready, t_next in theoretical(readies, first, cap)]
    n_workers = len(served)
    load = f"load {load_before[0]:.1f} -> {load_after[0]:.1f} (1-min avg, {os.cpu_count()} CPUs)"
    sched = f"LIBTV_POLL_INTERVAL_SECONDS={first:g}, cap {cap:g}; ready {ready:g}-{ready + spread:g} s after creation"
    return [
        Row(f"{label}: {sessions} sessions in flight, the worker's memory (peak sample, every {SAMPLE_SECONDS:g} s)",
            f"RSS {peak['rss']:.1f} MiB = {peak['rss'] / sessions:.2f}/session; PSS {peak['pss']:.1f}; USS {peak['uss']:.1f}",
            f"RSS < {RSS_LIMIT_MIB:g} MiB/session", n_workers == 1 and peak["rss"] / sessions < RSS_LIMIT_MIB,
            f"/proc/<pid>/smaps_rollup of the worker holding the home ({n_workers} did); {len(workers) - n_workers} more "
            f"`worker` started and left at once; wait-and-deliver: {len(others)}"),
        Row(f"{label}: CPU per poll (utime+stime / polls the simulator counted)",
            f"{cpu_total * 1000 / max(polls, 1):.2f} ms/poll ({cpu_total:.1f} s CPU, {polls} polls)", "", None,
            note=f"everything the worker did (pickup, polls, journal, delivery, download) over GET session; {load}"),
        Row(f"{label}: polls/s sustained", rate, f"~{steady:.0f}/s (N / cap)", None,
            f"a poll's lateness against the schedule (gap to the previous poll minus backoff's delay): {lateness}"
            if late else "no polls"),
        Row(f"{label}: detection latency, simulator ready -> chat message (n={len(latencies)})",
            f"median {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s" if latencies else "none",
            f"schedule's mean {statistics.mean(theory):.2f} s", None, sched),
        Row(f"{label}: create-session x{sessions} (4 at a time)",
            f"{submit_seconds or 0:.1f} s; median {statistics.median(took) * 1000:.0f} ms, "
            f"p95 {percentile(took, 0.95) * 1000:.0f} ms" if took else "none", "", None,
            "the queue worker was started first; create-session commits the first job" if url else
            "the first starts the worker; the others submit through it"),
        Row(f"{label}: delivered exactly once (chat messages per session at the simulated Feishu)",
            f"{once}/{sessions} once; twice or more: {len(twice)}; none: {len(missing)}",
            "every session once", once == sessions,
            f"{wall:.0f} s in all; {len(left)} process(es) stopped at the end (the worker)"
            + (f"; duplicated: {', '.join(twice[:5])}" if twice else "")
            + (f"; missing: {', '.join(missing[:5])}" if missing else "")),
    ]


def main() -> int:
    return schedule_main(measure, sessions=200, ready=40.0)


if __name__ == "__main__":
    sys.exit(main())
