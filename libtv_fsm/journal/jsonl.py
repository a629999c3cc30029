"""The JSONL journal: one file per session, guarded by filelock; the only code that writes those files.

Every line is one event with the session's sequence number (``seq``, 1, 2, ...). An append
names the version it expects (the last seq it saw) and is refused under the lock if another
process got there first (the ``Journal`` interface of base.py). A torn or garbage line is
skipped on read (and counted); the next append starts on a fresh line, so nothing earlier is lost.
"""
from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, Union

from filelock import FileLock, Timeout

from libtv_fsm import failpoints
from libtv_fsm.atomicfile import fsync_dir, read_steady
from libtv_fsm.errors import ConcurrencyConflict, JournalError
from libtv_fsm.events import Event, from_record, to_record
from libtv_fsm.ids import validate_session_id
from libtv_fsm.intents import IntentStore
from libtv_fsm.journal.base import AnyEvent, Journal, JournalRead, WaiterClaim

JOURNAL_DIR = "libtv-journal"
LOCK_TIMEOUT = 30.0


class JsonlJournal(Journal):
    """One ``<session_id>.jsonl`` file per session under ``<home>/libtv-journal``, guarded by filelock."""

    def __init__(self, home: Union[str, Path]) -> None:
        self.root = Path(home) / JOURNAL_DIR
        # (size, mtime_ns) -> version of files this process read or wrote: skips a re-read on append.
        self._known: Dict[str, Tuple[Tuple[int, int], int]] = {}

    # -- paths --------------------------------------------------------------------------------

    def path(self, session_id: str) -> Path:
        return self.root / f"{validate_session_id(session_id)}.jsonl"

    def location(self, session_id: str) -> str:
        return str(self.path(session_id).resolve())

    def exists(self, session_id: str) -> bool:
        return self.path(session_id).is_file()

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise JournalError(f"Cannot create the journal folder {self.root}: {err.strerror or err}") from None

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)
        try:
            lock.acquire()
        except Timeout:
            raise JournalError(f"The journal {path.name} is locked by another process (waited {LOCK_TIMEOUT:.0f} s)") from None
        except OSError as err:
            raise JournalError(f"Cannot lock the journal {path}: {err.strerror or err}") from None
        try:
            yield
        finally:
            lock.release()

    # -- reading ------------------------------------------------------------------------------

    def read(self, session_id: str) -> JournalRead:
        path = self.path(session_id)
        try:
            data, steady = read_steady(path)
        except FileNotFoundError:
            return JournalRead([])
        except OSError as err:
            raise JournalError(f"Cannot read the journal {path}: {err.strerror or err}") from None
        result = parse_lines(data)
        if steady is not None:
            self._known[session_id] = ((steady.st_size, steady.st_mtime_ns), result.version)
        else:
            # Another process appended while we read: the version we parsed may be older than
            # the file's size says. Caching it would let our next append skip the version check
            # and write a sequence number twice.
            self._known.pop(session_id, None)
        return result

    def is_at(self, session_id: str, version: int) -> bool:
        """Whether the file is still exactly as this process last read or wrote it, at ``version`` (one stat, no read)."""
        known = self._known.get(session_id)
        if known is None or known[1] != version:
            return False
        try:
            st = os.stat(self.path(session_id))
        except OSError:
            return False
        return known[0] == (st.st_size, st.st_mtime_ns)

    def session_ids(self) -> List[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JournalError(f"Cannot list the journal folder {self.root}: {err.strerror or err}") from None
        ids = []
        for name in names:
            if name.endswith(".jsonl"):
                sid = name[: -len(".jsonl")]
                try:
                    ids.append(validate_session_id(sid))
                except Exception:
                    continue  # a stray file, not one of ours
        return sorted(ids)

    # -- writing ------------------------------------------------------------------------------

    def append(self, session_id: str, events: Sequence[Event], expected_version: int) -> int:
        if not events:
            return expected_version
        path = self.path(session_id)
        self._ensure_root()
        with self._locked(path):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as err:
                raise JournalError(f"Cannot open the journal {path}: {err.strerror or err}") from None
            try:
                return self._append_locked(session_id, fd, events, expected_version)
            finally:
                os.close(fd)

    def _append_locked(self, session_id: str, fd: int, events: Sequence[Event], expected_version: int) -> int:
        stat = os.fstat(fd)
        known = self._known.get(session_id)
        if known is not None and known[0] == (stat.st_size, stat.st_mtime_ns):
            version = known[1]
        else:
            version = parse_lines(_read_fd(fd)).version
        if version != expected_version:
            raise ConcurrencyConflict(
                f"Session {session_id} changed meanwhile (at version {version}, expected {expected_version})"
            )
        lines = []
        types = []
        for offset, event in enumerate(events, start=1):
            record = {"seq": version + offset}
            record.update(to_record(event))
            types.append(str(record.get("type")))
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        if failpoints.ARMED:
            for kind in types:
                failpoints.hit("before_append:" + kind)
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        if stat.st_size and _last_byte(fd, stat.st_size) != b"\n":
            payload = b"\n" + payload  # a torn last line stays a line of its own, skipped on read
        try:
            _write_all(fd, payload)
            os.fsync(fd)
        except OSError as err:
            try:  # leave the file as it was: no half line for the next reader
                os.ftruncate(fd, stat.st_size)
            except OSError:
                pass
            reason = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise JournalError(f"Could not write to the journal of session {session_id}: {reason}; nothing was recorded") from None
        if stat.st_size == 0:
            fsync_dir(self.root)
        if failpoints.ARMED:
            for kind in types:
                failpoints.hit("after_append:" + kind)
        new_version = version + len(events)
        after = os.fstat(fd)
        self._known[session_id] = ((after.st_size, after.st_mtime_ns), new_version)
        return new_version

    def intents(self) -> IntentStore:
        return IntentStore(self.root)

    # -- the one waiter -----------------------------------------------------------------------

    def claim_waiter(self, session_id: str, wait: float = 0.0) -> WaiterClaim:
        path = self.path(session_id)
        self._ensure_root()
        lock = FileLock(str(path.with_suffix(".run.lock")), timeout=max(0.0, wait))
        try:
            lock.acquire()
        except Timeout:
            return WaiterClaim(None)
        except OSError as err:
            raise JournalError(f"Cannot lock {path.name} for its waiter: {err.strerror or err}") from None
        return WaiterClaim(lock)


def parse_lines(data: bytes) -> JournalRead:
    """Read journal bytes: every whole, valid line whose ``seq`` goes past the last one read, in order."""
    entries: List[Tuple[int, AnyEvent]] = []
    skipped = 0
    problems: List[str] = []
    version = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
            seq = record["seq"] if isinstance(record, dict) else None
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise ValueError("no sequence number")
            if seq <= version:
                raise ValueError(f"sequence {seq} repeats or goes back (after {version})")
            fields = {k: v for k, v in record.items() if k != "seq"}
            event = from_record(fields)
        except Exception as err:  # a torn line, a hand edit, a record this version cannot read
            skipped += 1
            problems.append(f"line {number}: {_short(err)}")
            continue
        if seq > version + 1:
            # A line lost in the middle (a hand edit, bit rot): keep everything after it.
            problems.append(f"line {number}: sequence jumps from {version} to {seq}")
        version = seq
        entries.append((seq, event))
    return JournalRead(entries, skipped, tuple(problems))


def _short(err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:120]


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: List[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _last_byte(fd: int, size: int) -> bytes:
    return os.pread(fd, 1, size - 1) if hasattr(os, "pread") else _read_fd(fd)[-1:]


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]
