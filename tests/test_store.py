"""SessionStore: the embedding API, and a write side where two processes never make the same transition."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from libtv_fsm import SessionStore
from libtv_fsm import events as ev
from libtv_fsm.errors import TransitionRefused, UnknownSession
from libtv_fsm.journal.projections import Projection
from conftest import OPEN_STORE
from eventgen import T0, URLS
from test_replay import submitted

A = URLS[0]


def test_load_replays_the_journal_and_sessions_are_newest_first(kind):
    store = kind.store()
    for i, sid in enumerate(["old", "new", "mid"]):
        at = T0 + timedelta(minutes={"old": 0, "mid": 5, "new": 10}[sid])
        store.record(sid, ev.Submitted(at=at, project_uuid=f"p{i}", project_url="u", text=sid, message=sid, auth_mode="nexu_gateway"))
    store.record("mid", ev.Completed(at=T0, urls=(A,)))
    s = kind.store().load("mid")
    assert (s.state, s.result_urls, s.delivery, s.delivered_at) == ("completed", [A], None, None)
    assert [e.type for e in s.events] == ["submitted", "completed"]
    assert [x.session_id for x in store.sessions()] == ["new", "mid", "old"]


def test_loading_an_unknown_session_is_a_clear_error(kind):
    with pytest.raises(UnknownSession, match="Unknown session nope"):
        kind.store().load("nope")


def test_an_invalid_transition_is_refused_and_nothing_is_written(kind):
    store = kind.store()
    store.record("s1", submitted(), ev.Failed(at=T0, reason="policy"))
    with pytest.raises(TransitionRefused, match="not valid in state failed"):
        store.record("s1", ev.Completed(at=T0, urls=(A,)))
    with pytest.raises(TransitionRefused):  # a batch is all or nothing
        store.record("s2", submitted(), ev.Delivered(at=T0))
    assert store.load("s1").version == 2 and not store.exists("s2")


RACER = OPEN_STORE + textwrap.dedent("""
    import sys, time
    from libtv_fsm import events as ev
    from libtv_fsm.errors import TransitionRefused
    spec, start = sys.argv[1], float(sys.argv[2])
    store = open_store(spec)
    url = store.load("race").result_urls[0]
    while time.time() < start:
        time.sleep(0.001)
    try:
        store.record("race", ev.DeliverySucceeded(at=ev.now(), url=url, sent_as="video"), ev.Delivered(at=ev.now()))
    except TransitionRefused:
        sys.exit(7)
""")


def test_many_processes_racing_to_deliver_one_session_deliver_it_once(kind):
    import time

    store = kind.store()
    store.record("race", submitted(), ev.Completed(at=T0, urls=(A,)))
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", RACER, kind.spec, str(start)]) for _ in range(6)]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0] + [7] * 5
    s = store.load("race")
    assert s.state == "delivered" and [e.type for e in s.events].count("delivered") == 1 and s.ignored == []


def test_record_with_decides_from_the_fresh_state(kind):
    store = kind.store()
    store.record("s1", submitted(), ev.Completed(at=T0, urls=(A,)))

    def wanted(s):
        return [ev.DeliverySucceeded(at=T0, url=u, sent_as="video") for u in s.pending_urls]

    store.record_with("s1", wanted)
    again = store.record_with("s1", wanted)  # nothing pending: writes nothing
    assert again.version == 3 and again.delivered == {A: "video"}


# -- projections: told about every append, never able to fail it -------------------------------


class Recorder(Projection):
    def __init__(self):
        self.seen = []

    def appended(self, store, session, events):
        self.seen.append((session.session_id, session.version, [type(e).__name__ for e in events]))


class Broken(Projection):
    def __init__(self, error):
        self.error = error

    def appended(self, store, session, events):
        raise self.error

    def listed(self, store, rows):
        raise self.error


def test_every_append_reaches_the_projections_once_with_the_session_it_made(kind):
    seen = Recorder()
    store = kind.store(projections=[seen])
    store.record("s1", submitted(), ev.Completed(at=T0, urls=(A,)))
    store.record_with("s1", lambda s: [])  # nothing appended: nothing to tell
    assert seen.seen == [("s1", 2, ["Submitted", "Completed"])]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "denied"),
                                   ValueError("a bug in a projection")])
def test_a_projection_that_fails_never_fails_the_append(home, error, caplog):
    after = Recorder()
    store = SessionStore(home, projections=[Broken(error), after])
    session = store.record("s1", submitted())
    assert session.state == "submitted" and SessionStore(home).load("s1").version == 1
    assert after.seen == [("s1", 1, ["Submitted"])]  # the next projection still ran
    assert [s.session_id for s in store.summaries()] == ["s1"]  # a listing neither
    assert ("a bug in a projection" in caplog.text) == isinstance(error, ValueError)


def test_a_nexu_home_store_keeps_the_read_model_and_snapshots_by_default_and_another_journal_nothing(home, tmp_path):
    from libtv_fsm.journal import JsonlJournal
    from libtv_fsm.journal.projections import ReadModelProjection, TimelineSnapshotProjection

    assert [type(p) for p in SessionStore(home).projections] == [ReadModelProjection, TimelineSnapshotProjection]
    assert SessionStore(home, journal=JsonlJournal(tmp_path / "elsewhere")).projections == []
    assert SessionStore(home, projections=[]).projections == []


def test_a_writer_that_loses_a_race_decides_again_from_what_the_winner_wrote(kind):
    """Another process delivers the result between our replay and our append: we must not deliver it too.

    The race is forced, not hoped for: the first time ``decide`` runs, a second store (another
    process's view of the same home) appends the delivery first, so our append meets a conflict.
    """
    from libtv_fsm.errors import ConcurrencyConflict
    from libtv_fsm.store import SessionStore as Store

    store = kind.store()
    store.record("s1", submitted(), ev.Completed(at=T0, urls=(A,)))
    other = kind.store()
    conflicts = []
    watched = kind.journal()
    real_append = watched.append

    def watching(session_id, events, expected_version):  # type: ignore[no-untyped-def]
        try:
            return real_append(session_id, events, expected_version)
        except ConcurrencyConflict:
            conflicts.append(expected_version)
            raise

    watched.append = watching
    ours = Store(kind.home, journal=watched)
    seen = []

    def deliver_what_is_pending(session):  # type: ignore[no-untyped-def]
        seen.append((session.version, dict(session.delivered)))
        if len(seen) == 1:  # the other waiter gets there first
            other.record("s1", ev.DeliverySucceeded(at=T0, url=A, sent_as="video", message_id="theirs"))
        return [ev.DeliverySucceeded(at=T0, url=u, sent_as="video", message_id="ours") for u in session.pending_urls]

    result = ours.record_with("s1", deliver_what_is_pending)
    final = kind.store().load("s1")
    sent = [e.event.message_id for e in final.events if e.type == "delivery_succeeded"]
    assert sent == ["theirs"], f"the result was recorded delivered more than once: {sent}"
    assert seen == [(2, {}), (3, {A: "video"})], f"decide did not run again on the fresh session: {seen}"
    assert conflicts == [2], "our first append should have been refused as stale"
    assert result.version == final.version == 3 and final.pending_urls == []


def test_recording_on_a_session_logs_nothing_and_leaves_no_machine_methods_on_it(home, caplog):
    """An embedding runtime (or the queue worker) that logs warnings must not get transitions' "Skip binding"
    lines for every event; and a session kept in memory carries its data, not ~35 bound machine methods."""
    import logging

    store = SessionStore(home)
    with caplog.at_level(logging.DEBUG, logger="transitions"):
        store.record("s1", submitted())
        session = store.record("s1", ev.PollAnswered(at=T0, after_seq=0, last_seq=0, new_messages=0))
        store.record("s1", ev.PollAnswered(at=T0, after_seq=0, last_seq=0, new_messages=0))
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], noisy[:3]
    assert not [name for name in vars(session) if name.startswith(("may_", "is_")) or name in ("poll", "trigger")]
