"""The PostgreSQL journal against a real server: racing writers, claims that die with their process, restarts, the schema."""
from __future__ import annotations

import json
from datetime import timedelta
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pg
from libtv_fsm import events as ev
from libtv_fsm.errors import ConcurrencyConflict, JournalError
from libtv_fsm.store import SessionStore
from eventgen import T0


def started(pid=1):
    return ev.WaiterStarted(at=T0, pid=pid)


def journal(url, **kwargs):
    from libtv_fsm.journal.postgres import PostgresJournal

    return PostgresJournal(url, **kwargs)


def rows(url, session_id):
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT seq, body FROM libtv_events WHERE session_id = %s ORDER BY seq", (session_id,)).fetchall()


RACER = textwrap.dedent("""
    import json, sys, time
    from libtv_fsm import events as ev
    from libtv_fsm.errors import ConcurrencyConflict
    from libtv_fsm.journal.postgres import PostgresJournal
    url, me, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    j = PostgresJournal(url)
    j.read("race")  # connected and migrated before the start line
    while time.time() < start:
        time.sleep(0.001)
    won = []
    for version in range(60):
        try:
            j.append("race", [ev.WaiterStarted(at=ev.now(), pid=me * 1000 + version)], version)
            won.append(version + 1)
        except ConcurrencyConflict:
            pass
    print(json.dumps(won))
""")


def test_two_processes_appending_the_same_seqs_each_seq_is_won_once(pg_url):
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, pg_url, str(me), str(start)], stdout=subprocess.PIPE, text=True)
             for me in (1, 2)]
    won = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    stored = rows(pg_url, "race")
    seqs = [seq for seq, _ in stored]
    assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in the session's seqs"
    assert not set(won[0]) & set(won[1]), f"two writers were both told they wrote the same seq: {set(won[0]) & set(won[1])}"
    assert sorted(won[0] + won[1]) == seqs, "a writer's reported wins differ from what is stored"
    for seq, body in stored:  # each row is the winner's own event
        assert body["pid"] // 1000 == (1 if seq in won[0] else 2) and body["seq"] == seq


HOLDER = textwrap.dedent("""
    import sys, time
    from libtv_fsm.journal.postgres import PostgresJournal
    claim = PostgresJournal(sys.argv[1]).claim_waiter("s1")
    print("held" if claim.held else "busy", flush=True)
    time.sleep(120)
""")


def test_a_claim_of_a_process_killed_with_sigkill_is_released(pg_url):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not journal(pg_url).claim_waiter("s1").held, "a second waiter got a session another one holds"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    claim = journal(pg_url).claim_waiter("s1", wait=10)
    assert claim.held, "the claim of a killed waiter was never released"
    claim.release()


def test_one_journal_shared_by_threads_gives_a_session_to_one_claim_only(pg_url):
    """A worker's threads share one store: its claims must not be re-entrant the way one connection's locks are."""
    j = journal(pg_url)
    j.read("s1")  # the journal's own connection is open
    first = j.claim_waiter("s1")
    assert first.held and not j.claim_waiter("s1").held
    first.release()
    assert j.claim_waiter("s1").held


def test_claims_of_different_sessions_do_not_block_each_other_and_release_frees_one(pg_url):
    j = journal(pg_url)
    a, b = j.claim_waiter("a"), j.claim_waiter("b")
    assert a.held and b.held
    a.release()
    again = j.claim_waiter("a")
    assert again.held and not j.claim_waiter("b").held
    again.release(), b.release()


def test_the_schema_is_versioned_and_migrating_again_changes_nothing(pg_url):
    import psycopg

    j = journal(pg_url)
    from libtv_fsm.journal.postgres import LATEST

    assert j.migrate() == (0, LATEST)
    assert j.migrate() == (LATEST, LATEST)
    j.append("s1", [started()], 0)
    assert journal(pg_url).migrate() == (LATEST, LATEST) and journal(pg_url).read("s1").version == 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM libtv_schema_version ORDER BY 1").fetchall() == [(v,) for v in range(1, LATEST + 1)]
        conn.execute("INSERT INTO libtv_schema_version (version) VALUES (99)")
    with pytest.raises(JournalError, match="newer than this libtv-fsm"):
        journal(pg_url).read("s1")


def test_a_row_holds_the_json_of_a_jsonl_line(pg_url, home):
    from libtv_fsm.journal import JsonlJournal

    event = ev.Submitted(at=T0, project_uuid="p", project_url="u", text="a cat", message="a cat, video ratio 16:9",
                         auth_mode="nexu_gateway", delivery=ev.Delivery("feishu", "oc_1"))
    journal(pg_url).append("s1", [event], 0)
    JsonlJournal(home).append("s1", [event], 0)
    line = json.loads(JsonlJournal(home).path("s1").read_text().splitlines()[0])
    assert rows(pg_url, "s1") == [(1, line)]


def test_an_append_whose_commit_answer_was_lost_is_not_written_twice(pg_url):
    """The connection breaks right after the commit: the append is reported done, and written once."""
    import psycopg

    from libtv_fsm.journal.postgres import PostgresJournal

    class LosesTheAnswer(PostgresJournal):
        broken = 0

        def _write(self, conn, *args):  # type: ignore[no-untyped-def]
            super()._write(conn, *args)
            if not self.broken:
                self.broken += 1
                conn.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    j = LosesTheAnswer(pg_url)
    assert j.append("s1", [started(1), started(2)], 0) == 2
    assert [body["pid"] for _, body in rows(pg_url, "s1")] == [1, 2]
    assert j.append("s1", [started(3)], 2) == 3  # and the journal goes on


def test_an_append_whose_connection_broke_before_the_commit_is_written_once_after_reconnecting(pg_url):
    import psycopg

    from libtv_fsm.journal.postgres import PostgresJournal

    class BreaksFirst(PostgresJournal):
        broken = 0

        def _write(self, conn, *args):  # type: ignore[no-untyped-def]
            if not self.broken:
                self.broken += 1
                conn.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            super()._write(conn, *args)

    j = BreaksFirst(pg_url)
    assert j.append("s1", [started(1)], 0) == 1
    assert [body["pid"] for _, body in rows(pg_url, "s1")] == [1]


def test_a_database_restart_mid_run_loses_and_repeats_no_event(pg_url):
    store = SessionStore.from_url(pg_url)
    written, errors = [], []

    def writer():
        for i in range(40):
            try:
                store.record("s1", started(i))
                written.append(i)
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(repr(err))
            time.sleep(0.02)

    t = threading.Thread(target=writer)
    t.start()
    while len(written) < 10 and t.is_alive():
        time.sleep(0.01)
    pg.pg_ctl("restart", "-m", "fast")
    t.join(timeout=120)
    assert errors == [], f"appends failed across the restart: {errors}"
    assert [body["pid"] for _, body in rows(pg_url, "s1")] == list(range(40)) == written
    assert store.load("s1").version == 40


def test_reads_wait_for_the_database_to_come_back_and_give_up_clearly(pg_url):
    j = journal(pg_url, retry_seconds=30)
    j.append("s1", [started()], 0)
    pg.pg_ctl("stop", "-m", "fast")
    try:
        with pytest.raises(JournalError, match="unreachable") as caught:
            journal(pg_url, retry_seconds=0.3).read("s1")
        assert "@" not in str(caught.value) and "postgresql://127.0.0.1:" in str(caught.value)
        threading.Timer(1.0, pg.pg_ctl, ("start",)).start()
        assert j.read("s1").version == 1  # waits, reconnects
    finally:
        pg.pg_ctl("start") if not _up() else None


def _up():
    import psycopg

    try:
        psycopg.connect(pg.DATABASE_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def test_no_message_shows_the_database_password(pg_url):
    url = pg_url.replace("postgres@", "postgres:hunter2-secret@")
    j = journal(url)
    j.append("s1", [started()], 0)  # trust auth: the password is accepted and ignored
    assert "hunter2" not in j.location("s1")
    with pytest.raises(JournalError) as caught:
        journal(url.replace("/postgres?", "/no_such_db?"), retry_seconds=0).read("s1")
    assert "hunter2" not in str(caught.value)


def test_a_stale_or_a_too_new_expected_version_is_a_conflict(pg_url):
    j = journal(pg_url)
    j.append("s1", [started(1), started(2)], 0)
    for expected in (0, 1, 3, 7):
        with pytest.raises(ConcurrencyConflict):
            j.append("s1", [started(9)], expected)
    assert j.read("s1").version == 2


def test_an_append_the_server_rolls_back_to_break_a_deadlock_is_a_conflict_and_decided_again(pg_url):
    """Locks taken in the other order by another transaction: the server aborts the append; nothing was written,
    so it is a ConcurrencyConflict that SessionStore.record retries, never a JournalError that loses the event."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE other_work (n integer)")
    j = journal(pg_url)
    store = SessionStore("/nonexistent-home", journal=j)
    store.record("s1", ev.Submitted(at=T0, project_uuid="p", project_url="", text="t", message="t", auth_mode="nexu_gateway"))
    calls = []

    def hook(conn, session_id, bodies):  # the append holds the events table; now it wants other_work
        calls.append(session_id)
        # A server looks for a cycle once, deadlock_timeout into a wait: the append's look comes after the
        # other transaction joined the cycle and before that one's own look, so the append is the victim.
        conn.execute("SET LOCAL deadlock_timeout = '1s'")
        conn.execute("LOCK TABLE other_work IN EXCLUSIVE MODE")

    j.append_hooks.append(hook)
    other = psycopg.connect(pg_url)  # a transaction, not autocommit
    other.execute("SET deadlock_timeout = '10s'")
    other.execute("LOCK TABLE other_work IN EXCLUSIVE MODE")
    outcome = {}

    def record():
        try:
            outcome["session"] = store.record("s1", started(7))
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = err

    writer = threading.Thread(target=record)
    writer.start()
    with psycopg.connect(pg_url, autocommit=True) as watch:  # until the append waits for other_work
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not watch.execute(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'other_work'::regclass").fetchone()[0]:
            time.sleep(0.01)
    other.execute("LOCK TABLE libtv_events IN EXCLUSIVE MODE")  # and this waits for the append: a cycle
    other.commit()
    other.close()
    writer.join(30)
    assert "error" not in outcome, f"the deadlock surfaced instead of being decided again: {outcome.get('error')!r}"
    assert len(calls) == 2, f"the append ran {len(calls)} time(s): the server never broke a deadlock here"
    assert [seq for seq, _ in rows(pg_url, "s1")] == [1, 2]
    assert rows(pg_url, "s1")[1][1]["pid"] == 7 and outcome["session"].version == 2


def test_waiter_held_reads_the_claims_of_other_processes_without_taking_them(pg_url):
    import pg

    j = journal(pg_url)
    assert not j.waiter_held("s1")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert j.waiter_held("s1") and not j.waiter_held("s2")
        fresh = pg.fresh_schema()
        try:  # the same session id in another schema is another session
            assert not journal(next(fresh)).waiter_held("s1")
        finally:
            next(fresh, None)
        assert j.waiter_held("s1"), "looking took the claim away from its holder"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    while j.waiter_held("s1"):
        assert time.monotonic() < deadline, "a killed holder's claim still shows"
        time.sleep(0.05)


def test_a_listing_reads_sessions_in_batches_and_finds_every_one(pg_url, monkeypatch):
    from libtv_fsm import store as store_module

    monkeypatch.setattr(store_module, "READ_BATCH", 2)
    store = SessionStore("/nonexistent-home", journal=journal(pg_url))
    for i in range(5):
        store.record(f"s{i}", ev.WaiterStarted(at=T0 + timedelta(seconds=i), pid=i))
        for _ in range(i):
            store.record(f"s{i}", started(i))
    listed = store.sessions()
    assert [(s.session_id, s.version) for s in listed] == [(f"s{i}", i + 1) for i in (4, 3, 2, 1, 0)]
    assert [s.version for s in listed] == [store.replay(s.session_id).version for s in listed]


def view_rows(url):
    import psycopg

    with psycopg.connect(url) as conn:
        return {sid: (version, doc) for sid, version, doc in
                conn.execute("SELECT session_id, version, doc FROM libtv_session_views").fetchall()}


def test_listings_read_the_session_views_and_replay_only_those_behind_their_events(pg_url, monkeypatch):
    """The database keeps each session's listing row; a row behind its session (an append made without the store,
    or a crash before the row was written), missing, or from other code is replayed, saved, and never shown stale."""
    from libtv_fsm.snapshots import Summary

    from test_replay import submitted

    store = SessionStore("/nonexistent-home", journal=journal(pg_url))
    for i in range(4):
        store.record(f"s{i}", submitted())
        store.record(f"s{i}", started(i))
    assert {sid: version for sid, (version, _) in view_rows(pg_url).items()} == {f"s{i}": 2 for i in range(4)}

    def full():
        return [(r.session_id, r.view()) for r in (Summary.of(s, None) for s in store.sessions())]

    assert [(r.session_id, r.view()) for r in store.summaries()] == full()
    # s1 moves on behind the store's back; s2's row is dropped; s3's is from other code.
    store.journal.append("s1", [ev.Failed(at=T0, reason="boom")], 2)
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM libtv_session_views WHERE session_id = 's2'")
        conn.execute("UPDATE libtv_session_views SET doc = jsonb_set(doc, '{stamp}', '\"old\"') WHERE session_id = 's3'")
    replayed = []
    real = SessionStore.replay_many
    monkeypatch.setattr(SessionStore, "replay_many", lambda self, ids: replayed.extend(ids) or real(self, ids))
    listed = [(r.session_id, r.view()) for r in store.summaries()]
    assert sorted(replayed) == ["s1", "s2", "s3"], "the listing replayed sessions whose rows were current (or missed one)"
    assert dict(listed)["s1"]["state"] == "failed" and listed == full()
    assert view_rows(pg_url)["s1"][0] == 3 and "s2" in view_rows(pg_url)
    replayed.clear()
    store.summaries()
    assert replayed == [], "the rows the last listing saved were not used"


def test_a_subscriber_follows_across_a_database_restart_and_misses_nothing(pg_url):
    """The follower's connection dies with the server; it reconnects and reads on from its last position."""
    follower = journal(pg_url)
    follower.poll_seconds = 0.2
    writer = journal(pg_url)
    writer.append("s1", [started(1)], 0)
    events = follower.subscribe(after=0, idle_timeout=60)
    assert next(events).seq == 1
    pg.pg_ctl("restart", "-m", "fast")
    writer.append("s1", [started(2), started(3)], 1)
    assert [(a.session_id, a.seq) for a in (next(events), next(events))] == [("s1", 2), ("s1", 3)]
    events.close()
