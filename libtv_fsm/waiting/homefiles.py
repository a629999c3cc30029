"""The home worker's files under NEXU_HOME (lock, pid, wake, socket, log) and the cheap checks on them. Standard library only.

The create-session client imports this before anything heavy, so it must stay stdlib-only.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

LOCK_NAME = "libtv-worker.lock"      # held by the one worker serving the home (CONTRACT section 8)
SUCCESSOR_LOCK_NAME = "libtv-worker.next.lock"  # held by a worker waiting for an older one to let go
PID_NAME = "libtv-worker.pid"        # the serving worker's pid (for tests and humans; the lock is the truth)
SUCCESSOR_PID_NAME = "libtv-worker.next.pid"
WAKE_NAME = "libtv-worker.wake"      # touched after a submit or a resume: "look at the journals now"
RETRY_NAME = "libtv-worker.retry"    # touched by recover: "try again what you gave up on"
SOCKET_NAME = "libtv-worker.sock"    # create-session through the running worker (AF_UNIX, 0600)
# With a database journal: the same hand-off to a queue worker of this home (CONTRACT section 9).
# Files of their own, so a queue worker is never taken for the home worker of a JSONL journal.
QUEUE_LOCK_NAME = "libtv-queue.lock"
QUEUE_SOCKET_NAME = "libtv-queue.sock"
LOG_NAME = "libtv-worker.log"
# sockaddr_un holds about 108 bytes; a longer path cannot be bound, so that home has no socket.
MAX_SOCKET_PATH = 100


def path(home: str, name: str) -> str:
    return os.path.join(str(home), name)


def socket_path(home: str, name: str = SOCKET_NAME) -> Optional[str]:
    """Where the worker listens, or None where AF_UNIX is missing or the path is too long to bind."""
    import socket

    if not hasattr(socket, "AF_UNIX"):
        return None
    where = path(home, name)
    return where if len(os.fsencode(where)) <= MAX_SOCKET_PATH else None


def worker_mode(env: Mapping[str, str]) -> str:
    """"skip" (start nothing), "process" (one `wait-and-deliver` per session), "queue" (a job on the
    database's task queue, when LIBTV_JOURNAL_URL is set: CONTRACT section 9) or "worker" (the home worker)."""
    if env.get("LIBTV_SKIP_BACKGROUND_WAITER", "").strip().lower() in ("1", "true", "yes"):
        return "skip"
    if env.get("LIBTV_WAITER", "").strip().lower() == "process":
        return "process"
    if env.get("LIBTV_JOURNAL_URL", "").strip():
        return "queue"
    return "worker"


def socket_name(env: Mapping[str, str]) -> str:
    """The socket create-session hands its work to: the queue worker's with a database journal, else the home worker's."""
    return QUEUE_SOCKET_NAME if worker_mode(env) == "queue" else SOCKET_NAME


def journal_of(env: Mapping[str, str]) -> str:
    """The journal a command names (LIBTV_JOURNAL_URL), "" for the home's JSONL files."""
    return (env.get("LIBTV_JOURNAL_URL") or "").strip()


def worker_alive(home: str) -> Optional[bool]:
    """Whether a worker holds the home's lock, by a momentary probe; None: cannot tell here."""
    from libtv_fsm.runlocks import flock_held

    return flock_held(path(home, LOCK_NAME))


def wake(home: str, name: str = WAKE_NAME) -> None:
    """Tell a running worker to look at the journals now (it watches this file's mtime); best effort."""
    where = path(home, name)
    try:
        fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, b".")
            if os.fstat(fd).st_size > 4096:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)
    except OSError:
        pass


def stamp(where: str) -> Optional[tuple]:
    """(mtime_ns, size, inode) of a file or folder, or None: what the worker compares to notice a change."""
    try:
        st = os.stat(where)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
