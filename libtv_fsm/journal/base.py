"""The journal interface: append with an expected version, read a session, list sessions, claim the one waiter.

Every store implements it (jsonl.py: one file per session; a PostgreSQL one with a unique
(session_id, seq) key), and nothing above it changes with the store. Optimistic concurrency:
an append names the version it expects (the last seq it saw) and is refused if another
process got there first, the thing that makes "two waiters never both deliver" true.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import attr

from libtv_fsm.events import Event, UnknownEvent

if TYPE_CHECKING:
    from filelock import FileLock

    from libtv_fsm.intents import IntentStore

AnyEvent = Union[Event, UnknownEvent]


@attr.frozen
class JournalRead:
    """What reading one session's journal gave: its events in order, and what had to be skipped."""

    entries: List[Tuple[int, AnyEvent]]
    skipped: int = 0
    problems: Tuple[str, ...] = ()

    @property
    def version(self) -> int:
        return self.entries[-1][0] if self.entries else 0


class Journal(ABC):
    """Where session events live. Implementations: :class:`JsonlJournal` (one file per session)."""

    @abstractmethod
    def append(self, session_id: str, events: Sequence[Event], expected_version: int) -> int:
        """Append ``events`` after ``expected_version``; return the new version.

        Raises ConcurrencyConflict if the session's version is not ``expected_version``.
        """

    @abstractmethod
    def read(self, session_id: str) -> JournalRead:
        """Every readable event of the session, in order (empty if the session is unknown)."""

    @abstractmethod
    def session_ids(self) -> List[str]:
        """Every session that has a journal."""

    @abstractmethod
    def exists(self, session_id: str) -> bool:
        """Whether the session has a journal."""

    @abstractmethod
    def location(self, session_id: str) -> str:
        """Where the session's journal is (a path, a table row): shown by ``history``."""

    @abstractmethod
    def claim_waiter(self, session_id: str, wait: float = 0.0) -> "WaiterClaim":
        """Try (for up to ``wait`` seconds) to become the one waiter of the session; check ``claim.held``."""

    def intents(self) -> "Optional[IntentStore]":
        """Where ``create-session`` writes down a submit before sending it (None: not supported here)."""
        return None


class WaiterClaim:
    """The run lock of one session's waiter; ``held`` says whether this process got it."""

    def __init__(self, lock: Optional[FileLock]) -> None:
        self._lock = lock

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "WaiterClaim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
