"""The home worker: one process that does the waiter's steps for every unfinished session of a NEXU_HOME (CONTRACT section 8).

A runner of the waiter step (step.py's docstring is its contract). The main thread is the
scheduler: a heap of (due time, session) and the claims; a bounded thread pool does the steps,
which are the HTTP work, so one session's slow call holds one thread, never the others' polls.
Claims (the per-session run locks) are taken and released on the main thread only: a filelock
belongs to the thread that took it.

- Pickup: the journal folder's mtime (a new session is a new file) and the wake file (touched by
  create-session and recover, for an append to an existing journal) are looked at every tick;
  when either changed, or every FULL_SCAN_SECONDS anyway, the listing is read again
  (``store.summaries()``, from the snapshot index). A session is taken when it needs a waiter
  (``recovery.needs_waiter``) and is not ``timeout``: a timed-out session is resumed only by
  ``recover`` (which records ``Resumed``) or ``wait-and-deliver``, as before the worker.
- A session whose claim another process holds (a `wait-and-deliver`) is skipped and tried again
  every BUSY_RETRY_SECONDS; a session this run finished unsuccessfully is left alone until its
  journal changes.
- Idle exit after ``idle_exit`` seconds with nothing served. The home lock is let go before a
  last full scan, so a session journaled while the worker was leaving is either seen by that
  scan or by the worker its create-session starts (the lock was free by then).
- SIGTERM/SIGINT (or ``retire()``): no new step starts; the steps in progress (a send included)
  finish; claims are released; exit 0.
"""
from __future__ import annotations

import functools
import heapq
import os
import queue
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from libtv_fsm import events as ev
from libtv_fsm.journal.jsonl import JOURNAL_DIR
from libtv_fsm.machine import TIMEOUT
from libtv_fsm.waiting import homefiles
from libtv_fsm.waiting.context import Due, Finished, RunContext
from libtv_fsm.waiting.homelock import HomeLock, WorkerLog
from libtv_fsm.waiting.settings import EXIT_ERROR, EXIT_OK, WaitSettings

TICK = 0.1                 # the scheduler's longest sleep: pickup and stop latency
FULL_SCAN_SECONDS = 10.0   # a full look at the listing even when nothing seemed to change
BUSY_RETRY_SECONDS = 1.0   # a session another waiter holds is tried again this often
ERROR_RETRY_SECONDS = 5.0  # an unexpected error in a step: try again after this (times the count)
MAX_STEP_ERRORS = 3        # ... at most this many times in a row, then leave it to `recover`


class _Served:
    """A session this worker holds the claim of: its edges, its run context, its step errors."""

    __slots__ = ("sid", "claim", "edges", "context", "started", "errors")

    def __init__(self, sid: str, claim: Any, edges: Any) -> None:
        self.sid = sid
        self.claim = claim
        self.edges = edges
        self.context = RunContext()
        self.started = False
        self.errors = 0


class HomeWorker:
    """Serves every unfinished session of ``store``; :meth:`run` returns the exit code (0)."""

    def __init__(self, store: Any, env: Mapping[str, str], *, concurrency: int = 8, idle_exit: float = 600.0,
                 log: Optional[WorkerLog] = None, await_lock: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.home = str(store.home)
        self.env = env
        self.settings = WaitSettings.from_env(env)  # a bad setting is refused before anything starts
        self.concurrency = max(1, int(concurrency))
        self.idle_exit = max(0.0, float(idle_exit))
        self.log = log or WorkerLog(self.home)
        self.await_lock = await_lock
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="libtv-step")
        self.results: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self.served: Dict[str, _Served] = {}
        self.heap: List[Tuple[float, int, str]] = []
        self.running: Set[str] = set()
        self.busy: Dict[str, float] = {}          # held by another waiter: sid -> when to try again
        self.done: Dict[str, Optional[str]] = {}  # finished here without success: sid -> its journal's key then
        self.stopping = False
        self._counter = 0
        self._http: Any = None
        self._http_lock = threading.Lock()
        self.home_lock = HomeLock(self.home)
        self._last_busy = time.monotonic()
        self.listener: Any = None  # the create-session socket, open while the home lock is held

    # -- the shared HTTP session -----------------------------------------------------------------

    @property
    def http(self) -> Any:
        with self._http_lock:  # the pool threads and the socket's threads ask for it first
            if self._http is None:
                from libtv_fsm.transport import new_session

                # One pool of warm connections for every session; a connection per pool thread and some spare.
                self._http = new_session(pool_size=self.concurrency + 4)
            return self._http

    # -- the whole run ---------------------------------------------------------------------------

    def retire(self, why: str) -> None:
        """Stop taking work; finish the steps in progress; exit (a signal, or a newer version asked)."""
        if not self.stopping:
            self.stopping = True
            self._why = why

    def run(self) -> int:
        if not self._take_home_lock():
            self.log(f"another worker serves {self.home}; exiting")
            return 0
        previous = self._install_signals()
        try:
            self.log(f"worker {os.getpid()} serving {self.home} (concurrency {self.concurrency}, "
                     f"idle exit {self.idle_exit:g} s)")
            self._serve()
        finally:
            self._restore_signals(previous)
            self.pool.shutdown(wait=True)
            self._drain()
            for served in list(self.served.values()):
                self._let_go(served, "worker stopping")
            self._release_home_lock()
        self.log(f"worker {os.getpid()} exiting ({getattr(self, '_why', 'idle')})")
        return 0

    def _serve(self) -> None:
        root = os.path.join(self.home, JOURNAL_DIR)
        wake = homefiles.path(self.home, homefiles.WAKE_NAME)
        retry = homefiles.path(self.home, homefiles.RETRY_NAME)
        seen = (homefiles.stamp(root), homefiles.stamp(wake))
        asked = homefiles.stamp(retry)
        next_full = 0.0
        while True:
            self._drain()
            now = time.monotonic()
            if self.stopping:
                if not self.running and self._quiesced():
                    return
            else:
                current = (homefiles.stamp(root), homefiles.stamp(wake))
                if homefiles.stamp(retry) != asked:
                    asked = homefiles.stamp(retry)
                    self.done.clear()  # `recover` asks for another try at what this run gave up on
                    next_full = now
                if current != seen or now >= next_full:
                    seen = current
                    next_full = now + FULL_SCAN_SECONDS
                    self._scan()
                elif self.busy and min(self.busy.values()) <= now:
                    self._retry_busy([sid for sid, at in self.busy.items() if at <= now])
                self._dispatch(now)
                if self.served or self.running or self._submitting():
                    self._last_busy = now
                elif now - self._last_busy >= self.idle_exit and self._leave_if_idle():
                    return
            self._wait(now)

    def _submitting(self) -> bool:
        return self.listener is not None and self.listener.active > 0

    def _quiesced(self) -> bool:
        """No submission over the socket in progress, and none can start any more."""
        return self.listener is None or self.listener.quiesce()

    def _wait(self, now: float) -> None:
        timeout = TICK
        # With every thread busy a due step cannot start anyway: wait for one to finish (it wakes
        # this at once) instead of spinning on a zero timeout against the threads for the GIL.
        if self.heap and not self.stopping and len(self.running) < self.concurrency:
            timeout = min(timeout, max(0.0, self.heap[0][0] - now))
        try:
            sid, outcome = self.results.get(timeout=timeout)
        except queue.Empty:
            return
        self._settle(sid, outcome)

    def _leave_if_idle(self) -> bool:
        """Let go of the home lock, then look once more; True: nothing came in, exit."""
        if not self._quiesced():
            return False  # a create-session came in just now
        self._release_home_lock()
        self._scan()
        if not self.served:
            self._why = "idle"
            return True
        # A session arrived while leaving: serve it if the home is still ours, else the newer worker will.
        if self._take_home_lock(wait=0.0):
            self._last_busy = time.monotonic()
            return False
        for served in list(self.served.values()):
            self._let_go(served, "another worker took over")
        self.heap.clear()
        self._why = "another worker took over"
        return True

    # -- the home lock -----------------------------------------------------------------------------

    def _take_home_lock(self, wait: Optional[float] = None) -> bool:
        """The home lock (``wait``: for that long; default: the start, awaiting an older worker if asked), then the socket."""
        if wait is not None:
            taken = self.home_lock.take(wait)
        else:
            taken = self.home_lock.take(await_older=self.await_lock) if self.await_lock > 0 else self.home_lock.take()
        if taken:
            if self.listener is None:
                from libtv_fsm.waiting.listener import Listener

                self.listener = Listener(self, self.log)
            self.listener.open()
        return taken

    def _release_home_lock(self) -> None:
        if self.home_lock.held:
            if self.listener is not None:
                self.listener.close()  # before the lock: the next worker binds the same path
            self.home_lock.release()

    def _install_signals(self) -> Dict[int, Any]:
        previous: Dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous

        def stop(signum: int, _frame: Any) -> None:
            # Only a flag: the scheduler sees it within a tick; nothing here may take a lock.
            self.stopping = True
            self._why = f"signal {signum}"

        for name in ("SIGTERM", "SIGINT"):
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, stop)
        return previous

    @staticmethod
    def _restore_signals(previous: Dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # -- pickup ----------------------------------------------------------------------------------

    def _scan(self) -> None:
        """Take every session of the listing that needs a waiter (from the snapshot index: cheap)."""
        from libtv_fsm.errors import LibtvError

        try:
            rows = self.store.summaries()
        except LibtvError as err:
            self.log(f"cannot list the sessions: {err}")
            return
        for row in rows:
            sid = row.session_id
            if sid in self.served:
                continue
            if not workable(row):
                self.busy.pop(sid, None)
                self.done.pop(sid, None)
                continue
            if sid in self.done:
                if self.done[sid] == self._key(sid):
                    continue
                del self.done[sid]
            self._take(sid)

    def _retry_busy(self, sids: List[str]) -> None:
        """Try again the sessions another waiter held; only their own journals are read."""
        from libtv_fsm.errors import LibtvError

        for sid in sids:
            try:
                still = workable(self.store.replay(sid))
            except LibtvError as err:
                self.log(f"cannot read session {sid}: {err}", sid)
                still = False
            if still:
                self._take(sid)
            else:
                self.busy.pop(sid, None)

    def _key(self, sid: str) -> Optional[str]:
        st = homefiles.stamp(os.path.join(self.home, JOURNAL_DIR, f"{sid}.jsonl"))
        return None if st is None else ".".join(map(str, st))

    def _take(self, sid: str) -> None:
        """Claim the session and schedule its first step; a session another waiter holds is tried again later."""
        from libtv_fsm.errors import LibtvError

        try:
            claim = self.store.journal.claim_waiter(sid)
        except LibtvError as err:
            self.log(f"cannot claim session {sid}: {err}", sid)
            self.busy[sid] = time.monotonic() + BUSY_RETRY_SECONDS
            return
        if not claim.held:
            if sid not in self.busy:
                self.log(f"session {sid} is held by another waiter; will look again", sid)
            self.busy[sid] = time.monotonic() + BUSY_RETRY_SECONDS
            return
        self.busy.pop(sid, None)
        try:
            edges = self._edges(sid)
        except LibtvError as err:
            claim.release()
            self.log(f"cannot serve session {sid}: {err}", sid)
            self.done[sid] = self._key(sid)
            return
        self.served[sid] = _Served(sid, claim, edges)
        self._schedule(sid, 0.0)

    def _edges(self, sid: str) -> Any:
        from libtv_fsm.config import require_api_key
        from libtv_fsm.waiting.step import Edges

        return Edges(self.store, sid, api_key=require_api_key(self.store.home), env=self.env,
                     settings=self.settings, log=self.log.of(sid), http=self.http)

    # -- steps -----------------------------------------------------------------------------------

    def _schedule(self, sid: str, seconds: float) -> None:
        self._counter += 1
        heapq.heappush(self.heap, (time.monotonic() + max(0.0, seconds), self._counter, sid))

    def _dispatch(self, now: float) -> None:
        while self.heap and self.heap[0][0] <= now and len(self.running) < self.concurrency:
            _, _, sid = heapq.heappop(self.heap)
            served = self.served.get(sid)
            if served is None:
                continue
            self.running.add(sid)
            future = self.pool.submit(self._step, served)
            future.add_done_callback(functools.partial(self._done, sid))

    def _done(self, sid: str, future: "Future[Any]") -> None:
        self.results.put((sid, future))  # on the pool thread: the scheduler settles it

    def _step(self, served: _Served) -> Any:
        """One step of one session, on a pool thread (the claim is held by the main thread meanwhile)."""
        from libtv_fsm.waiting.step import step

        edges = served.edges
        session = self.store.load(served.sid)
        if not served.started:
            served.started = True
            if not workable(session):
                return Finished(EXIT_OK)  # another waiter ended or timed it out since the listing: nothing to do
            # Never a timed-out session here (recover records its Resumed), so WaiterStarted alone.
            session = edges.record(ev.WaiterStarted(at=ev.now(), pid=os.getpid()))
        return step(edges, session, served.context, self.clock)

    def _drain(self) -> None:
        while True:
            try:
                sid, outcome = self.results.get_nowait()
            except queue.Empty:
                return
            self._settle(sid, outcome)

    def _settle(self, sid: str, future: "Future[Any]") -> None:
        """What a finished step says: the next one's due time, or the session let go."""
        self.running.discard(sid)
        served = self.served.get(sid)
        if served is None:
            return
        error = future.exception()
        if error is not None:
            served.errors += 1
            self.log(f"step failed ({served.errors}/{MAX_STEP_ERRORS}): {type(error).__name__}: {error}", sid)
            if served.errors >= MAX_STEP_ERRORS:
                self._let_go(served, "giving up after repeated errors; `recover` will try again", EXIT_ERROR)
            elif not self.stopping:
                self._schedule(sid, ERROR_RETRY_SECONDS * served.errors)
            return
        served.errors = 0
        result = future.result()
        if isinstance(result, Finished):
            self._let_go(served, f"finished (exit code {result.code})", result.code)
        elif isinstance(result, Due):
            served.context = result.context
            if self.stopping:
                self._let_go(served, "worker stopping; the next step is left to the next waiter")
            else:
                self._schedule(sid, result.seconds)

    def _let_go(self, served: _Served, why: str, code: Optional[int] = None) -> None:
        self.served.pop(served.sid, None)
        served.claim.release()
        if code not in (None, 0):
            self.done[served.sid] = self._key(served.sid)
        self.log(f"session {served.sid}: {why}", served.sid)


def workable(session: Any) -> bool:
    """Whether the worker takes a session (a Session or a listing Summary): it needs a waiter and is not timed out."""
    from libtv_fsm.recovery import needs_waiter

    return session.state != TIMEOUT and needs_waiter(session)


def serve(store: Any, env: Mapping[str, str], *, concurrency: int, idle_exit: float, await_lock: float = 0.0,
          echo: Optional[Callable[[str], None]] = None) -> int:
    """`libtv-video worker`: run the home worker in the foreground until idle, signalled or retired."""
    worker = HomeWorker(store, env, concurrency=concurrency, idle_exit=idle_exit, await_lock=await_lock,
                        log=WorkerLog(str(store.home), echo))
    return worker.run()
