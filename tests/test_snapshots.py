"""Snapshots: a listing or a timeline from the cache is always the one a full replay of the journal gives."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ENTRY_POINTS
from eventgen import T0, URLS, event_lists
from libtv_fsm import SessionStore, journal, readmodel, snapshots
from libtv_fsm import events as ev
from libtv_fsm.timeline import event_view, session_view

HEAVY = ("attr", "cattrs", "transitions", "filelock", "requests", "urllib3")


def truth(home: Path) -> List[Dict[str, Any]]:
    """What a full replay of every journal says, newest first."""
    return [session_view(s) for s in SessionStore(home).sessions()]


def listed(home: Path) -> List[Dict[str, Any]]:
    return [row.view() for row in snapshots.list_sessions(home)]


def full_timeline(home: Path, sid: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    session = SessionStore(home).load(sid)
    # Through JSON, as the CLI prints it (tuples become lists).
    view, events = json.loads(json.dumps([session_view(session), [event_view(e) for e in session.events]]))
    return view, events


def delivered(store: SessionStore, sid: str, at_offset: int = 0) -> None:
    at = T0 + timedelta(seconds=at_offset)
    store.journal.append(sid, [
        ev.Submitted(at=at, project_uuid="p", project_url="https://www.liblib.tv/canvas?projectId=p", text="a cat",
                     message="a cat, video ratio 16:9", auth_mode="nexu_gateway", delivery=ev.Delivery("feishu", "oc_g")),
        ev.PollAnswered(at=at, after_seq=0, last_seq=2, new_messages=2, urls=(URLS[0],), last_result_seq=1, last_assistant_seq=2),
        ev.Completed(at=at, urls=(URLS[0],)),
        ev.DeliverySucceeded(at=at, url=URLS[0], sent_as="video"),
        ev.Delivered(at=at),
    ], 0)


def submitted_only(store: SessionStore, sid: str, at_offset: int = 0) -> None:
    store.journal.append(sid, [ev.Submitted(at=T0 + timedelta(seconds=at_offset), project_uuid="q", project_url="",
                                            text="a dog", message="a dog", auth_mode="libtv_direct")], 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=event_lists, more=event_lists, garbage=st.booleans())
def test_any_journal_lists_and_replays_the_same_from_the_cache_as_from_scratch(first, more, garbage):
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = SessionStore(home)
        version = store.journal.append("s1", first, 0) if first else 0
        delivered(store, "s2", 5)
        for _ in range(2):  # cold (builds the snapshots), then warm (answers from them)
            assert listed(home) == truth(home)
            assert snapshots.timeline(home, "s1") == (full_timeline(home, "s1") if first else None)
        if garbage:
            with open(store.journal.path("s1"), "ab") as fh:
                fh.write(b'{"seq": 99, "type": "torn')
        if more:
            store.journal.append("s1", more, version)
        assert listed(home) == truth(home)
        if first or more:
            assert snapshots.timeline(home, "s1") == full_timeline(home, "s1")


def test_an_append_makes_the_snapshot_stale_and_the_next_answer_is_the_new_one(home):
    store = SessionStore(home)
    submitted_only(store, "s1")
    assert [v["state"] for v in listed(home)] == ["submitted"]
    assert snapshots.timeline(home, "s1")[0]["state"] == "submitted"
    store.journal.append("s1", [ev.Failed(at=T0, reason="policy")], 1)
    assert [v["state"] for v in listed(home)] == ["failed"]
    view, events = snapshots.timeline(home, "s1")
    assert view["state"] == "failed" and view["failure_message"] == "policy" and len(events) == 2


@pytest.mark.parametrize("damage", ["garbage", "torn", "empty", "wrong view", "other code", "foreign session"])
def test_a_damaged_or_foreign_index_is_rebuilt_from_the_journals(home, damage, monkeypatch):
    store = SessionStore(home)
    for i in range(3):
        delivered(store, f"d{i}", i)
    submitted_only(store, "open", 10)
    expected = truth(home)
    assert listed(home) == expected
    index = home / "libtv-journal" / "snapshots" / "index.tsv"
    text = index.read_text()
    if damage == "garbage":
        index.write_bytes(os.urandom(300))
    elif damage == "torn":
        index.write_text(text[: len(text) // 2])
    elif damage == "empty":
        index.write_text("")
    elif damage == "wrong view":  # a line whose key still matches but whose view was cut short
        lines = text.split("\n")
        lines[1] = lines[1][:-20]
        index.write_text("\n".join(lines))
    elif damage == "other code":
        monkeypatch.setattr(snapshots, "_stamp", snapshots.code_stamp() + "-upgraded")
    elif damage == "foreign session":  # an entry for a journal that is gone
        index.write_text(text + text.split("\n")[1].replace("open", "gone", 1) + "\n")
    assert listed(home) == expected
    assert snapshots._load_index(home / "libtv-journal")[1] is True  # and written whole again


@pytest.mark.parametrize("damage", ["garbage", "torn", "stale key", "other code"])
def test_a_damaged_or_stale_timeline_snapshot_is_rebuilt(home, damage, monkeypatch):
    store = SessionStore(home)
    delivered(store, "s1")
    expected = full_timeline(home, "s1")
    assert snapshots.timeline(home, "s1") == expected
    snap = home / "libtv-journal" / "snapshots" / "s1.json"
    if damage == "garbage":
        snap.write_bytes(b"\x00not json")
    elif damage == "torn":
        snap.write_text(snap.read_text()[:-40])
    elif damage == "stale key":  # what a snapshot of an older journal looks like: another size
        doc = json.loads(snap.read_text())
        size, rest = doc["key"].split(".", 1)
        doc["key"] = f"{int(size) - 1}.{rest}"
        doc["view"]["state"] = "submitted"
        snap.write_text(json.dumps(doc))
    elif damage == "other code":
        monkeypatch.setattr(snapshots, "_stamp", snapshots.code_stamp() + "-upgraded")
    assert snapshots.cached_timeline(home, "s1") is None
    assert snapshots.timeline(home, "s1") == expected
    assert snapshots.cached_timeline(home, "s1") == expected  # rewritten


def test_a_journal_that_grows_while_it_is_read_is_never_cached(home, monkeypatch):
    store = SessionStore(home)
    submitted_only(store, "s1")
    path = store.journal.path("s1")
    real_fstat = os.fstat
    calls = []

    def fstat_with_a_writer_in_between(fd):
        calls.append(fd)
        if len(calls) == 2:  # after the read, before the second look: another process appends
            store.journal.append("s1", [ev.Failed(at=T0, reason="late")], 1)
        return real_fstat(fd)

    monkeypatch.setattr(snapshots.os, "fstat", fstat_with_a_writer_in_between)
    data, key = snapshots.read_keyed(path)
    assert key is None and b"late" not in data
    monkeypatch.setattr(snapshots.os, "fstat", real_fstat)
    view, _ = snapshots.timeline(home, "s1")
    assert view["state"] == "failed"


def _writer(home: str, sid: str, rounds: int) -> None:
    store = SessionStore(home)
    for i in range(rounds):
        session = store.replay(sid)
        event = ev.PollAnswered(at=ev.now(), after_seq=0, last_seq=i + 1, new_messages=1, urls=(URLS[i % 4],))
        try:
            store.journal.append(sid, [event], session.version)
        except Exception:
            pass  # a conflict with the other writer: fine, the point is the churn


def test_concurrent_writers_never_leave_a_snapshot_that_disagrees_with_the_journal(home):
    store = SessionStore(home)
    for sid in ("a", "b"):
        submitted_only(store, sid)
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(str(home), sid, 60)) for sid in ("a", "a", "b")]
    for w in writers:
        w.start()
    while any(w.is_alive() for w in writers):
        listed(home)
        snapshots.timeline(home, "a")
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert listed(home) == truth(home)
    assert snapshots.timeline(home, "a") == full_timeline(home, "a")


def test_the_read_model_from_the_index_is_the_one_a_full_replay_builds(home):
    store = SessionStore(home)
    for i in range(60):
        (delivered if i % 3 else submitted_only)(store, f"s{i:02d}", i)
    store.journal.append("s00", [ev.Failed(at=T0, reason="no")], 1)
    readmodel.refresh(store)
    on_disk = (home / "libtv-sessions.json").read_text()
    assert on_disk == json.dumps(readmodel.build(store.sessions()), ensure_ascii=False, indent=1)
    assert len(json.loads(on_disk)) == 50


def test_names_shared_with_other_modules_agree():
    from libtv_fsm import intents

    assert snapshots.JOURNAL_DIR == journal.JOURNAL_DIR and snapshots.INTENT_DIR == intents.INTENT_DIR
    # Every module named in the code stamp exists: a moved one would silently stop invalidating snapshots.
    here = Path(snapshots.__file__).parent
    assert all((here / (name + ".py")).is_file() for name in snapshots._STAMPED), snapshots._STAMPED


def _run(home: Path, *args: str, importtime: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIBTV_", "NEXU_", "FEISHU_"))}
    env["NEXU_HOME"] = str(home)
    cmd = ENTRY_POINTS["module"][:1] + (["-X", "importtime"] if importtime else []) + ENTRY_POINTS["module"][1:]
    return subprocess.run(cmd + list(args), env=env, capture_output=True, text=True, timeout=60)


def test_recover_from_the_cache_prints_what_the_full_recover_prints(home):
    from libtv_fsm.cli import emit_json  # noqa: F401 (the format compared against)
    from libtv_fsm.recovery import recover

    store = SessionStore(home)
    for i in range(4):
        delivered(store, f"d{i}", i)
    submitted_only(store, "open", 9)
    full = recover(store, {}, None, None, log=lambda line: None)
    expected = json.dumps({"sessions": full}, ensure_ascii=False, separators=(",", ":")) + "\n"
    for _ in range(2):  # cold, then from the index
        ran = _run(home, "recover", "--json")
        assert ran.returncode == 0 and ran.stdout == expected, ran


def test_local_commands_on_a_warm_home_import_no_machine_and_no_http_stack(home):
    store = SessionStore(home)
    delivered(store, "s1")
    for args in (("recover", "--json"), ("history", "s1", "--json"), ("history", "s1")):
        assert _run(home, *args).returncode == 0  # warms the snapshots
        ran = _run(home, *args, importtime=True)
        assert ran.returncode == 0, ran
        imported = {line.split("|")[-1].strip() for line in ran.stderr.splitlines() if line.startswith("import time:")}
        assert not imported & set(HEAVY), (args, sorted(imported & set(HEAVY)))


def test_a_waiter_holding_its_run_lock_is_seen_running_by_every_probe(home):
    from libtv_fsm import runlocks

    store = SessionStore(home)
    root = str(home / "libtv-journal")
    sids = [f"s{i:03d}" for i in range(runlocks.BULK_FROM + 5)]
    for sid in sids:
        submitted_only(store, sid)
        (home / "libtv-journal" / f"{sid}.run.lock").touch()
    claim = store.journal.claim_waiter("s007")
    assert claim.held
    try:
        run_locks: Dict[int, str] = {}
        snapshots.list_sessions(home, run_locks)
        assert sorted(run_locks.values()) == sids
        bulk = runlocks.held_run_locks(root, run_locks)
        assert bulk in (None, {"s007"})  # None only where /proc/locks cannot be trusted
        one = runlocks.probe_one(root)
        assert one is not None and one("s007") and not one("s008") and not one("no-such-session")
        check = snapshots.waiter_probe(home, run_locks)
        assert check("s007") and not check("s008")
    finally:
        claim.release()
    assert not runlocks.probe_one(root)("s007")
    assert (runlocks.held_run_locks(root, run_locks) or set()) == set()


def test_after_appends_from_a_plain_store_the_cache_recover_and_history_agree_with_the_journal(home):
    # Warm everything, then change the sessions through SessionStore alone (no CLI, no refresh call).
    store = SessionStore(home)
    delivered(store, "old", 0)
    submitted_only(store, "s1", 5)
    assert listed(home) == truth(home) and snapshots.timeline(home, "s1")
    assert _run(home, "recover", "--json").returncode == 0
    store.record("s1", ev.PollAnswered(at=T0, after_seq=0, last_seq=2, new_messages=2, urls=(URLS[1],),
                                       last_result_seq=1, last_assistant_seq=2))
    store.record("s1", ev.Completed(at=T0, urls=(URLS[1],)))
    # The session's timeline snapshot was rewritten by the append itself: current, and right.
    assert snapshots.cached_timeline(home, "s1") == full_timeline(home, "s1")
    assert snapshots.cached_timeline(home, "s1")[0]["state"] == "completed"
    # So the next listing takes the changed session from it: no replay, not even the machine imported.
    ran = _run(home, "recover", "--json", importtime=True)
    imported = {line.split("|")[-1].strip() for line in ran.stderr.splitlines() if line.startswith("import time:")}
    assert ran.returncode == 0 and not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert listed(home) == truth(home)
    ran = _run(home, "history", "s1", "--json")
    assert ran.returncode == 0 and json.loads(ran.stdout)["events"] == full_timeline(home, "s1")[1]
    ran = _run(home, "recover", "--json")
    assert ran.returncode == 0
    assert [{k: v for k, v in s.items() if k != "waiter"} for s in json.loads(ran.stdout)["sessions"]] == json.loads(
        json.dumps(truth(home)))
    model = json.loads((home / "libtv-sessions.json").read_text())
    assert [(r["session_id"], r["status"], r.get("result_urls")) for r in model] == [
        ("s1", "completed", [URLS[1]]), ("old", "completed", [URLS[0]])]


def test_a_listing_takes_a_changed_session_from_its_current_timeline_snapshot_and_gets_what_a_replay_gives(home, monkeypatch):
    store = SessionStore(home)
    delivered(store, "d1", 0)
    submitted_only(store, "s1", 5)
    listed(home)
    store.journal.append("s1", [ev.Failed(at=T0, reason="policy"), ev.NoticeSent(at=T0, kind="failed")], 1)
    snapshots.timeline(home, "s1")  # as the store's projection leaves it after an append
    expected = truth(home)
    full = {s.session_id: _summary_fields(snapshots.Summary.of(s, None)) for s in SessionStore(home, projections=[]).sessions()}

    def no_replay(*args):
        raise AssertionError("replayed a session whose timeline snapshot is current")

    monkeypatch.setattr(snapshots, "_replay_bytes", no_replay)
    rows = snapshots.list_sessions(home)
    assert [r.view() for r in rows] == expected
    assert [_summary_fields(r) for r in rows] == [full[r.session_id] for r in rows]
    assert full["s1"][1] == "failed" and full["s1"][5] == ("failed",)


def _summary_fields(row):
    return (row.session_id, row.state, row.created, row.updated, row.delivery, row.notices, row.view_json)
