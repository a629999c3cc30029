"""Waiting as jobs on the PostgreSQL task queue: queue workers on several "hosts" (processes, each its own NEXU_HOME)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import FAST_POLLING, Cli, point_at_sim

GROUP = "oc_group_queue"
# Small timings so a killed worker's job is taken over within a few seconds.
QUEUE_FAST = {"LIBTV_QUEUE_HEARTBEAT_SECONDS": "0.5", "LIBTV_QUEUE_STALLED_SECONDS": "2",
              "LIBTV_QUEUE_SWEEP_SECONDS": "0.5", "LIBTV_QUEUE_FETCH_SECONDS": "0.1"}
SEND = "after_http:POST:/open-apis/im/v1/messages"


class Host:
    """One queue-worker "host": its own NEXU_HOME (key, logs) on the shared database."""

    def __init__(self, root: Path, name: str, sim: Any, url: str) -> None:
        self.home = root / name
        self.home.mkdir()
        self.cli = point_at_sim(Cli(self.home), sim, {"LIBTV_JOURNAL_URL": url, **QUEUE_FAST})
        self.proc: Optional["subprocess.Popen[bytes]"] = None

    def start(self, env: Optional[Dict[str, str]] = None, concurrency: int = 4) -> "Host":
        full = dict(self.cli.env)
        full.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "libtv_fsm.waiting.queue", "worker",
                                      "--concurrency", str(concurrency)], env=full, cwd=str(self.home),
                                     stdout=subprocess.DEVNULL, stderr=open(self.home / "worker.err", "wb"))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def hosts(tmp_path, sim, pg_url):  # type: ignore[no-untyped-def]
    made: List[Host] = []

    def make(n: int) -> List[Host]:
        new = [Host(tmp_path, f"host{len(made) + i}", sim, pg_url) for i in range(n)]
        made.extend(new)
        return new

    yield make
    for h in made:
        h.stop()


def submit_sessions(url: str, home: Path, sim: Any, n: int, monkeypatch: Any) -> List[str]:
    """``n`` create-sessions in this process, each committed with its first job (defer_on_submit)."""
    from libtv_fsm.backends import open_backend
    from libtv_fsm.store import SessionStore
    from libtv_fsm.submit import resolve_target, submit
    from libtv_fsm.waiting.queue import defer_on_submit

    env = {**os.environ, **sim.env(), **FAST_POLLING}
    for k, v in sim.env().items():
        monkeypatch.setenv(k, v)
    home.mkdir(exist_ok=True)
    store = SessionStore.from_url(url, home)
    defer_on_submit(store)
    sim.set_key(sim.GATEWAY_KEY, remaining_uses=n, max_uses=n)
    backend = open_backend(sim.GATEWAY_KEY, env)
    target = resolve_target("feishu", GROUP, env, http=backend.session)
    sids = [submit(store, backend, f"a cat, take {i}", f"a cat, take {i}", session_id=None, target=target)[0].session_id
            for i in range(n)]
    store.journal.close()
    return sids


def states(url: str) -> Dict[str, str]:
    from libtv_fsm.store import SessionStore

    store = SessionStore.from_url(url)
    try:
        return {s.session_id: s.state for s in store.sessions()}
    finally:
        store.journal.close()


def wait_delivered(url: str, sids: List[str], timeout: float, hosts: List[Host]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = states(url)
        if all(now.get(s) == "delivered" for s in sids):
            return
        time.sleep(0.2)
    logs = "\n".join((h.home / "worker.err").read_text()[-2000:] for h in hosts)
    pending = {s: st for s, st in states(url).items() if st != "delivered"}
    import psycopg

    with psycopg.connect(url) as conn:
        jobs = conn.execute("SELECT id, lock, status, attempts, scheduled_at FROM procrastinate_jobs ORDER BY id").fetchall()
    pytest.fail(f"not delivered within {timeout:.0f} s: {pending}\njobs: {jobs}\n{logs}")


def sends(sim: Any) -> Dict[str, int]:
    """Chat messages, total and distinct (a message's uuid is its session's and result's de-dup key)."""
    keys = [m["uuid"] for m in sim.feishu.messages if m["receive_id"] == GROUP]
    return {"total": len(keys), "distinct": len(set(keys))}


def event_types(url: str, sid: str) -> List[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT body->>'type' FROM libtv_events WHERE session_id = %s ORDER BY seq",
                                           (sid,))]


def test_three_queue_workers_deliver_every_session_once(hosts, sim, pg_url, tmp_path, monkeypatch):
    workers = [h.start() for h in hosts(3)]
    sids = submit_sessions(pg_url, tmp_path / "creator", sim, 20, monkeypatch)
    wait_delivered(pg_url, sids, 20, workers)
    assert sends(sim) == {"total": 20, "distinct": 20}
    from libtv_fsm.waiting.queue import queued_jobs

    assert queued_jobs(pg_url) == []  # a finished session leaves no job behind
    for sid in sids:
        types = event_types(pg_url, sid)
        assert types.count("waiter_started") == 1 and types.count("delivery_succeeded") == 1, types
