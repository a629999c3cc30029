"""store.subscribe(): new events as other processes append them, on both stores (CONTRACT section 9)."""
from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import OPEN_STORE
from libtv_fsm import events as ev
from eventgen import T0

APPENDER = OPEN_STORE + textwrap.dedent("""
    import sys, time
    from libtv_fsm import events as ev
    store = open_store(sys.argv[1])
    store.exists("a")
    time.sleep(1.0)  # the subscriber is waiting by now: what wakes it is the append itself
    for sid, pid in (("a", 1), ("b", 2), ("a", 3)):
        store.record(sid, ev.WaiterStarted(at=ev.now(), pid=pid))
""")


def appended_by_another_process(kind):
    return subprocess.Popen([sys.executable, "-c", APPENDER, kind.spec])


def test_a_subscriber_sees_what_another_process_appends_from_now_on(kind):
    store = kind.store()
    store.record("a", ev.WaiterStarted(at=T0, pid=0))  # before the subscription: not yielded
    if kind.name == "postgres":
        store.journal.poll_seconds = 60.0  # only the notification can wake it within the test's time
    followed = store.subscribe(idle_timeout=8)
    appender = appended_by_another_process(kind)
    began = time.monotonic()
    got = list(itertools.islice(followed, 3))
    assert appender.wait(timeout=60) == 0
    assert sorted((a.session_id, a.seq, a.event.pid) for a in got) == [("a", 2, 1), ("a", 3, 3), ("b", 1, 2)]
    assert time.monotonic() - began < 5, "the appends reached the subscriber only late"
    if kind.name == "postgres":  # one order for every subscriber: the commit order
        assert [a.event.pid for a in got] == [1, 2, 3] and [a.position for a in got] == sorted(a.position for a in got)


def test_a_subscriber_from_the_start_sees_every_event_once_and_then_stops_when_idle(kind):
    store = kind.store()
    store.record("a", ev.WaiterStarted(at=T0, pid=0), ev.WaiterStarted(at=T0, pid=1))
    store.record("b", ev.WaiterStarted(at=T0, pid=2))
    got = list(store.subscribe(after=0, idle_timeout=0.5))
    assert sorted((a.session_id, a.seq) for a in got) == [("a", 1), ("a", 2), ("b", 1)]


def test_a_postgresql_subscriber_resumes_after_the_last_position_it_saw(pg_url):
    from libtv_fsm.store import SessionStore

    store = SessionStore.from_url(pg_url)
    store.record("a", ev.WaiterStarted(at=T0, pid=1), ev.WaiterStarted(at=T0, pid=2))
    first = list(store.subscribe(after=0, idle_timeout=0.3))
    store.record("a", ev.WaiterStarted(at=T0, pid=3))  # appended while nobody listened
    rest = list(store.subscribe(after=first[-1].position, idle_timeout=0.3))
    assert [a.event.pid for a in first + rest] == [1, 2, 3]


def test_the_jsonl_journal_cannot_resume_from_a_position(home):
    from libtv_fsm.store import SessionStore

    with pytest.raises(ValueError):
        SessionStore(home).subscribe(after=5)
