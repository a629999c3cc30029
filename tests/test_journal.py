"""The JSONL journal: appends survive crashes and concurrency; reads skip what is broken, lose nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libtv_fsm import events as ev
from libtv_fsm.errors import ConcurrencyConflict, InvalidSessionId, JournalError
from libtv_fsm.journal import JsonlJournal, parse_lines
from libtv_fsm.replay import replay
from conftest import OPEN_STORE
from eventgen import T0, event_lists
from test_replay import fingerprint


def started(pid=1):
    return ev.WaiterStarted(at=T0, pid=pid)


def test_append_then_read_gives_the_events_back_in_order(kind):
    j = kind.journal()
    assert j.append("s1", [started(1), started(2)], 0) == 2
    assert j.append("s1", [started(3)], 2) == 3
    read = j.read("s1")
    assert [seq for seq, _ in read.entries] == [1, 2, 3]
    assert [e.pid for _, e in read.entries] == [1, 2, 3]
    assert read.skipped == 0 and j.session_ids() == ["s1"]


def test_append_with_a_stale_version_is_refused_and_writes_nothing(kind):
    a, b = kind.journal(), kind.journal()
    a.append("s1", [started()], 0)
    with pytest.raises(ConcurrencyConflict):
        b.append("s1", [started()], 0)
    assert a.read("s1").version == 1


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_fresh_line(home):
    j = JsonlJournal(home)
    j.append("s1", [started(1), started(2)], 0)
    path = j.path("s1")
    with open(path, "ab") as fh:
        fh.write(b'{"seq":3,"type":"waiter_star')  # a crash in the middle of a write
    read = j.read("s1")
    assert read.version == 2 and read.skipped == 1
    assert JsonlJournal(home).append("s1", [started(3)], 2) == 3
    read = j.read("s1")
    assert [e.pid for _, e in read.entries] == [1, 2, 3] and read.skipped == 1
    assert path.read_bytes().endswith(b"\n")


def test_garbage_lines_are_skipped_and_reported(home):
    j = JsonlJournal(home)
    j.append("s1", [started(1)], 0)
    with open(j.path("s1"), "ab") as fh:
        fh.write(b"hello\n[1,2]\n{\"seq\": 1, \"type\": \"waiter_started\", \"at\": \"2026-01-01T00:00:00Z\"}\n")
    j.append("s1", [started(2)], 1)
    read = j.read("s1")
    assert [e.pid for _, e in read.entries] == [1, 2]
    assert read.skipped == 3 and len(read.problems) == 3


def test_a_line_garbled_in_the_middle_loses_only_that_line(home):
    j = JsonlJournal(home)
    j.append("s1", [started(1), started(2), started(3)], 0)
    path = j.path("s1")
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"seq":2,"type":"waiter_sta##garbled'
    path.write_bytes(b"\n".join(lines))
    read = JsonlJournal(home).read("s1")
    assert [(seq, e.pid) for seq, e in read.entries] == [(1, 1), (3, 3)]
    assert read.skipped == 1 and any("jumps" in p for p in read.problems)
    assert JsonlJournal(home).append("s1", [started(4)], 3) == 4


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=event_lists.filter(bool), data=st.data())
def test_a_journal_cut_at_any_byte_replays_to_a_prefix_of_its_history(tmp_path, events, data):
    home = Path(tempfile.mkdtemp(dir=tmp_path))
    j = JsonlJournal(home)
    j.append("s", events, 0)
    whole = j.path("s").read_bytes()
    cut = data.draw(st.integers(0, len(whole)))
    read = parse_lines(whole[:cut])
    n = len(read.entries)
    assert read.entries == [(i, e) for i, e in enumerate(events[:n], start=1)]
    assert fingerprint(replay("s", read.entries)) == fingerprint(replay("s", list(enumerate(events[:n], start=1))))


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".", "", "x" * 129, "a b", "a\\b", "é"])
def test_hostile_session_ids_never_touch_a_path(home, bad):
    with pytest.raises(InvalidSessionId):
        JsonlJournal(home).append(bad, [started()], 0)
    assert not (home / "libtv-journal").exists() or list((home / "libtv-journal").iterdir()) == []


def test_an_unwritable_home_is_a_clear_journal_error(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        home = blocker / "nexu"  # cannot create a folder below a file, even as root
    else:
        home = tmp_path / "ro"
        home.mkdir(mode=0o500)
    with pytest.raises(JournalError, match="journal folder"):
        JsonlJournal(home).append("s1", [started()], 0)


APPENDER = OPEN_STORE + textwrap.dedent("""
    import sys
    from libtv_fsm import events as ev
    spec, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = open_store(spec)
    for i in range(count):
        store.record("shared", ev.WaiterStarted(at=ev.now(), pid=worker * 1000 + i))
""")


def test_concurrent_appenders_in_several_processes_lose_no_line(kind):
    workers, count = 4, 40
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, kind.spec, str(w), str(count)]) for w in range(workers)]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    read = kind.journal().read("shared")
    assert read.skipped == 0
    assert [seq for seq, _ in read.entries] == list(range(1, workers * count + 1))
    pids = sorted(e.pid for _, e in read.entries)
    assert pids == sorted(w * 1000 + i for w in range(workers) for i in range(count))


def test_only_one_waiter_can_hold_a_session(kind):
    j = kind.journal()
    first = j.claim_waiter("s1")
    assert first.held
    probe = subprocess.run(
        [sys.executable, "-c", OPEN_STORE + "import sys\n"
         "sys.exit(0 if open_store(sys.argv[1]).journal.claim_waiter('s1').held else 5)", kind.spec])
    assert probe.returncode == 5
    assert not kind.journal().claim_waiter("s1").held  # not in another journal object of this process either
    first.release()
    assert j.claim_waiter("s1").held


def test_an_append_landing_during_a_read_never_lets_a_stale_version_through(home, monkeypatch):
    """Another process appends right after our read got its bytes: our next append must be refused."""
    import builtins

    ours, theirs = JsonlJournal(home), JsonlJournal(home)
    ours.append("s1", [started(1)], 0)
    real_open = builtins.open

    class AppendAfterRead:
        def __init__(self, fh):  # type: ignore[no-untyped-def]
            self.fh = fh

        def read(self, *args):  # type: ignore[no-untyped-def]
            data = self.fh.read(*args)
            theirs.append("s1", [started(2)], 1)  # lands between our read and whatever comes next
            return data

        def fileno(self):  # type: ignore[no-untyped-def]
            return self.fh.fileno()

        def __enter__(self):  # type: ignore[no-untyped-def]
            return self

        def __exit__(self, *exc):  # type: ignore[no-untyped-def]
            return self.fh.__exit__(*exc)

    def racing_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        fh = real_open(path, mode, *args, **kwargs)
        return AppendAfterRead(fh) if str(path).endswith("s1.jsonl") and "r" in mode else fh

    monkeypatch.setattr(builtins, "open", racing_open)
    seen = ours.read("s1")
    monkeypatch.undo()
    assert seen.version == 1 and theirs.read("s1").version == 2
    with pytest.raises(ConcurrencyConflict):
        ours.append("s1", [started(3)], seen.version)
    assert [seq for seq, _ in JsonlJournal(home).read("s1").entries] == [1, 2]


def test_an_append_is_on_disk_before_the_journal_lock_is_let_go(home, monkeypatch):
    """Each append fsyncs the journal file after writing its line and while still holding the session's lock.

    Observed by recording every ``os.fsync``: which file it flushed (by inode), how big that file was
    then, and whether the journal lock was held (a second flock on the lock file is refused while it is).
    """
    import fcntl

    j = JsonlJournal(home)
    path = j.path("s1")
    lock_path = str(path) + ".lock"
    real_fsync = os.fsync
    synced = []

    def lock_held() -> bool:
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # also drops the flock if we got it
        return False

    def recording_fsync(fd):  # type: ignore[no-untyped-def]
        st = os.fstat(fd)
        synced.append({"inode": (st.st_dev, st.st_ino), "size": st.st_size, "locked": lock_held()})
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    for version, pid in enumerate([1, 2, 3]):
        synced.clear()
        j.append("s1", [started(pid)], version)
        st = path.stat()
        of_journal = [s for s in synced if s["inode"] == (st.st_dev, st.st_ino)]
        assert of_journal, f"append {version + 1} never fsynced the journal file (fsyncs seen: {synced})"
        assert any(s["size"] == st.st_size and s["locked"] for s in of_journal), (
            f"append {version + 1}: no fsync of the whole new line under the lock: {of_journal}")
    assert not lock_held()
