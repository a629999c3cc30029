"""The PostgreSQL journal: one row per event, keyed by (session_id, seq), so runtimes on several hosts share one journal.

The same :class:`Journal` as the JSONL files. A row's ``body`` is the JSON of a JSONL line (``seq``
and the cattrs record of events.to_record); the primary key (session_id, seq) is the
expected-version check: of two writers of one seq, the second meets a unique violation, which is
the ConcurrencyConflict the JSONL store raises. ``position`` (an identity) numbers every event in
commit order (appends take the table's EXCLUSIVE lock, which leaves plain reads alone), so a
subscriber that follows positions never skips one committed late.

The waiter claim is a session-level advisory lock held on a connection of its own for the claim's
life: a process (or host) that dies drops its connection, and the server lets the claim go.

A database restart is survived: the next call reconnects. Reads retry for up to ``retry_seconds``;
an append whose connection broke mid-transaction may or may not have committed, so it is never
repeated blindly: the rows at its seqs are read back, and only if they are absent is it tried again.

Imports psycopg (the ``postgres`` extra); nothing else in the package imports this module unless a
``postgresql://`` journal is asked for.
"""
from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar

import psycopg
import tenacity
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from libtv_fsm import failpoints
from libtv_fsm.errors import ConcurrencyConflict, JournalError
from libtv_fsm.events import Event, from_record, to_record
from libtv_fsm.ids import validate_session_id
from libtv_fsm.journal.base import AnyEvent, Appended, Journal, JournalRead, WaiterClaim

if TYPE_CHECKING:
    from libtv_fsm.journal.postgres_intents import PostgresIntents

EVENTS = "libtv_events"
VIEWS = "libtv_session_views"
# The advisory lock key of a session's waiter claim (one per schema and session).
CLAIM_KEY = "hashtextextended(current_schema() || ':' || %s, 7)"
SCHEMA_VERSION = "libtv_schema_version"
CHANNEL = "libtv_journal"

# Versioned schema: (version, statements). A new version is appended, never edited.
MIGRATIONS: Tuple[Tuple[int, Tuple[str, ...]], ...] = (
    (1, (
        f"""CREATE TABLE IF NOT EXISTS {EVENTS} (
            position   bigint GENERATED ALWAYS AS IDENTITY,
            session_id text NOT NULL,
            seq        integer NOT NULL CHECK (seq > 0),
            body       jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT {EVENTS}_pkey PRIMARY KEY (session_id, seq),
            CONSTRAINT {EVENTS}_position_key UNIQUE (position)
        )""",
    )),
    (2, (
        # Submit intents (postgres_intents.py): one row per request written down before it is sent.
        """CREATE TABLE IF NOT EXISTS libtv_submit_intents (
            id         text PRIMARY KEY,
            record     jsonb NOT NULL,
            outcome    text,
            created_at timestamptz NOT NULL DEFAULT now()
        )""",
    )),
    (3, (
        # A cache per session for listings (journal/projections.py, DatabaseSummaries): what it was
        # built from is ``version``; a row behind its session's events is replayed instead.
        f"""CREATE TABLE IF NOT EXISTS {VIEWS} (
            session_id text PRIMARY KEY,
            version    integer NOT NULL,
            doc        jsonb NOT NULL
        )""",
    )),
)
LATEST = MIGRATIONS[-1][0]

# How long a call keeps reconnecting before it reports the database unreachable.
RETRY_SECONDS = 30.0
CONNECT_TIMEOUT = 5
# A subscriber re-reads this often even without a notification (a lost NOTIFY is only late).
SUBSCRIBE_POLL_SECONDS = 10.0

T = TypeVar("T")


class DatabaseUnreachable(JournalError):
    """The journal database could not be reached (down, restarting, a wrong URL) within ``retry_seconds``."""


def where(url: str) -> str:
    """The database a URL names, for messages: host, port and name, never the user's password."""
    from libtv_fsm.journal import describe_url

    return describe_url(url)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


class PostgresJournal(Journal):
    """Session events as rows of ``libtv_events`` in the database ``url`` names (created on first use)."""

    def __init__(self, url: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        self.url = url
        self.retry_seconds = retry_seconds
        self.poll_seconds = SUBSCRIBE_POLL_SECONDS
        self._conn: "Optional[psycopg.Connection[Tuple[Any, ...]]]" = None
        self._ready = False
        # One connection per journal, used by one thread at a time (a transaction must not interleave).
        self._mutex = threading.RLock()
        # Called inside an append's transaction, on its connection, after its rows: (conn, session_id, bodies).
        # What they write commits with the events or not at all (the task queue's first job: waiting/queue.py).
        self.append_hooks: List[Callable[["psycopg.Connection[Tuple[Any, ...]]", str, List[Dict[str, Any]]], None]] = []

    # -- connections ----------------------------------------------------------------------------

    def connect(self) -> "psycopg.Connection[Tuple[Any, ...]]":
        """A new autocommit connection to the journal's database (JournalError if it cannot be had)."""
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name="libtv-fsm")
        except psycopg.Error as err:
            raise _Unreachable(err) from None

    def _connection(self) -> "psycopg.Connection[Tuple[Any, ...]]":
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._drop()
            conn = self._conn = self.connect()
        if not self._ready:
            _migrate(conn)
            self._ready = True
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass

    def close(self) -> None:
        with self._mutex:
            self._drop()

    def _lost(self, err: BaseException) -> bool:
        """Whether ``err`` means the connection is gone (worth a reconnect), not a refusal by the server."""
        if isinstance(err, _Unreachable):
            return True
        conn = self._conn
        return isinstance(err, psycopg.OperationalError) and (conn is None or conn.closed or conn.broken)

    def _call(self, work: Callable[["psycopg.Connection[Tuple[Any, ...]]"], T], retry: bool = True) -> T:
        """Run ``work`` on the connection; if the connection is lost, reconnect and (``retry``) run it again."""
        def once() -> T:
            with self._mutex:
                try:
                    return work(self._connection())
                except (psycopg.Error, _Unreachable) as err:
                    if not self._lost(err):
                        raise JournalError(f"The journal database {where(self.url)} refused a request: {_short(err)}") from None
                    self._drop()
                    raise _Unreachable(err.cause if isinstance(err, _Unreachable) else err) from None

        try:
            return self._reconnecting(_Unreachable, retry)(once)
        except _Unreachable as err:
            raise DatabaseUnreachable(f"The journal database {where(self.url)} is unreachable: {_short(err.cause)}") from None

    def _reconnecting(self, lost: type, retry: bool = True) -> "tenacity.Retrying":
        """Try again on ``lost``, 0.05 s then twice as long each time (up to 1 s), for ``retry_seconds`` in all."""
        return tenacity.Retrying(retry=tenacity.retry_if_exception_type(lost), reraise=True,
                                 stop=tenacity.stop_before_delay(self.retry_seconds) if retry else tenacity.stop_after_attempt(1),
                                 wait=tenacity.wait_exponential(multiplier=0.05, max=1.0))

    def with_connection(self, work: Callable[["psycopg.Connection[Tuple[Any, ...]]"], T]) -> T:
        """Run ``work`` on the journal's connection (autocommit), reconnecting as reads do (the task queue's defers)."""
        return self._call(work)

    def migrate(self) -> Tuple[int, int]:
        """Create or upgrade the schema; (version before, version now). Re-runnable."""
        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> Tuple[int, int]:
            return _migrate(conn)

        with self._mutex:
            self._ready = True  # this call is the migration: the connection need not run it first
            return self._call(work)

    def migrate_once(self) -> None:
        """Make sure the schema is current (done once per journal object, on its first call)."""
        if not self._ready:
            self._call(lambda conn: None)

    def connect_or_fail(self) -> "psycopg.Connection[Tuple[Any, ...]]":
        """A new connection of its own (for a claim, an intent); DatabaseUnreachable if none can be had."""
        try:
            return self.connect()
        except _Unreachable as err:
            raise DatabaseUnreachable(f"The journal database {where(self.url)} is unreachable: {_short(err.cause)}") from None

    def intents(self) -> "PostgresIntents":
        """Submit intents as rows of ``libtv_submit_intents``, held by advisory locks (postgres_intents.py)."""
        from libtv_fsm.journal.postgres_intents import PostgresIntents

        return PostgresIntents(self)

    # -- reading --------------------------------------------------------------------------------

    def location(self, session_id: str) -> str:
        return f"{where(self.url)} {EVENTS} session_id={validate_session_id(session_id)}"

    def read(self, session_id: str) -> JournalRead:
        validate_session_id(session_id)

        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> List[Tuple[Any, ...]]:
            return conn.execute(f"SELECT seq, body FROM {EVENTS} WHERE session_id = %s ORDER BY seq", (session_id,)).fetchall()

        return _parse_rows(self._call(work))

    def read_many(self, session_ids: Sequence[str]) -> Dict[str, JournalRead]:
        """Several sessions in one query (a listing): each id's JournalRead, empty for one without events."""
        ids = [validate_session_id(sid) for sid in session_ids]

        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> List[Tuple[Any, ...]]:
            return conn.execute(f"SELECT session_id, seq, body FROM {EVENTS} WHERE session_id = ANY(%s) "
                                "ORDER BY session_id, seq", (ids,)).fetchall()

        grouped: Dict[str, List[Tuple[Any, ...]]] = {sid: [] for sid in ids}
        for sid, seq, body in self._call(work):
            grouped[str(sid)].append((seq, body))
        return {sid: _parse_rows(rows) for sid, rows in grouped.items()}

    def cached_views(self) -> Dict[str, Tuple[int, int, Any]]:
        """Every session: (its last seq, the version its cached view was built at or 0, that view or None). One query."""
        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> List[Tuple[Any, ...]]:
            return conn.execute(f"SELECT e.session_id, e.last, coalesce(v.version, 0), v.doc FROM "
                                f"(SELECT session_id, max(seq) AS last FROM {EVENTS} GROUP BY session_id) AS e "
                                f"LEFT JOIN {VIEWS} AS v USING (session_id)").fetchall()

        return {str(sid): (int(last), int(version), doc) for sid, last, version, doc in self._call(work)}

    def save_views(self, views: Sequence[Tuple[str, int, Dict[str, Any]]]) -> None:
        """Cache (session id, version, view); a row is replaced by a later version's (or, at its version, by another
        doc: other code built it), never by an earlier one."""
        rows = [(validate_session_id(sid), int(version), Jsonb(doc)) for sid, version, doc in views]
        if not rows:
            return

        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> None:
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {VIEWS} (session_id, version, doc) VALUES (%s, %s, %s) "
                                f"ON CONFLICT (session_id) DO UPDATE SET version = excluded.version, doc = excluded.doc "
                                f"WHERE {VIEWS}.version < excluded.version OR "
                                f"({VIEWS}.version = excluded.version AND {VIEWS}.doc IS DISTINCT FROM excluded.doc)", rows)

        self._call(work)

    def session_ids(self) -> List[str]:
        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> List[str]:
            return [str(r[0]) for r in conn.execute(f"SELECT DISTINCT session_id FROM {EVENTS} ORDER BY 1")]

        return self._call(work)

    def exists(self, session_id: str) -> bool:
        validate_session_id(session_id)

        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> bool:
            row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {EVENTS} WHERE session_id = %s)", (session_id,)).fetchone()
            return bool(row and row[0])

        return self._call(work)

    # -- writing --------------------------------------------------------------------------------

    def append(self, session_id: str, events: Sequence[Event], expected_version: int) -> int:
        if not events:
            return expected_version
        validate_session_id(session_id)
        bodies = []
        for offset, event in enumerate(events, start=1):
            record: Dict[str, Any] = {"seq": expected_version + offset}
            record.update(to_record(event))
            bodies.append(record)
        if failpoints.ARMED:
            for body in bodies:
                failpoints.hit("before_append:" + str(body.get("type")))

        def once() -> None:
            try:
                self._call(lambda conn: self._write(conn, session_id, bodies, expected_version), retry=False)
            except DatabaseUnreachable:
                # The connection broke mid-append: it may have committed. Never write it again
                # blindly; read what the seqs hold (reads retry until the database is back).
                outcome = self._outcome(session_id, bodies, expected_version)
                if outcome == "taken":
                    raise ConcurrencyConflict(f"Session {session_id} changed meanwhile (its append after "
                                              f"version {expected_version} did not commit; another one did)") from None
                if outcome != "written":
                    raise  # not there: write it again

        self._reconnecting(DatabaseUnreachable)(once)
        if failpoints.ARMED:
            for body in bodies:
                failpoints.hit("after_append:" + str(body.get("type")))
        return expected_version + len(events)

    def _write(self, conn: "psycopg.Connection[Tuple[Any, ...]]", session_id: str, bodies: List[Dict[str, Any]],
               expected_version: int) -> None:
        """One transaction: the rows, the seq check, the notification; a unique violation, a deadlock or a
        serialization failure (all leave nothing written) is a conflict."""
        try:
            with conn.transaction():
                # Positions in commit order: a subscriber reading past its position skips nothing.
                conn.execute(f"LOCK TABLE {EVENTS} IN EXCLUSIVE MODE")
                if expected_version > 0:
                    # Only the gap is checked here: a seq already taken is the primary key's to refuse.
                    row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {EVENTS} WHERE session_id = %s AND seq = %s)",
                                       (session_id, expected_version)).fetchone()
                    if not (row and row[0]):
                        raise ConcurrencyConflict(f"Session {session_id} is not at version {expected_version}")
                last = 0
                for body in bodies:
                    got = conn.execute(f"INSERT INTO {EVENTS} (session_id, seq, body) VALUES (%s, %s, %s) RETURNING position",
                                       (session_id, body["seq"], Jsonb(body))).fetchone()
                    last = int(got[0]) if got else last
                for hook in self.append_hooks:
                    hook(conn, session_id, bodies)
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(last)))
        except pg_errors.UniqueViolation:
            raise ConcurrencyConflict(f"Session {session_id} changed meanwhile (another process wrote seq "
                                      f"{expected_version + 1} first)") from None
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as err:
            # The server rolled the whole transaction back (it chose this one to break a cycle of
            # locks, or could not serialize it): nothing was written, so deciding again is safe.
            raise ConcurrencyConflict(f"Session {session_id}: the database rolled the append back "
                                      f"({_short(err)}); decide again") from None

    def _outcome(self, session_id: str, bodies: List[Dict[str, Any]], expected_version: int) -> str:
        """After a lost connection: ``written`` (our rows are there), ``taken`` (others are), or ``absent``."""
        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> List[Tuple[Any, ...]]:
            return conn.execute(f"SELECT seq, body FROM {EVENTS} WHERE session_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                                (session_id, expected_version, len(bodies))).fetchall()

        rows = self._call(work)
        if not rows:
            return "absent"
        ours = [json.loads(json.dumps(b)) for b in bodies]  # as jsonb gives it back
        return "written" if [r[1] for r in rows] == ours else "taken"

    # -- the one waiter -------------------------------------------------------------------------

    def claim_waiter(self, session_id: str, wait: float = 0.0) -> WaiterClaim:
        validate_session_id(session_id)
        conn = self.connect_or_fail()
        deadline = time.monotonic() + max(0.0, wait)
        try:
            while True:
                row = conn.execute(f"SELECT pg_try_advisory_lock({CLAIM_KEY})", (session_id,)).fetchone()
                if row and row[0]:
                    return WaiterClaim(_SessionLock(conn))
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        except psycopg.Error as err:
            conn.close()
            raise JournalError(f"Cannot claim session {session_id} in {where(self.url)}: {_short(err)}") from None
        conn.close()
        return WaiterClaim(None)

    def waiter_held(self, session_id: str) -> bool:
        """Whether some connection holds the session's waiter claim now: read from pg_locks, so unlike a
        try-and-release probe it never makes a waiter that is starting find its claim taken; no new connection."""
        return bool(self.waiters_held([session_id]))

    def waiters_held(self, session_ids: Sequence[str]) -> Set[str]:
        """Those of ``session_ids`` whose waiter claim some connection holds now (one query; see waiter_held)."""
        ids = [validate_session_id(sid) for sid in session_ids]
        key = CLAIM_KEY.replace("%s", "s.id")

        def work(conn: "psycopg.Connection[Tuple[Any, ...]]") -> Set[str]:
            # An advisory lock on a bigint key shows as classid (its high 32 bits), objid (low), objsubid 1.
            rows = conn.execute(
                f"""SELECT s.id FROM unnest(%s::text[]) AS s(id) WHERE {key} IN (
                      SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks
                      WHERE locktype = 'advisory' AND granted AND objsubid = 1
                        AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))""",
                (ids,)).fetchall()
            return {str(r[0]) for r in rows}

        return self._call(work)

    # -- following ------------------------------------------------------------------------------

    def subscribe(self, after: Optional[int] = None, idle_timeout: Optional[float] = None) -> Iterator[Appended]:
        """LISTEN for appends and read the rows past the last position seen (a missed NOTIFY loses nothing).

        Listening starts before this returns, so "from now on" means from this call. ``after`` is a
        position an earlier subscriber yielded (``Appended.position``), to resume after it; 0: from the start.
        """
        conn: "Optional[psycopg.Connection[Tuple[Any, ...]]]" = None
        try:
            conn = self.connect()
            _migrate(conn)
            conn.execute(f"LISTEN {CHANNEL}")
            if after is None:
                row = conn.execute(f"SELECT coalesce(max(position), 0) FROM {EVENTS}").fetchone()
                after = int(row[0]) if row else 0
        except (psycopg.Error, _Unreachable) as err:
            if conn is not None:
                conn.close()
            cause = err.cause if isinstance(err, _Unreachable) else err
            raise JournalError(f"Cannot follow {where(self.url)}: {_short(cause)}") from None
        return self._follow(conn, after, idle_timeout)

    def _follow(self, conn: "Optional[psycopg.Connection[Tuple[Any, ...]]]", position: int,
                idle_timeout: Optional[float]) -> Iterator[Appended]:
        idle_since = time.monotonic()

        def read_past() -> List[Tuple[Any, ...]]:
            """The rows past ``position``, on the listening connection (made again if it was lost)."""
            nonlocal conn
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self.connect()
                    _migrate(conn)
                    conn.execute(f"LISTEN {CHANNEL}")
                return conn.execute(f"SELECT position, session_id, seq, body FROM {EVENTS} WHERE position > %s "
                                    "ORDER BY position LIMIT 500", (position,)).fetchall()
            except (psycopg.Error, _Unreachable) as err:
                if conn is not None and not (conn.closed or conn.broken) and not isinstance(err, _Unreachable):
                    raise JournalError(f"Cannot follow {where(self.url)}: {_short(err)}") from None
                conn = None
                raise _Unreachable(err.cause if isinstance(err, _Unreachable) else err) from None

        def given_up(state: "tenacity.RetryCallState") -> bool:  # without an idle timeout, a follower waits on
            return idle_timeout is not None and time.monotonic() - idle_since > max(idle_timeout, self.retry_seconds)

        reading = tenacity.Retrying(retry=tenacity.retry_if_exception_type(_Unreachable), stop=given_up, reraise=True,
                                    wait=tenacity.wait_exponential(multiplier=0.05, max=1.0))
        try:
            while True:
                try:
                    rows = reading(read_past)
                except _Unreachable:
                    raise JournalError(f"The journal database {where(self.url)} is unreachable") from None
                for pos, sid, seq, body in rows:
                    position = int(pos)
                    read = _parse_rows([(seq, body)])
                    if read.entries:
                        yield Appended(str(sid), int(seq), read.entries[0][1], position)
                if rows:
                    idle_since = time.monotonic()
                    continue
                wait = self.poll_seconds
                if idle_timeout is not None:
                    left = idle_timeout - (time.monotonic() - idle_since)
                    if left <= 0:
                        return
                    wait = min(wait, left)
                assert conn is not None  # read_past left it connected
                try:
                    for _ in conn.notifies(timeout=wait, stop_after=1):
                        pass
                except psycopg.Error:
                    conn = None  # reconnect and re-read from the position: nothing is lost
        finally:
            if conn is not None:
                conn.close()


class _Unreachable(Exception):
    """A connection could not be had (the database is down, restarting, or the URL is wrong)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _SessionLock:
    """An advisory lock held by its own connection: releasing closes it, and so does dying."""

    def __init__(self, conn: "psycopg.Connection[Tuple[Any, ...]]") -> None:
        self.conn = conn

    def release(self) -> None:
        try:
            # Let go at once: closing alone frees the lock only when the server process has exited,
            # a moment later, and the next job of the session may already be asking for it.
            self.conn.execute("SELECT pg_advisory_unlock_all()")
        except psycopg.Error:
            pass
        try:
            self.conn.close()  # the server drops the session's advisory locks with it (also when we die)
        except psycopg.Error:
            pass


def _migrate(conn: "psycopg.Connection[Tuple[Any, ...]]") -> Tuple[int, int]:
    """Bring the schema to LATEST under a lock (two first uses at once must not both create it)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || ':libtv-fsm:migrate', 7))")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION} (version integer PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_VERSION}").fetchone()
        before = int(row[0]) if row else 0
        if before > LATEST:
            raise JournalError(f"The journal database is at schema version {before}, newer than this libtv-fsm "
                               f"knows ({LATEST}): upgrade libtv-fsm")
        for version, statements in MIGRATIONS:
            if version > before:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {SCHEMA_VERSION} (version) VALUES (%s)", (version,))
    return before, LATEST


def _parse_rows(rows: Sequence[Tuple[Any, ...]]) -> JournalRead:
    """Rows (seq, body) as a JournalRead: a body this version cannot read is skipped and named, as in parse_lines."""
    entries: List[Tuple[int, AnyEvent]] = []
    problems: List[str] = []
    skipped = 0
    for seq, body in rows:
        try:
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            entries.append((int(seq), from_record({k: v for k, v in body.items() if k != "seq"})))
        except Exception as err:  # a hand edit, a record this version cannot read
            skipped += 1
            problems.append(f"seq {seq}: {_short(err)}")
    return JournalRead(entries, skipped, tuple(problems))
