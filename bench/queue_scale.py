"""Waiting on the task queue at scale: sessions in flight on N queue-worker processes, and a worker's takeover.

Usage: LIBTV_TEST_DATABASE_URL=postgresql://... python bench/queue_scale.py [--sessions 1000] [--workers 3]
       [--concurrency 10] [--ready 30] [--first 2] [--cap 5]
(`eval "$(tests/toolchain/postgres.sh start)"` gives a database.) Each session is ready --ready
seconds after its creation on the simulator; polls start every --first seconds (x1.5, capped at
--cap). Reports: submission rate, sustained polls/s while all are in flight, total worker RSS,
the database's rows and sizes, time to deliver all; then one worker is killed (SIGKILL) with jobs
in hand and the time until they are back in the queue is measured. The takeover time is set by
LIBTV_QUEUE_STALLED_SECONDS (no heartbeat for that long) + LIBTV_QUEUE_SWEEP_SECONDS (how often the
others look) + LIBTV_QUEUE_FETCH_SECONDS; heartbeats every LIBTV_QUEUE_HEARTBEAT_SECONDS.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import database_url, pg_schema  # noqa: E402


def rss_mib(pids: List[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def query(url: str, sql: str, *args: Any) -> List[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())  # type: ignore[call-overload]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--ready", type=float, default=30.0)
    p.add_argument("--first", type=float, default=2.0)
    p.add_argument("--cap", type=float, default=5.0)
    p.add_argument("--stalled", type=float, default=10.0)
    p.add_argument("--heartbeat", type=float, default=2.0)
    p.add_argument("--sweep", type=float, default=2.0)
    p.add_argument("--fetch", type=float, default=0.5)
    p.add_argument("--hang", type=float, default=2.0)
    p.add_argument("--no-kill", action="store_true", help="keep every worker: no takeover measurement")
    if not database_url(p):
        return 2
    a = p.parse_args()
    with pg_schema(a.url) as url:
        return measure(a, url)


def measure(a: argparse.Namespace, url: str) -> int:
    from libtv_fsm.backends import open_backend
    from libtv_fsm.sim import Simulator
    from libtv_fsm.store import SessionStore
    from libtv_fsm.submit import resolve_target, submit
    from libtv_fsm.waiting.queue import defer_on_submit, migrate_queue

    tmp = Path(tempfile.mkdtemp(prefix="queue-scale-"))
    procs: List["subprocess.Popen[bytes]"] = []
    try:
        with Simulator() as sim:
            # The first poll of each session hangs --hang seconds: the workers are busy with those when one is killed.
            sim.default_scenario = sim.default_scenario.copy(ready_after_seconds=a.ready, poll_faults=("hang",),
                                                             hang_seconds=a.hang)
            sim.set_key(sim.GATEWAY_KEY, remaining_uses=a.sessions, max_uses=a.sessions)
            env: Dict[str, str] = {**os.environ, **sim.env(), "LIBTV_JOURNAL_URL": url,
                                   "LIBTV_POLL_INTERVAL_SECONDS": str(a.first),
                                   "LIBTV_MAX_POLL_INTERVAL_SECONDS": str(a.cap),
                                   "LIBTV_WAIT_TIMEOUT_SECONDS": "3600",
                                   "LIBTV_QUEUE_STALLED_SECONDS": str(a.stalled),
                                   "LIBTV_QUEUE_HEARTBEAT_SECONDS": str(a.heartbeat),
                                   "LIBTV_QUEUE_SWEEP_SECONDS": str(a.sweep),
                                   "LIBTV_QUEUE_FETCH_SECONDS": str(a.fetch), "PYTHONUNBUFFERED": "1"}
            os.environ.update(sim.env())
            migrate_queue(url)
            for i in range(a.workers):
                home = tmp / f"host{i}"
                home.mkdir()
                wenv = dict(env, NEXU_HOME=str(home), LIBTV_DOWNLOAD_DIR=str(home / "dl"))
                subprocess.run([sys.executable, "-m", "libtv_fsm", "setup", "--api-key", sim.GATEWAY_KEY],
                               env=wenv, check=True, capture_output=True)
                procs.append(subprocess.Popen([sys.executable, "-m", "libtv_fsm", "worker",
                                               "--concurrency", str(a.concurrency)], env=wenv, cwd=str(home),
                                              stdout=subprocess.DEVNULL, stderr=open(home / "worker.err", "wb")))

            creator = tmp / "creator"
            creator.mkdir()

            def submit_some(indices: range) -> List[str]:
                store = SessionStore.from_url(url, creator)
                defer_on_submit(store)
                backend = open_backend(sim.GATEWAY_KEY, os.environ)
                target = resolve_target("feishu", "oc_bench", os.environ, http=backend.session)
                out = [submit(store, backend, f"cat {i}", f"cat {i}", session_id=None, target=target)[0].session_id
                       for i in indices]
                store.journal.close()
                return out

            peak = [0.0]

            def sample() -> None:  # the live workers' total RSS, every second, for the peak
                while not done.is_set():
                    peak[0] = max(peak[0], rss_mib([pr.pid for pr in procs if pr.poll() is None]))
                    done.wait(1.0)

            done = threading.Event()
            threading.Thread(target=sample, daemon=True).start()
            t0 = time.monotonic()
            chunks = [range(k, a.sessions, 4) for k in range(4)]
            with ThreadPoolExecutor(4) as pool:
                sids = [s for part in pool.map(submit_some, chunks) for s in part]
            submitted = time.monotonic() - t0
            print(f"submitted {len(sids)} sessions in {submitted:.1f} s ({len(sids) / submitted:.0f}/s), "
                  f"each with its first job in the same transaction")

            # Right after submission every worker holds jobs (first polls hang). One is killed:
            # how long until they are back in the queue. Its jobs show
            # as orphans (no live heartbeat) once its heartbeat is old, and stop being so when retried.
            orphans_sql = ("SELECT count(*) FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w "
                           "ON j.worker_id = w.id WHERE j.status = 'doing' AND (w.id IS NULL OR "
                           "w.last_heartbeat < now() - interval '1 second' * %s)")
            time.sleep(min(1.0, a.hang / 2))
            running = query(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")[0][0]
            if not a.no_kill:
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait()
            killed_at = time.monotonic()
            seen, takeover = 0, None
            while not a.no_kill and time.monotonic() - killed_at < a.stalled * 4 + 30:
                orphans = query(url, orphans_sql, a.heartbeat * 2)[0][0]
                seen = max(seen, orphans)
                if seen and not orphans:
                    takeover = time.monotonic() - killed_at
                    break
                time.sleep(0.1)
            if a.no_kill:
                print(f"no worker killed ({running} jobs running in all)")
            else:
                print(f"killed one worker ({running} jobs running in all); its {seen} job(s) back in the queue after "
                      f"{'n/a' if takeover is None else f'{takeover:.1f}'} s (stalled {a.stalled:g} + sweep {a.sweep:g} "
                      f"s; heartbeat {a.heartbeat:g} s, fetch {a.fetch:g} s)")

            # Sustained polls while everything is in flight (the results appear --ready s after creation).
            polls_sql = "SELECT count(*) FROM libtv_events WHERE body->>'type' = 'poll_answered'"
            polls0, w0 = query(url, polls_sql)[0][0], time.monotonic()
            time.sleep(max(3.0, a.ready / 3))
            polls1, w1 = query(url, polls_sql)[0][0], time.monotonic()
            delivered = query(url, "SELECT count(DISTINCT session_id) FROM libtv_events WHERE body->>'type' = 'delivered'")[0][0]
            print(f"in flight: {len(sids) - delivered}; polls {(polls1 - polls0) / (w1 - w0):.0f}/s "
                  f"(journaled, sustained over {w1 - w0:.0f} s)")
            live = [pr.pid for pr in procs if pr.poll() is None]
            print(f"worker RSS total {rss_mib(live):.0f} MiB for the {len(live)} live processes "
                  f"x concurrency {a.concurrency} (peak so far {peak[0]:.0f} MiB)")
            jobs = query(url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1")
            print(f"jobs by status: {dict(jobs)}")

            deadline = time.monotonic() + a.ready * 3 + 120
            while time.monotonic() < deadline:
                delivered = query(url, "SELECT count(DISTINCT session_id) FROM libtv_events WHERE body->>'type' = 'delivered'")[0][0]
                if delivered >= len(sids):
                    break
                time.sleep(1)
            total = time.monotonic() - t0
            uuids = [m["uuid"] for m in sim.feishu.messages]
            print(f"delivered {delivered}/{len(sids)} in {total:.0f} s from the first submission; chat messages "
                  f"{len(uuids)} ({len(set(uuids))} distinct)")
            sizes = query(url, "SELECT (SELECT count(*) FROM libtv_events), pg_total_relation_size('libtv_events'), "
                               "(SELECT count(*) FROM procrastinate_jobs), pg_total_relation_size('procrastinate_jobs'), "
                               "(SELECT count(*) FROM procrastinate_events), pg_total_relation_size('procrastinate_events'), "
                               "pg_database_size(current_database())")[0]
            print(f"rows: libtv_events {sizes[0]} ({sizes[1] / 2**20:.1f} MiB), procrastinate_jobs {sizes[2]} "
                  f"({sizes[3] / 2**20:.1f} MiB), procrastinate_events {sizes[4]} ({sizes[5] / 2**20:.1f} MiB); "
                  f"database {sizes[6] / 2**20:.0f} MiB")
            jobs = query(url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1")
            print(f"jobs left by status: {dict(jobs)}; peak worker RSS total {peak[0]:.0f} MiB")
            done.set()
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for pr in procs:
            try:
                pr.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pr.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
