"""libtv-sessions.json, the read model of CONTRACT section 3: kept by the store, whoever appends."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Set

import libtv_fsm
from conftest import legacy_sessions
from eventgen import T0, URLS
from libtv_fsm import SessionStore, readmodel
from libtv_fsm import events as ev

PACKAGE = Path(libtv_fsm.__file__).resolve().parent
LAYERED = ("snapshots", "readmodel", "legacy", "journal.projections")


def _exists(module: str) -> bool:
    return (PACKAGE / (module.replace(".", "/") + ".py")).exists()


def _imports(module: str) -> Set[str]:
    """Every libtv_fsm module ``module`` imports, at the top or inside a function."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("libtv_fsm"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "libtv_fsm" and len(parts) > 1:
                inner = ".".join(parts[1:])
                while inner and not ((PACKAGE / (inner.replace(".", "/") + ".py")).exists()
                                     or (PACKAGE / inner.replace(".", "/") / "__init__.py").exists()):
                    inner = inner.rpartition(".")[0]
                if inner and inner != module:
                    found.add(inner)
    return found


def test_the_read_model_modules_import_each_other_in_one_direction_only():
    graph: Dict[str, Set[str]] = {}
    todo: List[str] = [m for m in LAYERED if _exists(m)]
    while todo:
        module = todo.pop()
        if module in graph:
            continue
        graph[module] = _imports(module)
        todo.extend(graph[module])

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            here = stack.pop()
            for nxt in graph.get(here, ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    circles = [m for m in LAYERED if _exists(m) and reaches(m, m)]
    assert circles == [], f"import circle through {circles}: {({m: sorted(graph[m]) for m in circles})}"


# -- kept by the store ----------------------------------------------------------------------

A, B = URLS[0], URLS[1]


def on_disk(home: Path) -> List[Dict[str, Any]]:
    return json.loads((home / "libtv-sessions.json").read_text(encoding="utf-8"))


def full_rebuild(home: Path) -> str:
    """What a rebuild from every journal writes: the file must always say exactly this."""
    return readmodel.dump(readmodel.build(SessionStore(home, projections=[]).sessions()))


def submitted_at(seconds: int, chat: str = "oc_group") -> ev.Submitted:
    return ev.Submitted(at=T0 + timedelta(seconds=seconds), project_uuid="p1",
                        project_url="https://www.liblib.tv/canvas?projectId=p1", text="a cat",
                        message="a cat, video ratio 16:9", auth_mode="nexu_gateway", delivery=ev.Delivery("feishu", chat))


def test_events_recorded_through_the_store_alone_reach_the_read_model(home):
    # No CLI, no readmodel call: what an embedding runtime does.
    store = SessionStore(home)
    store.record("s1", submitted_at(0))
    (row,) = on_disk(home)
    assert (row["session_id"], row["status"]) == ("s1", "submitted") and "result_urls" not in row

    store.record("s1", ev.PollAnswered(at=T0, after_seq=0, last_seq=2, new_messages=2, urls=(A, B), last_result_seq=1,
                                       last_assistant_seq=2))
    store.record("s1", ev.Completed(at=T0 + timedelta(minutes=3), urls=(A, B)))
    (row,) = on_disk(home)
    assert row["status"] == "completed" and row["result_urls"] == [A, B] and row["completed_at"]
    assert "delivered_at" not in row

    for url in (A, B):
        store.record("s1", ev.DeliverySucceeded(at=T0, url=url, sent_as="video"))
    store.record("s1", ev.Delivered(at=T0 + timedelta(minutes=4)))
    (row,) = on_disk(home)
    assert row["status"] == "completed" and row["delivered_at"] == "2026-11-25T08:04:00.000000Z"
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)


def test_the_read_model_kept_append_by_append_is_the_one_a_full_rebuild_writes(home):
    # More than 50 sessions, created out of order: rows are placed, replaced and dropped one at a time.
    store = SessionStore(home)
    order = [(i * 37) % 61 for i in range(61)]
    for seconds in order:
        sid = f"s{seconds:02d}"
        store.record(sid, submitted_at(seconds))
        if seconds % 4 == 1:
            store.record(sid, ev.Failed(at=T0 + timedelta(seconds=seconds + 1), reason="policy"))
    store.record("s60", ev.Completed(at=T0, urls=(A,)))   # the newest
    store.record("s11", ev.TimedOut(at=T0))               # the oldest of the 50 kept
    text = (home / "libtv-sessions.json").read_text(encoding="utf-8")
    assert text == full_rebuild(home)
    rows = json.loads(text)
    assert len(rows) == 50 and rows[0]["session_id"] == "s60" and rows[-1]["session_id"] == "s11"


def test_a_projection_of_an_older_state_never_replaces_a_newer_row(home):
    # Two writers of one session: the slower one projects after the faster one appended again.
    slow, fast = SessionStore(home), SessionStore(home)
    older = slow.record("s1", submitted_at(0))
    fast.record("s1", ev.Completed(at=T0, urls=(A,)))
    for projection in slow.projections:
        projection.appended(slow, older, ())
    assert on_disk(home)[0]["status"] == "completed"
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)


def test_a_failed_write_is_not_built_upon_the_next_append_rebuilds_from_the_journals(home, monkeypatch):
    from libtv_fsm import atomicfile

    store = SessionStore(home)
    store.record("s1", submitted_at(0))
    real = atomicfile.write_atomic

    def full_disk(path, *args, **kwargs):
        if Path(path).name == "libtv-sessions.json":
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(atomicfile, "write_atomic", full_disk)
    assert store.record("s1", ev.Completed(at=T0, urls=(A,))).state == "completed"  # the append stands
    assert on_disk(home)[0]["status"] == "submitted"                              # the cache missed it
    monkeypatch.setattr(atomicfile, "write_atomic", real)
    store.record("s2", submitted_at(5))  # another session: its append rebuilds, s1's change included
    assert {r["session_id"]: r["status"] for r in on_disk(home)} == {"s1": "completed", "s2": "submitted"}
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)


def test_a_file_written_by_another_tool_is_rebuilt_not_patched(home):
    store = SessionStore(home)
    store.record("s1", submitted_at(0))
    store.record("s2", submitted_at(5))
    (home / "libtv-sessions.json").write_text(json.dumps(on_disk(home)[:1], indent=2))  # an older tool's spelling
    store.record("s2", ev.Failed(at=T0, reason="policy"))
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)


def test_a_store_never_overwrites_a_legacy_file_it_has_not_imported(home):
    (home / "libtv-sessions.json").write_text(json.dumps(legacy_sessions("oc_g")))
    store = SessionStore(home)
    store.record("new", submitted_at(0))
    ids = [r["session_id"] for r in on_disk(home)]
    assert "new" in ids and {"old-delivered", "old-completed", "old-failed", "old-timeout"} <= set(ids)
    assert store.load("old-delivered").state == "delivered" and list(home.glob("libtv-sessions.json.legacy-*.bak"))
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)


WRITER = textwrap.dedent("""
    import sys
    from datetime import timedelta
    from libtv_fsm import SessionStore, events as ev
    from libtv_fsm.events import parse_time
    home, name = sys.argv[1], sys.argv[2]
    store = SessionStore(home)
    t0 = parse_time("2026-11-25T08:00:00Z")
    for i in range(12):
        sid = f"{name}{i:02d}"
        store.record(sid, ev.Submitted(at=t0 + timedelta(seconds=i), project_uuid="p", project_url="", text=sid,
                                       message=sid, auth_mode="nexu_gateway"))
        store.record(sid, ev.Completed(at=t0, urls=("https://libtv-res.liblib.art/claw/x.mp4",)))
        store.record("shared", ev.PollAnswered(at=t0, after_seq=0, last_seq=i, new_messages=1))
""")


def test_concurrent_writers_leave_the_read_model_a_full_rebuild_would_write(home):
    SessionStore(home).record("shared", submitted_at(0))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), name]) for name in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)
    assert len(on_disk(home)) == 37


def test_an_append_touches_its_own_row_only_no_other_journal_is_listed_or_replayed(home, monkeypatch):
    # create-session's latency: one row replaced, however many sessions the home has.
    store = SessionStore(home)
    for i in range(5):
        store.record(f"s{i}", submitted_at(i))

    listings = []
    monkeypatch.setattr(readmodel, "list_sessions", lambda *args: listings.append(args) or [])
    store.record("s9", submitted_at(9))
    store.record("s2", ev.Failed(at=T0, reason="policy"))
    monkeypatch.undo()
    assert listings == [], "an append listed every journal"
    assert (home / "libtv-sessions.json").read_text(encoding="utf-8") == full_rebuild(home)
    assert [(r["session_id"], r["status"]) for r in on_disk(home)][:4] == [
        ("s9", "submitted"), ("s4", "submitted"), ("s3", "submitted"), ("s2", "failed")]
