"""Submit intents in PostgreSQL: the rows of ``libtv_submit_intents``, each held by an advisory lock while its writer lives.

The same life as the JSONL store's intent files (intents.py): ``create-session`` writes the request
down before sending it and holds it; the session id is added when LibTV answers; the row is deleted
once the session's journal has the submission. The hold is an advisory lock on a connection of the
intent's own, so a create-session that dies (on any host) lets go of it, and ``recover`` (anywhere)
finds the row unheld and finishes or closes it. A record holds the user's words and the chat, never a key.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import psycopg
from psycopg.types.json import Jsonb

from libtv_fsm.errors import JournalError
from libtv_fsm.journal.postgres import _short

if TYPE_CHECKING:
    from libtv_fsm.journal.postgres import PostgresJournal

INTENTS = "libtv_submit_intents"
_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(current_schema() || ':intent:' || %s, 7))"


class PostgresIntent:
    """One intent row, held (its advisory lock) on ``conn`` until finished, closed or released."""

    def __init__(self, conn: "Optional[psycopg.Connection[Tuple[Any, ...]]]", record: Dict[str, Any]) -> None:
        self._conn = conn
        self.record = record

    @property
    def id(self) -> str:
        return str(self.record.get("id") or "")

    def _run(self, sql: str, params: Tuple[Any, ...]) -> None:
        if self._conn is None:
            raise JournalError(f"The submit record {self.id} is no longer held by this process")
        try:
            self._conn.execute(sql, params)
        except psycopg.Error as err:
            raise JournalError(f"Cannot write the submit record {self.id}: {_short(err)}") from None

    def update(self, **fields: Any) -> None:
        self.record.update(fields)
        self._run(f"UPDATE {INTENTS} SET record = %s WHERE id = %s", (Jsonb(self.record), self.id))

    def finish(self) -> None:
        self._run(f"DELETE FROM {INTENTS} WHERE id = %s", (self.id,))
        self.release()

    def close(self, outcome: str) -> None:
        self.record["outcome"] = outcome
        self._run(f"UPDATE {INTENTS} SET record = %s, outcome = %s WHERE id = %s", (Jsonb(self.record), outcome, self.id))
        self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # drops the advisory lock with the session
            except psycopg.Error:
                pass


class PostgresIntents:
    """The intents table of one PostgreSQL journal."""

    def __init__(self, journal: "PostgresJournal") -> None:
        self.journal = journal

    def _connect(self) -> "psycopg.Connection[Tuple[Any, ...]]":
        self.journal.migrate_once()
        return self.journal.connect_or_fail()

    def begin(self, record: Dict[str, Any]) -> PostgresIntent:
        import os

        intent_id = secrets.token_hex(8)
        record = dict(record, id=intent_id, pid=os.getpid())
        conn = self._connect()
        try:
            conn.execute(_LOCK, (intent_id,))
            conn.execute(f"INSERT INTO {INTENTS} (id, record) VALUES (%s, %s)", (intent_id, Jsonb(record)))
        except psycopg.Error as err:
            conn.close()
            raise JournalError(f"Cannot write the submit record: {_short(err)}") from None
        return PostgresIntent(conn, record)

    def orphans(self) -> List[PostgresIntent]:
        """Open intents whose writer is gone, oldest first; each is held by this process until released."""
        conn = self._connect()
        try:
            rows = conn.execute(f"SELECT id FROM {INTENTS} WHERE outcome IS NULL ORDER BY created_at, id").fetchall()
        finally:
            conn.close()
        found = []
        for (intent_id,) in rows:
            conn = self._connect()
            try:
                held = conn.execute(_LOCK, (intent_id,)).fetchone()
                row = conn.execute(f"SELECT record, outcome FROM {INTENTS} WHERE id = %s", (intent_id,)).fetchone() \
                    if held and held[0] else None
            except psycopg.Error:
                row = None
            if row is None or row[1] is not None or not isinstance(row[0], dict):
                conn.close()  # its create-session is still running, or it was finished meanwhile
                continue
            found.append(PostgresIntent(conn, row[0]))
        return found
