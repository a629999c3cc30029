"""The journal layer: where session events are stored (one interface, the JSONL store) and the projections kept from them.

``from libtv_fsm.journal import Journal, JsonlJournal`` is the public way in; the modules are
``base`` (the interface), ``jsonl`` (the JSONL + filelock store) and ``projections`` (what the
store keeps current after each append: the legacy read model, the snapshots).
"""
from __future__ import annotations

from libtv_fsm.journal.base import Appended, Journal, JournalRead, WaiterClaim
from libtv_fsm.journal.jsonl import JOURNAL_DIR, LOCK_TIMEOUT, JsonlJournal, parse_lines

__all__ = ["Journal", "JsonlJournal", "JournalRead", "WaiterClaim", "Appended", "parse_lines", "JOURNAL_DIR",
           "LOCK_TIMEOUT", "open_journal", "is_database_url", "describe_url", "URL_ENV"]

# Set to a postgresql:// URL, every command keeps its journal in that database (CONTRACT section 9).
URL_ENV = "LIBTV_JOURNAL_URL"
EXTRA = "pip install 'libtv-fsm[postgres]'"


def is_database_url(text: str) -> bool:
    """Whether ``text`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return text.strip().lower().startswith(("postgresql://", "postgres://"))


def describe_url(url: str) -> str:
    """The database a URL names, for messages: host, port and name, never the user or the password."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname or "localhost", parts.port or 5432
    except ValueError:
        return "postgresql://(unparsable URL)"
    return f"postgresql://{host}:{port}{parts.path or '/'}"


def open_journal(url: str) -> Journal:
    """The journal a URL names: a PostgreSQL database. JournalError (one line, no secret) for anything else."""
    from libtv_fsm.errors import JournalError

    if not is_database_url(url):
        # Not echoed: a URL can hold a password.
        raise JournalError(f"{URL_ENV} must be a postgresql:// URL (or unset, for the journal files under NEXU_HOME)")
    try:
        from libtv_fsm.journal.postgres import PostgresJournal
    except ImportError as err:
        raise JournalError(f"A postgresql:// journal needs psycopg, which is not installed ({err.name or err}): "
                           f"{EXTRA}  (Python >= 3.10)") from None
    import os

    from libtv_fsm.config import env_number

    # How long a command waits for a restarting database before it gives up (default 30 s).
    return PostgresJournal(url.strip(), retry_seconds=env_number(os.environ, "LIBTV_JOURNAL_RETRY_SECONDS", 30.0))
