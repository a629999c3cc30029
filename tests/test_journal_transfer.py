"""`journal export` / `journal import` and `db migrate`: sessions move between a home's files and a database, either way."""
from __future__ import annotations

import json

from conftest import Cli
from libtv_fsm import events as ev
from libtv_fsm.events import to_record
from libtv_fsm.journal import JsonlJournal, open_journal
from libtv_fsm.store import SessionStore
from eventgen import T0, URLS
from test_replay import submitted


def history(journal):
    return {sid: [to_record(e) for _, e in journal.read(sid).entries] for sid in journal.session_ids()}


def fill(home):
    store = SessionStore(home)
    store.record("s1", submitted(), ev.Completed(at=T0, urls=(URLS[0],)))
    store.record("s2", submitted(), ev.Failed(at=T0, reason="policy"))
    # An event of a newer version, which this one cannot read but must carry along.
    JsonlJournal(home).append("s3", [submitted()], 0)
    with open(JsonlJournal(home).path("s3"), "a") as fh:
        fh.write(json.dumps({"seq": 2, "type": "from_the_future", "at": "2026-01-01T00:00:00Z", "x": [1]}) + "\n")
    return history(JsonlJournal(home))


def test_a_home_exported_to_a_database_and_imported_into_another_home_loses_nothing_and_reruns_add_nothing(tmp_path, pg_url):
    home, other = tmp_path / "a", tmp_path / "b"
    home.mkdir(), other.mkdir()
    original = fill(home)
    assert original["s3"][-1]["type"] == "from_the_future"

    ran = Cli(home)("journal", "export", "--to", pg_url)
    assert ran.code == 0 and "Exported 6 event(s) of 3 session(s)" in ran.last, ran
    assert history(open_journal(pg_url)) == original
    again = Cli(home)("journal", "export", "--to", pg_url)
    assert again.code == 0 and "Exported 0 event(s) of 0 session(s)" in again.last and "3 already there" in again.last, again
    assert history(open_journal(pg_url)) == original

    ran = Cli(other)("journal", "import", "--from", pg_url)
    assert ran.code == 0, ran
    assert history(JsonlJournal(other)) == original
    assert Cli(other)("journal", "import", "--from", pg_url).code == 0 and history(JsonlJournal(other)) == original
    assert SessionStore(other).load("s1").state == "completed"


def test_with_the_database_as_this_journal_export_writes_a_home_and_import_reads_one(tmp_path, pg_url):
    home, out, elsewhere = tmp_path / "a", tmp_path / "out", tmp_path / "elsewhere"
    home.mkdir(), elsewhere.mkdir()
    fill(home)
    db = Cli(elsewhere)
    db.env["LIBTV_JOURNAL_URL"] = pg_url
    ran = db("journal", "import", "--from", str(home / "libtv-journal"))  # the journal folder itself works too
    assert ran.code == 0 and "Imported 6 event(s) of 3 session(s)" in ran.last, ran
    SessionStore.from_url(pg_url).record("s1", ev.WaiterStarted(at=T0, pid=7))  # the database moves on
    ran = db("journal", "export", "--to", str(out))
    assert ran.code == 0 and "Exported 7 event(s) of 3 session(s)" in ran.last, ran
    assert history(JsonlJournal(out)) == history(open_journal(pg_url))
    ran = db("journal", "export", "--to", str(out))  # only what is new since
    assert ran.code == 0 and "Exported 0 event(s)" in ran.last, ran
    ran = Cli(home)("journal", "import", "--from", pg_url)  # back into the first home: just the new event
    assert ran.code == 0 and "Imported 1 event(s) of 1 session(s)" in ran.last, ran
    assert history(JsonlJournal(home)) == history(open_journal(pg_url))


def test_a_session_whose_target_history_differs_is_refused_and_left_alone(tmp_path, pg_url):
    home = tmp_path / "a"
    home.mkdir()
    fill(home)
    theirs = SessionStore.from_url(pg_url)
    theirs.record("s2", submitted(), ev.Completed(at=T0, urls=(URLS[1],)))  # another history for s2
    before = history(open_journal(pg_url))["s2"]
    ran = Cli(home)("journal", "export", "--to", pg_url)
    assert ran.code == 1 and ran.last.startswith("❌ Session s2 not copied") and "different history" in ran.last, ran
    assert [line for line in ran.lines if line.startswith("❌")] == [ran.last]
    after = history(open_journal(pg_url))
    assert after["s2"] == before and after["s1"] == history(JsonlJournal(home))["s1"]


def test_copying_a_journal_onto_itself_is_refused(home):
    ran = Cli(home)("journal", "export", "--to", str(home))
    assert ran.code != 0 and ran.last.startswith("❌ ") and "same journal" in ran.last


def test_db_migrate_creates_the_schema_once_and_says_so(home, pg_url):
    cli = Cli(home)
    first = cli("db", "migrate", "--url", pg_url)
    assert first.code == 0 and first.lines == ["Journal schema at version 3 (was 0)", "Task queue schema created"], first
    again = cli("db", "migrate", env={"LIBTV_JOURNAL_URL": pg_url})
    assert again.code == 0 and again.lines == ["Journal schema at version 3 (already current)",
                                               "Task queue schema already there"], again
    assert cli("db", "migrate").last.startswith("❌ ")


def test_importing_from_a_folder_that_holds_no_journal_is_one_clear_line(home, tmp_path):
    ran = Cli(home)("journal", "import", "--from", str(tmp_path / "typo"))
    assert ran.code != 0 and ran.last.startswith("❌ No journal to copy at") and "typo" in ran.last, ran
    empty = tmp_path / "empty"
    empty.mkdir()
    ran = Cli(home)("journal", "import", "--from", str(empty))
    assert ran.code != 0 and ran.last.startswith("❌ No journal to copy at"), ran


def test_a_home_that_receives_sessions_lists_them_in_its_read_model(tmp_path):
    """libtv-sessions.json (CONTRACT 3) of the target home shows the copied sessions, not only its own."""
    home, other = tmp_path / "a", tmp_path / "b"
    home.mkdir(), other.mkdir()
    fill(home)
    SessionStore(other).record("s9", submitted())  # the target already has a read model: s9 alone
    ran = Cli(other)("journal", "import", "--from", str(home))
    assert ran.code == 0, ran
    listed = json.loads((other / "libtv-sessions.json").read_text())
    rows = listed["sessions"] if isinstance(listed, dict) else listed
    assert sorted(r["session_id"] for r in rows) == ["s1", "s2", "s3", "s9"]


def test_db_migrate_and_the_retry_setting_refuse_bad_values_in_one_line(home, pg_url):
    ran = Cli(home)("db", "migrate", "--url", "mysql://root:hunter2@db/x")
    assert ran.code != 0 and ran.lines == ["❌ --url must be a postgresql:// URL"], ran
    ran = Cli(home)("history", "s1", env={"LIBTV_JOURNAL_URL": pg_url, "LIBTV_JOURNAL_RETRY_SECONDS": "soon"})
    assert ran.code != 0 and ran.last.startswith("❌ LIBTV_JOURNAL_RETRY_SECONDS must be a number"), ran
