"""The test PostgreSQL (tests/toolchain/postgres.sh, started by .ci/run): a fresh schema per test, and a restart."""
from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import quote

import pytest

# Read at import: the autouse fixture of conftest.py clears every LIBTV_ variable before a test runs.
DATABASE_URL: Optional[str] = os.environ.get("LIBTV_TEST_DATABASE_URL") or None
PGDATA: Optional[str] = os.environ.get("LIBTV_TEST_PGDATA") or None
PG_BIN: str = os.environ.get("LIBTV_TEST_PG_BIN") or "/usr/lib/postgresql/15/bin"

SKIP_REASON = ("no test PostgreSQL: run `eval \"$(tests/toolchain/postgres.sh start)\"` first "
               "(.ci/run does; it sets LIBTV_TEST_DATABASE_URL)")


def have_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def require_database() -> str:
    if DATABASE_URL is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests, but LIBTV_TEST_DATABASE_URL is not set")
        pytest.skip(SKIP_REASON)
    if not have_psycopg():
        pytest.fail("LIBTV_TEST_DATABASE_URL is set but psycopg is not installed: pip install -e '.[postgres]'")
    return DATABASE_URL


def schema_url(url: str, schema: str) -> str:
    """``url`` with every connection's search_path set to ``schema`` (libpq's ``options``)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def fresh_schema() -> Iterator[str]:
    """A URL on a new, empty schema of the test database; the schema is dropped afterwards."""
    import psycopg

    url = require_database()
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield schema_url(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def pg_ctl(*args: str) -> None:
    """Run pg_ctl on the test cluster (as the `postgres` user when we are root, as postgres.sh does)."""
    if PGDATA is None:
        pytest.skip("LIBTV_TEST_PGDATA is not set: the database cannot be restarted by this test")
    cmd = [str(Path(PG_BIN) / "pg_ctl"), "-D", PGDATA, "-w", "-t", "60", *args]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)
