"""A queue worker's create-session socket: create-session handed to a queue worker of the same home.

With a database journal a create-session is a fresh process that imports psycopg and
procrastinate, connects and checks both schemas before it can submit. A queue worker already has
all that. So the first queue worker of a NEXU_HOME (the one holding ``libtv-queue.lock``) listens
on ``libtv-queue.sock`` with the home worker's Listener and protocol (handoff.py): the command's
own ``submit_request`` runs in the worker with the command's arguments and environment, and its
JSON line and exit code go back. A command that names another journal, or comes from another
version of the code, is refused and submits by itself, as when no worker runs. The other queue
workers of the home (and those on other hosts) serve jobs only.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from libtv_fsm.waiting import homefiles

DRAIN_SECONDS = 60.0  # at exit, how long submissions already handed over get to finish


class QueueHandoffs:
    """What the Listener needs of its worker (home, http, stopping, retire), for a queue worker process."""

    def __init__(self, home: str, journal: str, log: Callable[[str], None], pool_size: int = 8) -> None:
        self.home = str(home)
        self.journal = journal
        self.log = log
        self.stopping = False
        self._pool_size = pool_size
        self._http: Any = None
        self._http_lock = threading.Lock()
        self._lock: Any = None
        self._listener: Any = None
        self._store: Any = None

    @property
    def store(self) -> Any:
        """One store of this home on the worker's journal for every submission (the Listener checked both match),
        so a create-session costs no new connection and no schema check."""
        with self._http_lock:
            if self._store is None:
                from libtv_fsm.store import SessionStore

                self._store = SessionStore.from_url(self.journal, self.home)
            return self._store

    @property
    def http(self) -> Any:
        with self._http_lock:  # one pool of warm connections for the submissions' threads
            if self._http is None:
                from libtv_fsm.transport import new_session

                self._http = new_session(pool_size=self._pool_size)
            return self._http

    def retire(self, why: str) -> None:
        """A command of another version asked: it submits by itself; this worker goes on serving jobs."""
        self.log(f"create-session socket: {why}; commands of that version submit by themselves")

    def open(self) -> bool:
        """Listen if no other queue worker of this home does; True if this one listens."""
        from libtv_fsm.waiting.homelock import HomeLock
        from libtv_fsm.waiting.listener import Listener

        lock = HomeLock(self.home, homefiles.QUEUE_LOCK_NAME, pid=None)
        if not lock.take(wait=0):
            return False
        self._lock = lock
        self._listener = Listener(self, self.log, name=homefiles.QUEUE_SOCKET_NAME, journal=self.journal)
        self._listener.open()
        return bool(self._listener.listening)

    def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Take no new submission, let those handed over finish (up to ``drain`` s), then free the socket and the lock."""
        self.stopping = True
        listener, self._listener = self._listener, None
        if listener is not None:
            deadline = time.monotonic() + drain
            while not listener.quiesce() and time.monotonic() < deadline:
                time.sleep(0.05)
            listener.close()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()
        store, self._store = self._store, None
        if store is not None:
            store.journal.close()


def open_handoffs(env: Any, log: Callable[[str], None]) -> Optional[QueueHandoffs]:
    """The home's create-session socket for this queue worker, or None (another one has it, or none can be bound)."""
    from libtv_fsm.config import nexu_home

    handoffs = QueueHandoffs(str(nexu_home(env)), homefiles.journal_of(env), log)
    if handoffs.open():
        return handoffs
    handoffs.close(drain=0)
    return None
