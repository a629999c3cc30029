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

import pg

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
        # `libtv-video worker` with a database journal runs queue workers (CONTRACT section 9).
        self.proc = subprocess.Popen([sys.executable, "-m", "libtv_fsm", "worker",
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
    sids = submit_sessions(pg_url, tmp_path / "creator", sim, 50, monkeypatch)
    wait_delivered(pg_url, sids, 60, workers)
    assert sends(sim) == {"total": 50, "distinct": 50}
    from libtv_fsm.waiting.queue import queued_jobs

    # A finished session leaves no job behind: once its last job (the local copies after the
    # delivery) has run, which may be a moment after the journal says delivered.
    deadline = time.monotonic() + 20
    while queued_jobs(pg_url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queued_jobs(pg_url) == []
    # A session's next job never started while its last one still ran (it would have met the claim held).
    assert not any("another waiter holds" in (h.home / "worker.err").read_text() for h in workers)
    for sid in sids:
        types = event_types(pg_url, sid)
        assert types.count("waiter_started") == 1 and types.count("delivery_succeeded") == 1, types


# A create-session in its own process, so that a failpoint can kill it right after its append commits.
SUBMIT_ONE = """
import os, sys
from libtv_fsm.backends import open_backend
from libtv_fsm.store import SessionStore
from libtv_fsm.submit import resolve_target, submit
from libtv_fsm.waiting.queue import defer_on_submit
store = SessionStore.from_url(os.environ["LIBTV_JOURNAL_URL"], os.environ["NEXU_HOME"])
defer_on_submit(store)
backend = open_backend(os.environ["KEY"], os.environ)
target = resolve_target("feishu", os.environ["GROUP"], os.environ, http=backend.session)
print(submit(store, backend, "a cat", "a cat", session_id=None, target=target)[0].session_id)
"""


def test_a_submission_commits_with_its_first_job_and_a_worker_delivers_it(hosts, sim, pg_url, tmp_path):
    from libtv_fsm.waiting.queue import queued_jobs

    [host] = hosts(1)
    env = dict(host.cli.env, KEY=sim.GATEWAY_KEY, GROUP=GROUP, LIBTV_FAILPOINTS="after_append:submitted")
    died = subprocess.run([sys.executable, "-c", SUBMIT_ONE], env=env, capture_output=True, text=True, timeout=60)
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    [sid] = states(pg_url)  # killed right after the commit: the session is there...
    assert [(j["session_id"], j["status"]) for j in queued_jobs(pg_url)] == [(sid, "todo")]  # ...and so is its job
    host.start()
    wait_delivered(pg_url, [sid], 20, [host])
    assert sends(sim) == {"total": 1, "distinct": 1}


def test_create_session_in_database_mode_queues_its_job_and_starts_no_local_process(hosts, sim, pg_url):
    from libtv_fsm.waiting.queue import queued_jobs

    [host] = hosts(1)
    migrated = host.cli("db", "migrate")
    assert migrated.code == 0 and "Task queue schema" in migrated.out, migrated
    ran = host.cli("create-session", "a cat surfing", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0 and ran.json()["deliverable"] is True, ran
    sid = ran.json()["sessionId"]
    assert [(j["session_id"], j["status"]) for j in queued_jobs(pg_url)] == [(sid, "todo")]
    # No home worker and no per-session waiter: the session is a row of the queue, not a process.
    assert not (host.home / "libtv-worker.pid").exists() and not list(host.home.glob("libtv-waiter-*.log"))
    host.start()
    wait_delivered(pg_url, [sid], 30, [host])
    assert sends(sim) == {"total": 1, "distinct": 1}
    recovered = host.cli("recover", "--json")  # a delivered session: recover queues nothing more
    assert recovered.code == 0 and queued_jobs(pg_url, sid) == [], recovered


def test_a_session_never_has_two_jobs_waiting(sim, pg_url, tmp_path, monkeypatch):
    from libtv_fsm.store import SessionStore
    from libtv_fsm.waiting.queue import defer_first_step, queued_jobs

    [sid] = submit_sessions(pg_url, tmp_path / "creator", sim, 1, monkeypatch)
    store = SessionStore.from_url(pg_url)
    assert defer_first_step(store, sid) is False  # `recover` meets the job create-session queued
    assert len(queued_jobs(pg_url, sid)) == 1
    store.journal.close()


def test_a_worker_killed_mid_delivery_is_taken_over_and_nothing_is_sent_twice(hosts, sim, pg_url, tmp_path,
                                                                              monkeypatch):
    doomed, *others = hosts(3)
    doomed.start({"LIBTV_FAILPOINTS": SEND})  # killed right after its first send, before it is journaled
    sids = submit_sessions(pg_url, tmp_path / "creator", sim, 5, monkeypatch)
    assert doomed.proc is not None and doomed.proc.wait(timeout=30) == -signal.SIGKILL
    started = time.monotonic()
    for h in others:
        h.start()
    wait_delivered(pg_url, sids, 40, others)
    assert sends(sim) == {"total": 5, "distinct": 5}  # the resend was the same message (Feishu's uuid de-dup)
    taken_over = time.monotonic() - started
    assert taken_over < 20, taken_over  # stalled after 2 s without a heartbeat, swept every 0.5 s
    attempts = [event_types(pg_url, sid).count("delivery_attempted") for sid in sids]
    assert sorted(attempts)[-1] == 2, attempts  # the killed send was tried again, not lost


def test_a_database_restart_mid_run_loses_no_event(hosts, sim, pg_url, tmp_path, monkeypatch):
    sim.default_scenario = sim.default_scenario.copy(ready_after_seconds=2.0)
    workers = [h.start() for h in hosts(2)]
    sids = submit_sessions(pg_url, tmp_path / "creator", sim, 6, monkeypatch)
    time.sleep(0.5)
    pg.pg_ctl("restart", "-m", "fast")
    wait_delivered(pg_url, sids, 60, workers)
    assert sends(sim) == {"total": 6, "distinct": 6}
    for sid in sids:
        types = event_types(pg_url, sid)
        assert types[0] == "submitted" and types.count("delivered") == 1 and types.count("delivery_succeeded") == 1, types


def _wait_socket(host: Host, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not (host.home / "libtv-queue.sock").exists():
        assert host.proc is not None and host.proc.poll() is None, (host.home / "worker.err").read_text()
        assert time.monotonic() < deadline, "the queue worker never opened its create-session socket"
        time.sleep(0.05)


def handed_over(host: Host) -> List[str]:
    """The create-session hand-offs the queue worker logged ("create-session <id>: exit <code>")."""
    return [line for line in (host.home / "worker.err").read_text(errors="replace").splitlines()
            if "create-session " in line and ": exit " in line]


def test_create_session_is_handed_to_a_queue_worker_of_the_same_home(hosts, sim, pg_url):
    """A queue worker of the home does the submission the command hands it: same JSON line, delivered once."""
    [host, other] = hosts(2)
    host.start()
    _wait_socket(host)
    other.start()  # a second worker of another home: it serves jobs
    ran = host.cli("create-session", "a cat surfing", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0 and len(ran.lines) == 1 and ran.json()["deliverable"] is True, ran
    sid = ran.json()["sessionId"]
    assert [line.rsplit(": exit ", 1)[1] for line in handed_over(host)] == ["0"], (host.home / "worker.err").read_text()
    wait_delivered(pg_url, [sid], 30, [host, other])
    assert sends(sim) == {"total": 1, "distinct": 1}
    logs = list(host.home.glob(f"libtv-waiter-{sid}.log")) + list(other.home.glob(f"libtv-waiter-{sid}.log"))
    assert logs and all(log.stat().st_mode & 0o777 == 0o600 for log in logs), "a waiter log others can read"
    refused = host.cli("create-session", "  ")  # the command's own checks answer as before
    assert refused.code != 0 and refused.lines[-1].startswith("❌"), refused
    assert len(handed_over(host)) == 1


def test_a_command_naming_another_journal_or_none_is_not_served_by_the_queue_worker(hosts, sim, pg_url):
    """The socket serves its own journal only: another database, or the home's JSONL files, submit by themselves."""
    from libtv_fsm.store import SessionStore

    [host] = hosts(1)
    host.start()
    _wait_socket(host)
    fresh = pg.fresh_schema()
    elsewhere = next(fresh)
    try:
        ran = host.cli("create-session", "a fox", "--channel", "feishu", "--chat-id", GROUP,
                       env={"LIBTV_JOURNAL_URL": elsewhere, "LIBTV_SKIP_BACKGROUND_WAITER": "1"})
        assert ran.code == 0, ran
        sid = ran.json()["sessionId"]
        assert sid in states(elsewhere) and sid not in states(pg_url)
    finally:
        next(fresh, None)
    # The home's JSONL journal: the home worker is started as ever (the queue worker's lock is not its lock).
    ran = host.cli("create-session", "an owl", "--channel", "feishu", "--chat-id", GROUP, env={"LIBTV_JOURNAL_URL": ""})
    assert ran.code == 0, ran
    sid = ran.json()["sessionId"]
    deadline = time.monotonic() + 30
    while SessionStore(host.home).replay(sid).state != "delivered":
        assert time.monotonic() < deadline, "the home worker never delivered the JSONL session"
        time.sleep(0.1)
    assert handed_over(host) == []


def test_recover_counts_a_queued_job_as_the_sessions_waiter(hosts, sim, pg_url):
    """Between two steps no claim is held; the queued job is what waits on the session: recover says running."""
    from libtv_fsm.waiting.queue import queued_jobs

    [host] = hosts(1)
    ran = host.cli("create-session", "a heron", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0, ran
    sid = ran.json()["sessionId"]
    recovered = host.cli("recover", "--json")
    assert recovered.code == 0, recovered
    assert [(e["session_id"], e["waiter"]) for e in recovered.json()["sessions"]] == [(sid, "running")]
    assert len(queued_jobs(pg_url, sid)) == 1


def test_a_queue_worker_finds_a_home_given_with_a_tilde(hosts, sim, pg_url, tmp_path):
    """NEXU_HOME=~/... is expanded as every command expands it, so the worker reads the key from that home."""
    [host] = hosts(1)
    ran = host.cli("create-session", "a lynx", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0, ran
    host.start(env={"HOME": str(tmp_path), "NEXU_HOME": f"~/{host.home.name}"})
    wait_delivered(pg_url, [ran.json()["sessionId"]], 30, [host])
