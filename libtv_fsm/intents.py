"""Submit intents: a request written down before it goes upstream, so a crash mid-submit can be found again.

A new session has no id (and so no journal) until LibTV answers the POST. If the process dies
between LibTV accepting the job and the journal recording it, nothing local would know a paid
job is running. So ``create-session`` first writes an intent (what it is about to send, to which
chat), holds a lock on it while it lives, adds the session id the moment LibTV answers, and
deletes it once the session's journal has the submission. ``recover`` picks up intents whose
writer is gone (their lock is free) and finishes them, or closes them with the reason it cannot.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Dict, List, Optional

from filelock import FileLock, Timeout

from libtv_fsm.errors import JournalError

INTENT_DIR = ".submits"
SUFFIX = ".json"


class SubmitIntent:
    """One written-down submit; ``record`` is its JSON. Held (locked) by the process that has it."""

    def __init__(self, path: Path, record: Dict[str, Any], lock: Optional[FileLock]) -> None:
        self.path = path
        self.record = record
        self._lock = lock

    @property
    def id(self) -> str:
        return str(self.record.get("id") or self.path.stem)

    def update(self, **fields: Any) -> None:
        """Add fields (the session id LibTV gave) durably before anything else happens."""
        self.record.update(fields)
        _write_atomic(self.path, self.record)

    def finish(self) -> None:
        """The submission is in the session's journal (or never left): forget the intent."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise JournalError(f"Cannot remove the submit record {self.path}: {err.strerror or err}") from None
        lock_path = Path(str(self.path) + ".lock")
        self.release()
        try:
            # Safe to delete here, unlike a session lock: whoever takes it next re-checks that
            # the intent file still exists, and it does not.
            lock_path.unlink()
        except OSError:
            pass

    def close(self, outcome: str) -> None:
        """Keep the record, with why it cannot be finished, for a human; recover skips it from now on."""
        self.update(outcome=outcome)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class IntentStore:
    """Intents under ``<journal root>/.submits``, one ``<id>.json`` each, locked by a ``.json.lock`` beside."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / INTENT_DIR

    def begin(self, record: Dict[str, Any]) -> SubmitIntent:
        """Write the intent (fsync'd, 0600) and hold its lock; JournalError if it cannot be written."""
        intent_id = secrets.token_hex(8)
        record = dict(record, id=intent_id, pid=os.getpid())
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise JournalError(f"Cannot create {self.root}: {err.strerror or err}") from None
        path = self.root / f"{intent_id}{SUFFIX}"
        lock = FileLock(str(path) + ".lock", timeout=0)
        try:
            lock.acquire()
        except (Timeout, OSError) as err:
            raise JournalError(f"Cannot lock the submit record {path}: {err}") from None
        try:
            _write_atomic(path, record)
        except JournalError:
            lock.release()
            raise
        return SubmitIntent(path, record, lock)

    def orphans(self) -> List[SubmitIntent]:
        """Open intents whose writer is gone, oldest first; each is locked by this process until released."""
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JournalError(f"Cannot list {self.root}: {err.strerror or err}") from None
        found = []
        for name in names:
            if not name.endswith(SUFFIX):
                continue
            path = self.root / name
            lock = FileLock(str(path) + ".lock", timeout=0)
            try:
                lock.acquire()
            except (Timeout, OSError):
                continue  # its create-session is still running
            if not path.exists():  # finished between the listing and the lock: tidy the lock it left
                lock.release()
                try:
                    os.unlink(str(path) + ".lock")
                except OSError:
                    pass
                continue
            record = _read(path)
            if record is None or record.get("outcome"):
                lock.release()  # unreadable, or closed before: not ours to act on
                continue
            found.append(SubmitIntent(path, record, lock))
        found.sort(key=lambda i: str(i.record.get("at") or ""))
        return found


def _read(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_atomic(path: Path, record: Dict[str, Any]) -> None:
    from libtv_fsm.atomicfile import write_atomic

    data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    try:
        write_atomic(path, data, 0o600)
    except OSError as err:
        raise JournalError(f"Cannot write the submit record {path}: {err.strerror or err}") from None
