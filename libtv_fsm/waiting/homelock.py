"""The home worker's hold on its NEXU_HOME: the one-worker lock (with its pid file) and its log."""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

from libtv_fsm import events as ev
from libtv_fsm.waiting import homefiles

HOME_LOCK_WAIT = 0.5       # a momentary probe of the lock must not make a starting worker give up


class HomeLock:
    """``$NEXU_HOME/libtv-worker.lock``: held by the one worker that serves the home (``name``: another such
    lock, e.g. the queue worker's libtv-queue.lock; ``pid``: the file naming its holder, None for none)."""

    def __init__(self, home: str, name: str = homefiles.LOCK_NAME, pid: Optional[str] = homefiles.PID_NAME) -> None:
        self.home = home
        self.name = name
        self.pid = pid
        self._lock: Any = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def take(self, wait: float = HOME_LOCK_WAIT, await_older: float = 0.0) -> bool:
        """Take the lock within ``wait`` seconds; or, with ``await_older``, wait that long for an older worker to let go.

        Only one worker waits for an older one (``libtv-worker.next.lock``): another gives up at once.
        """
        from filelock import FileLock, Timeout

        os.makedirs(self.home, exist_ok=True)
        successor = None
        if await_older > 0:
            successor = FileLock(homefiles.path(self.home, homefiles.SUCCESSOR_LOCK_NAME), timeout=0)
            try:
                successor.acquire()
            except Timeout:
                return False
            _write_pid(homefiles.path(self.home, homefiles.SUCCESSOR_PID_NAME))
        lock = FileLock(homefiles.path(self.home, self.name), timeout=wait)
        deadline = time.monotonic() + await_older
        try:
            while True:
                try:
                    lock.acquire()
                    break
                except Timeout:
                    if time.monotonic() >= deadline:
                        return False
        finally:
            if successor is not None:
                _remove_pid(homefiles.path(self.home, homefiles.SUCCESSOR_PID_NAME))
                successor.release()
        self._lock = lock
        if self.pid:
            _write_pid(homefiles.path(self.home, self.pid))
        return True

    def release(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            if self.pid:
                _remove_pid(homefiles.path(self.home, self.pid))
            lock.release()


class WorkerLog:
    """Timestamped lines in ``main`` (libtv-worker.log; None: none); a line about a session also in that
    session's waiter log (0600, as every log the project writes), and to ``echo`` if given."""

    def __init__(self, home: str, echo: Optional[Callable[[str], None]] = None,
                 main: Optional[str] = homefiles.LOG_NAME) -> None:
        self.home = str(home)
        self.echo = echo
        self.main = main

    def __call__(self, line: str, sid: Optional[str] = None) -> None:
        text = f"{ev.format_time(ev.now())} [{sid or 'worker'}] {line}\n".encode("utf-8", "replace")
        targets = [homefiles.path(self.home, self.main)] if self.main else []
        if sid:
            targets.append(homefiles.path(self.home, f"libtv-waiter-{sid}.log"))
        for target in targets:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.write(fd, text)
                finally:
                    os.close(fd)
            except OSError:
                pass
        if self.echo is not None:
            self.echo(text.decode("utf-8").rstrip("\n"))

    def of(self, sid: str) -> Callable[[str], None]:
        def log(line: str) -> None:
            self(line, sid)

        return log


def _write_pid(where: str) -> None:
    try:
        from libtv_fsm.atomicfile import write_atomic

        write_atomic(where, f"{os.getpid()}\n".encode(), durable=False)
    except OSError:
        pass


def _remove_pid(where: str) -> None:
    try:
        with open(where, encoding="ascii") as fh:
            if fh.read().strip() == str(os.getpid()):
                os.unlink(where)
    except (OSError, ValueError):
        pass
