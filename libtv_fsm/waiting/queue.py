"""Waiting as jobs on a PostgreSQL task queue (procrastinate): one job is one step of one session (CONTRACT section 9).

With a database journal (LIBTV_JOURNAL_URL), an in-flight session is a row of ``procrastinate_jobs``,
not a thread or a process. The job ``libtv.step`` (args: session_id, context, start) runs ONE
:func:`libtv_fsm.waiting.step.step` under the session's waiter claim and, when the step says
``Due(seconds, context)``, defers the next job ``seconds`` from now with that context. Every job of
a session carries ``lock=session_id`` (procrastinate never runs two jobs of one lock at once) and
``queueing_lock=session_id`` (at most one job of a session waits in the queue: two chains that meet
merge into one). ``start`` marks the first job of a run: it records WaiterStarted (pid, host) and,
for a timed-out session, Resumed, as the runner contract of step.py says; later jobs do not.

The first job is committed with the submission: :func:`defer_on_submit` hooks the PostgreSQL
journal so that an append holding a ``submitted`` event defers the job in the same transaction, on
the same connection, through procrastinate's own defer function (``JobManager.defer_job(job,
connection=...)``). :func:`defer_first_step` defers one for a session that has none (``recover``).

A worker killed mid-step stops its heartbeat; after ``LIBTV_QUEUE_STALLED_SECONDS`` the other
workers' sweep (every ``LIBTV_QUEUE_SWEEP_SECONDS``) puts its job back in the queue, where any
worker takes it: the step is a rerun after a crash, which the journal makes safe. The takeover time
is at most stalled + sweep + fetch seconds (heartbeats every ``LIBTV_QUEUE_HEARTBEAT_SECONDS``).

``libtv-video worker`` runs queue workers in database mode; ``libtv-video db migrate`` applies the
queue's schema with the journal's.
"""
from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from libtv_fsm import events as ev
from libtv_fsm.machine import CREATED, DELIVERED, TIMEOUT
from libtv_fsm.waiting.context import Due, RunContext
from libtv_fsm.waiting.settings import WaitSettings

__all__ = ["TASK", "QUEUE", "QueueSettings", "migrate_queue", "defer_first_step", "defer_on_submit",
           "run_queue_workers", "queued_jobs"]

TASK = "libtv.step"
QUEUE = "libtv"
# A job that finds the claim held (a `wait-and-deliver` works the session) looks again this much later.
BUSY_RETRY_SECONDS = 5.0
CLAIM_WAIT_SECONDS = 0.25
# A step that raises is tried again this many times, 5 s more apart each time (about 6 hours in all).
RETRY_ATTEMPTS = 50

# A job that is still 'doing' while its successor has been due this long has done its work (deferring
# the successor is a job's last act) but its end was never recorded: the database went away as the
# worker wrote it. It is closed, so that the lock lets the successor run.
ORPHANS = """
UPDATE procrastinate_jobs AS j SET status = 'succeeded'
WHERE j.task_name = %(task)s AND j.status = 'doing' AND EXISTS (
    SELECT 1 FROM procrastinate_jobs AS t
    WHERE t.lock = j.lock AND t.status = 'todo' AND t.id > j.id
      AND coalesce(t.scheduled_at, (SELECT min(e.at) FROM procrastinate_events AS e WHERE e.job_id = t.id), now())
          < now() - make_interval(secs => %(seconds)s))
RETURNING j.id, j.lock
"""


class QueueSettings:
    """The queue worker's timings, from the environment (seconds)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        from libtv_fsm.config import env_number

        def number(name: str, default: float) -> float:
            return float(env_number(env, name, default))

        # How often a worker proves it is alive, and how long without proof before its jobs are taken over.
        self.heartbeat = number("LIBTV_QUEUE_HEARTBEAT_SECONDS", 10.0)
        self.stalled = number("LIBTV_QUEUE_STALLED_SECONDS", 30.0)
        # How often each worker looks for stalled jobs, and for jobs whose time came (a NOTIFY only
        # announces a job due at once; one scheduled for later is found by this poll).
        self.sweep = number("LIBTV_QUEUE_SWEEP_SECONDS", 5.0)
        self.fetch = number("LIBTV_QUEUE_FETCH_SECONDS", 1.0)


# -- the schema -------------------------------------------------------------------------------------


def migrate_queue(url: str) -> bool:
    """Apply procrastinate's schema to the database ``url`` names (its search_path); True if it was applied now.

    Re-runnable: under an advisory lock, applied only when ``procrastinate_jobs`` is absent.
    (A procrastinate upgrade that changes its schema needs its own migrations: see its docs.)
    """
    import psycopg
    from procrastinate.schema import SchemaManager

    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':libtv-fsm:queue', 7))")
            row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
            if row and row[0]:
                return False
            conn.execute(SchemaManager.get_schema())
    return True


_migrated: Dict[str, bool] = {}
_defer_apps: Dict[str, Any] = {}
_migrate_lock = threading.Lock()


def _ensure_schema(url: str) -> None:
    with _migrate_lock:
        if not _migrated.get(url):
            migrate_queue(url)
            _migrated[url] = True


# -- deferring --------------------------------------------------------------------------------------


def _defer_app(url: str) -> Any:
    """An App whose job manager defers on a connection we give it (never opened: it holds no pool)."""
    from procrastinate import App, SyncPsycopgConnector

    if url not in _defer_apps:
        _defer_apps[url] = App(connector=SyncPsycopgConnector(conninfo=url))
    return _defer_apps[url]


def _defer(conn: Any, url: str, session_id: str, context: Mapping[str, Any], start: bool,
           seconds: float = 0.0) -> bool:
    """Defer a step job of ``session_id`` on ``conn`` (in its transaction, if any); False if one is already queued."""
    from procrastinate import exceptions

    _ensure_schema(url)
    app = _defer_app(url)
    options: Dict[str, Any] = {"lock": session_id, "queueing_lock": session_id, "queue": QUEUE}
    if seconds > 0:
        options["schedule_in"] = {"seconds": seconds}
    job = app.configure_task(TASK, **options).make_new_job(session_id=session_id, context=dict(context), start=start)
    try:
        if conn.info.transaction_status != 0:  # in a transaction: a savepoint, so a refusal leaves it usable
            with conn.transaction():
                app.job_manager.defer_job(job, connection=conn)
        else:
            app.job_manager.defer_job(job, connection=conn)
    except exceptions.AlreadyEnqueued:
        return False
    except exceptions.ConnectorException as err:
        raise (err.__cause__ or err) from None  # the psycopg error, so the journal sees a lost connection
    return True


def defer_first_step(store: Any, session_id: str) -> bool:
    """Queue the first job of a run for ``session_id`` (``recover``: a session with no job); False if one is queued."""
    journal = store.journal
    return bool(journal.with_connection(lambda conn: _defer(conn, journal.url, session_id, {}, True)))


def has_job(store: Any, session_id: str) -> bool:
    """Whether ``session_id`` has a step job waiting or running: the queue is waiting on it (``recover``)."""
    def work(conn: Any) -> bool:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = %s AND lock = %s "
                           "AND status IN ('todo', 'doing'))", (TASK, session_id)).fetchone()
        return bool(row and row[0])

    _ensure_schema(store.journal.url)
    return bool(store.journal.with_connection(work))


def defer_on_submit(store: Any) -> None:
    """Make every append of a ``submitted`` event to ``store``'s journal commit its first job with it.

    Call once on a database store before submitting (create-session, and recover finishing an intent).
    """
    journal = store.journal
    _ensure_schema(journal.url)
    if any(getattr(h, "queues_first_step", False) for h in journal.append_hooks):
        return  # already hooked: once is enough

    def hook(conn: Any, session_id: str, bodies: Sequence[Mapping[str, Any]]) -> None:
        if any(body.get("type") == "submitted" for body in bodies):
            _defer(conn, journal.url, session_id, {}, True)

    hook.queues_first_step = True  # type: ignore[attr-defined]
    journal.append_hooks.append(hook)


def queued_jobs(url: str, session_id: Optional[str] = None) -> List[Dict[str, Any]]:
    """The step jobs waiting or running (all, or one session's): id, session_id, status, scheduled_at."""
    import psycopg
    from psycopg.rows import dict_row

    query = ("SELECT id, lock AS session_id, status::text AS status, scheduled_at, attempts FROM procrastinate_jobs "
             "WHERE task_name = %s AND status IN ('todo', 'doing')")
    params: List[Any] = [TASK]
    if session_id is not None:
        query += " AND lock = %s"
        params.append(session_id)
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        return list(conn.execute(query + " ORDER BY id", params).fetchall())


# -- the job ----------------------------------------------------------------------------------------


class _Runtime:
    """What every job of this worker process shares: the store, the key, the environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        from libtv_fsm.config import nexu_home
        from libtv_fsm.store import SessionStore

        self.env = dict(env)
        self.url = self.env["LIBTV_JOURNAL_URL"].strip()
        self.home = nexu_home(self.env)
        self.store = SessionStore.from_url(self.url, self.home)
        self.settings = WaitSettings.from_env(self.env)
        self.host = socket.gethostname()

    def api_key(self) -> str:
        from libtv_fsm.config import require_api_key

        return require_api_key(self.home)  # read per job: `setup` may change it while the worker runs

    def log(self, session_id: str) -> Callable[[str], None]:
        """The session's lines: its waiter log and this process's stderr (a queue worker has no libtv-worker.log)."""
        from libtv_fsm.waiting.homelock import WorkerLog

        return WorkerLog(str(self.home), echo=lambda text: print(text, file=sys.stderr, flush=True), main=None).of(session_id)


_runtime: Optional[_Runtime] = None


def run_step(session_id: str, context: Dict[str, Any], start: bool = False) -> int:
    """The job: one step of ``session_id`` under its claim; the next job deferred if one is due. Returns its exit code or -1."""
    from libtv_fsm.waiting.step import Edges, step

    rt = _runtime
    assert rt is not None, "run_step runs in a queue worker (run_queue_workers)"
    store, log = rt.store, rt.log(session_id)
    claim = store.journal.claim_waiter(session_id, wait=CLAIM_WAIT_SECONDS)
    if not claim.held:
        # A `wait-and-deliver` works this session now: look again later (by then it is likely done).
        log("another waiter holds this session; the queue looks again later")
        _next(rt, session_id, context, start, BUSY_RETRY_SECONDS)
        return -1
    with claim:
        edges = Edges(store, session_id, api_key=rt.api_key(), env=rt.env, settings=rt.settings, log=log)
        session = store.load(session_id)
        if start and session.state not in (DELIVERED, CREATED):  # as Waiter.run: those journal nothing
            session = edges.record(ev.WaiterStarted(at=ev.now(), pid=os.getpid(), host=rt.host))
            if session.state == TIMEOUT:
                session = edges.record(ev.Resumed(at=ev.now(), reason="queue job started again"))
        result = step(edges, session, RunContext.from_dict(context), time.time)
        if isinstance(result, Due):
            # Deferred before this job ends: its lock keeps the next one waiting until then.
            _next(rt, session_id, result.context.to_dict(), False, result.seconds)
            return -1
        log(f"run finished with code {result.code}")
        return result.code


def _next(rt: _Runtime, session_id: str, context: Mapping[str, Any], start: bool, seconds: float) -> None:
    journal: Any = rt.store.journal
    # AlreadyEnqueued (False): another chain of this session is queued (recover met a running job); it goes on.
    journal.with_connection(lambda conn: _defer(conn, rt.url, session_id, context, start, seconds))


# -- the workers ------------------------------------------------------------------------------------


def _worker_app(url: str) -> Any:
    from procrastinate import App, PsycopgConnector

    from procrastinate import RetryStrategy

    app = App(connector=PsycopgConnector(conninfo=url))
    # A step that raised (the database gone for longer than the journal's retries, a bug) is run
    # again later, as after a crash: the session's chain of jobs must not end on an error.
    app.task(name=TASK, queue=QUEUE, retry=RetryStrategy(max_attempts=RETRY_ATTEMPTS, linear_wait=5))(run_step)
    return app


async def _sweep_stalled(app: Any, settings: QueueSettings, stop: asyncio.Event) -> None:
    """Put back in the queue the jobs of workers whose heartbeat stopped (killed, cut off)."""
    from procrastinate import exceptions

    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=settings.sweep)
        except asyncio.TimeoutError:
            pass
        if stop.is_set():
            return
        try:
            stalled = await app.job_manager.get_stalled_jobs(task_name=TASK, seconds_since_heartbeat=settings.stalled)
            for job in stalled:
                try:
                    await app.job_manager.retry_job(job)
                    print(f"queue: job {job.id} of session {job.lock} stalled; back in the queue", file=sys.stderr)
                except (exceptions.AlreadyEnqueued, exceptions.UniqueViolation):
                    # It had deferred its successor before dying (the queueing lock refuses a second
                    # waiting job): that one carries the session on once this one is closed.
                    await app.job_manager.finish_job(job, status=_failed(), delete_job=False)
            for row in await app.connector.execute_query_all_async(query=ORPHANS, task=TASK, seconds=settings.stalled):
                print(f"queue: job {row['id']} of session {row['lock']} had ended unrecorded; closed", file=sys.stderr)
        except Exception as err:  # the database restarting: the next sweep tries again
            print(f"queue: stalled-job sweep failed: {err}", file=sys.stderr)


def _failed() -> Any:
    from procrastinate.jobs import Status

    return Status.FAILED


async def _serve(env: Mapping[str, str], concurrency: int, settings: QueueSettings) -> None:
    url = env["LIBTV_JOURNAL_URL"].strip()
    app = _worker_app(url)
    stop = asyncio.Event()
    async with app.open_async():
        worker = asyncio.create_task(app.run_worker_async(
            queues=[QUEUE], concurrency=concurrency, wait=True, delete_jobs="successful",
            fetch_job_polling_interval=settings.fetch, update_heartbeat_interval=settings.heartbeat,
            stalled_worker_timeout=settings.stalled, install_signal_handlers=True))
        sweeper = asyncio.create_task(_sweep_stalled(app, settings, stop))
        try:
            await worker
        finally:
            stop.set()
            await sweeper


def run_queue_workers(env: Mapping[str, str] = os.environ, concurrency: int = 10) -> int:
    """Run queue workers in the foreground until SIGTERM/SIGINT (``libtv-video worker`` in database mode); exit code.

    ``concurrency`` steps run at once in this process (each in a thread). A lost database (a
    restart) ends procrastinate's worker; it is started again after a pause, losing nothing: the
    jobs are rows, and a job cut off mid-step is retried as a stalled one.
    """
    global _runtime
    url = env.get("LIBTV_JOURNAL_URL", "").strip()
    if not url:
        print("queue workers need LIBTV_JOURNAL_URL (a PostgreSQL journal)", file=sys.stderr)
        return 2
    settings = QueueSettings(env)
    _runtime = _Runtime(env)
    from libtv_fsm.waiting.queue_handoff import open_handoffs

    # create-session of this home, handed over (the first queue worker of a home listens).
    handoffs = open_handoffs(env, lambda line: print(f"{ev.format_time(ev.now())} [queue] {line}",
                                                     file=sys.stderr, flush=True))
    import tenacity

    def serve() -> int:
        _ensure_schema(url)
        asyncio.run(_serve(env, concurrency, settings))
        return 0

    def restarting(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        pause = state.next_action.sleep if state.next_action else 0.0
        print(f"queue: worker stopped ({type(err).__name__}: {err}); starting again in {pause:g} s",
              file=sys.stderr, flush=True)
        _migrated.pop(url, None)

    try:
        # Started again after any failure, 0.5 s then twice as long each time (up to 10 s); Ctrl-C ends it.
        return int(tenacity.Retrying(retry=tenacity.retry_if_exception_type(Exception), stop=tenacity.stop_never,
                                     wait=tenacity.wait_exponential(multiplier=0.5, max=10.0),
                                     before_sleep=restarting)(serve))
    except KeyboardInterrupt:
        return 0
    finally:
        if handoffs is not None:
            handoffs.close()
