"""Which sessions have a live waiter: their run locks (`<id>.run.lock`, a flock held by filelock), read cheaply.

`recover` shows a waiter state for every session. Probing 10,000 lock files one by one costs
an open and two flock calls each; on Linux the kernel lists every held flock in /proc/locks,
so one read answers for all of them, without taking (and so racing) anyone's lock. That list
is trusted only after this process saw its own flock there, under the inode a directory scan
reports, on the journal's own file system; otherwise each lock file is probed in turn.
Standard library only.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Optional, Set

RUN_LOCK = ".run.lock"       # journal.claim_waiter's lock file: <session id>.run.lock
_PROBE = ".runlocks-probe.lock"
BULK_FROM = 200              # run-lock files above which one read of /proc/locks beats probing each


def _held_flocks() -> Set[str]:
    """``maj:min:inode`` of every flock held on the machine (waiting requests, ``->``, excluded)."""
    held = set()
    with open("/proc/locks", encoding="ascii", errors="replace") as fh:
        for line in fh:
            parts = line.split()
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
            if len(parts) >= 6 and parts[1] == "FLOCK":
                held.add(parts[5])
    return held


def _dev(st_dev: int) -> str:
    return f"{os.major(st_dev):02x}:{os.minor(st_dev):02x}"


def held_run_locks(root: str, run_locks: Mapping[int, str]) -> Optional[Set[str]]:
    """The sessions whose run lock is held now, given ``run_locks`` (inode -> session id, from a scan of
    ``root``); None when /proc/locks cannot be trusted here."""
    try:
        import fcntl
    except ImportError:
        return None
    folder = os.path.join(root, "snapshots")
    probe = os.path.join(folder, _PROBE)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None  # another process is checking right now: probe file by file instead
        st = os.fstat(fd)
        held = _held_flocks()
        dev = _dev(st.st_dev)
        if f"{dev}:{st.st_ino}" not in held:
            return None  # the kernel names this file system's locks otherwise (overlayfs, NFS...)
        with os.scandir(folder) as entries:
            if not any(e.name == _PROBE and e.inode() == st.st_ino for e in entries):
                return None  # directory inodes differ from stat's: cannot match names to locks
    except OSError:
        return None
    finally:
        os.close(fd)  # drops our flock
    found = set()
    for key in held:
        where, _, inode = key.rpartition(":")
        if where == dev and inode.isdigit() and int(inode) in run_locks:
            found.add(run_locks[int(inode)])
    return found


def flock_held(path: str) -> Optional[bool]:
    """Whether another process holds a flock on ``path`` (what filelock takes), by a momentary
    non-blocking try: False when free or absent; None where flock is missing or the file cannot be opened."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # no lock file: nobody ever held it
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def probe_one(root: str) -> Optional[Callable[[str], bool]]:
    """Probe one session's run lock with a non-blocking flock (what filelock takes), or None without flock."""
    try:
        import fcntl  # noqa: F401  (only whether the platform has it)
    except ImportError:
        return None

    def running(session_id: str) -> bool:
        return bool(flock_held(os.path.join(root, session_id + RUN_LOCK)))

    return running


def waiter_check(root: str, run_locks: Optional[Mapping[int, str]] = None) -> Optional[Callable[[str], bool]]:
    """A check "is a waiter running for this session?" for the journal folder ``root``; None without flock.

    ``run_locks`` (inode -> session id of every run-lock file, from a directory scan) lets a big
    home be answered from /proc/locks at once; reading that file can cost a few milliseconds, so
    a small home probes its few lock files one by one instead.
    """
    if run_locks is not None and len(run_locks) > BULK_FROM:
        held = held_run_locks(root, run_locks)
        if held is not None:
            return held.__contains__
    return probe_one(root)
