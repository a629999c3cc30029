"""The journal interface: append with an expected version, read a session, list sessions, claim the one waiter.

Every store implements it (jsonl.py: one file per session; a PostgreSQL one with a unique
(session_id, seq) key), and nothing above it changes with the store. Optimistic concurrency:
an append names the version it expects (the last seq it saw) and is refused if another
process got there first, the thing that makes "two waiters never both deliver" true.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Union

import attr

from libtv_fsm.events import Event, UnknownEvent

class Releasable(Protocol):
    """What a claim holds: a file lock, a database session lock."""

    def release(self) -> None: ...


class SubmitIntent(Protocol):
    """A submit written down before it is sent (intents.py), held by the process that has it."""

    record: Dict[str, Any]

    @property
    def id(self) -> str: ...

    def update(self, **fields: Any) -> None: ...

    def finish(self) -> None: ...

    def close(self, outcome: str) -> None: ...

    def release(self) -> None: ...


class SubmitIntents(Protocol):
    """Where a store keeps submit intents: the JSONL store's files (intents.IntentStore), a PostgreSQL table."""

    def begin(self, record: Dict[str, Any]) -> SubmitIntent: ...

    def orphans(self) -> Sequence[SubmitIntent]: ...

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


@attr.frozen
class Appended:
    """One event as :meth:`Journal.subscribe` yields it: whose, at which seq, and (PostgreSQL) its global position."""

    session_id: str
    seq: int
    event: AnyEvent
    position: Optional[int] = None


class Journal(ABC):
    """Where session events live. Implementations: :class:`JsonlJournal` (one file per session), ``PostgresJournal``."""

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

    def read_many(self, session_ids: Sequence[str]) -> Dict[str, JournalRead]:
        """Several sessions at once (a listing); a database answers in one query. Each id maps to its read."""
        return {sid: self.read(sid) for sid in session_ids}

    def intents(self) -> Optional[SubmitIntents]:
        """Where ``create-session`` writes down a submit before sending it (None: not supported here)."""
        return None

    def subscribe(self, after: Optional[int] = None, idle_timeout: Optional[float] = None) -> Iterator[Appended]:
        """Every event appended from now on (``after``: from that position on instead), as it is appended.

        Ends after ``idle_timeout`` seconds without a new event (None: never).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be followed")

    def close(self) -> None:
        """Let go of what the journal holds open (connections); a later call opens them again."""
        return None


class WaiterClaim:
    """The run lock of one session's waiter; ``held`` says whether this process got it."""

    def __init__(self, lock: "Optional[Releasable]") -> None:
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
