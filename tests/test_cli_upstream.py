"""The upstream CLI commands as real subprocesses against the simulator, on both routes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libtv_fsm.sim import Simulator

KEYS = {"gateway": Simulator.GATEWAY_KEY, "direct": Simulator.DIRECT_KEY}


@pytest.fixture(params=["gateway", "direct"])
def route(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def run(cli: Any, sim: Simulator, route: str) -> Any:
    """The CLI pointed at the simulator with the route's key configured."""
    cli.env.update(sim.env())
    ran = cli("setup", "--api-key", KEYS[route])
    assert ran.code == 0, ran
    return cli


def only_failure(ran: Any) -> str:
    assert ran.code != 0, ran
    assert ran.lines and ran.last.startswith("❌ "), ran
    assert "Traceback" not in ran.out + ran.err
    return ran.last


def new_session(sim: Simulator, route: str, text: str = "a cat [sim:image+video]") -> str:
    # The library, not the CLI, creates the session here: create-session belongs to another suite.
    from libtv_fsm.backends import open_backend

    created = open_backend(KEYS[route], sim.env()).create_session(text)
    return created.session_id


# --- upload ------------------------------------------------------------------------------------------

def test_upload_prints_the_url_last(run: Any, sim: Simulator, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 70_000)
    ran = run("upload", "--file", path)
    assert ran.code == 0, ran
    url = ran.json()["url"]
    assert url.startswith(sim.url + "/cdn/uploads/") and url.endswith("clip.mp4")
    assert sim.uploads[-1]["size"] == 70_000


@pytest.mark.parametrize("name, size, keyword", [
    ("nope.png", None, "File not found"),
    ("notes.txt", 5, "Unsupported file type"),
    ("huge.mp4", 200 * 1024 * 1024 + 1, "File too large"),
])
def test_upload_guards(run: Any, sim: Simulator, tmp_path: Path, name: str, size: Any, keyword: str) -> None:
    path = tmp_path / name
    if size is not None:
        with path.open("wb") as handle:
            handle.truncate(size)
    assert only_failure(run("upload", "--file", path)).startswith(f"❌ {keyword}")
    assert sim.requests_to("/libtv/") == [] and sim.requests_to("/openapi/") == []


def test_upload_falls_back_on_an_older_direct_deployment(cli: Any, sim: Simulator, tmp_path: Path) -> None:
    cli.env.update(sim.env())
    cli("setup", "--api-key", KEYS["direct"])
    sim.direct_legacy_upload = True
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8" + b"\0" * 100)
    ran = cli("upload", "--file", path)
    assert ran.code == 0, ran
    assert [r.path for r in sim.requests_to("/openapi/")] == ["/openapi/file/upload", "/openapi/upload"]


# --- query-session -----------------------------------------------------------------------------------

def test_query_session_states(run: Any, sim: Simulator, route: str) -> None:
    sid = new_session(sim, route)
    ran = run("query-session", sid, "--project-id", "p-123")
    assert ran.code == 0, ran
    first = ran.json()
    assert first["state"] == "polling" and "result_urls" not in first
    assert first["projectUrl"] == "https://www.liblib.tv/canvas?projectId=p-123"
    user_seq = first["messages"][-1]["seq"]
    sim.complete_now(sid)
    done = run("query-session", sid, "--after-seq", str(user_seq)).json()
    assert done["state"] == "completed"
    assert done["result_urls"] == sim.result_urls(sid)
    assert all(m["seq"] > user_seq for m in done["messages"])
    assert set(done["messages"][0]) == {"id", "seq", "role", "content"}
    # Asked after everything, nothing new: no results are shown again.
    again = run("query-session", sid, "--after-seq", str(done["messages"][-1]["seq"])).json()
    assert again == {"messages": [], "state": "polling"}


def test_query_session_reports_a_failed_generation(run: Any, sim: Simulator, route: str) -> None:
    sid = new_session(sim, route, "x [sim:fail]")
    sim.complete_now(sid)
    view = run("query-session", sid).json()
    assert view["state"] == "failed" and view["failure_message"] == "Content policy violation"


@pytest.mark.parametrize("bad", ["../../etc", "a/b", ".."])
def test_query_session_refuses_hostile_ids(run: Any, sim: Simulator, bad: str) -> None:
    assert "Invalid session id" in only_failure(run("query-session", bad))
    assert sim.requests == []


def test_query_session_relays_upstream_errors(run: Any, sim: Simulator, route: str) -> None:
    sim.set_key(KEYS[route], error="expired")
    assert only_failure(run("query-session", "sim-x")) == "❌ Key expired"
    sim.set_key(KEYS[route])
    assert only_failure(run("query-session", "sim-missing")) == "❌ Session not found"


# --- download-results --------------------------------------------------------------------------------

def test_download_a_sessions_results(run: Any, sim: Simulator, route: str, tmp_path: Path) -> None:
    sid = new_session(sim, route)
    sim.complete_now(sid)
    run("query-session", sid)  # the poll that publishes
    out = tmp_path / "out"
    ran = run("download-results", sid, "--output-dir", out, "--prefix", "../../evil name")
    assert ran.code == 0, ran
    doc = ran.json()
    urls = sim.result_urls(sid)
    assert doc["output_dir"] == str(out.resolve()) and doc["total"] == len(urls) == 2 and "errors" not in doc
    names = [Path(p).name for p in doc["downloaded"]]
    assert names == ["evil_name_1.png", "evil_name_2.mp4"]
    for path, url in zip(doc["downloaded"], urls):
        assert Path(path).parent == out.resolve() and Path(path).read_bytes() == sim.cdn_bytes(url)
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_download_urls_only_results_and_default_folder(run: Any, sim: Simulator, home: Path) -> None:
    good = [sim.cdn_put(f"x/{n}.mp4", 200_000 + n) for n in range(5)]
    foreign = "https://evil.example.com/claw/a.mp4"
    ran = run("download-results", "--urls", *good, foreign, good[0])
    assert ran.code == 0, ran
    doc = ran.json()
    assert doc["output_dir"] == str((home / "downloads").resolve())  # LIBTV_DOWNLOAD_DIR
    assert doc["total"] == 6
    assert [Path(p).name for p in doc["downloaded"]] == [f"libtv_{n}.mp4" for n in range(1, 6)]
    assert doc["errors"] == [{"url": foreign, "error": "Not a result URL; refused"}]
    assert sim.requests_to("/cdn/x/") and not any("evil" in r.path for r in sim.requests)


def test_download_with_nothing_to_download_fails_clearly(run: Any, sim: Simulator) -> None:
    assert "session id or --urls" in only_failure(run("download-results"))
    ran = run("download-results", "--urls", "https://evil.example.com/a.mp4")
    assert only_failure(ran).startswith("❌ No result downloaded")
    assert json.loads(ran.lines[-2])["errors"]


# --- tasks / change-project --------------------------------------------------------------------------

def test_tasks_on_the_gateway(run: Any, sim: Simulator, route: str) -> None:
    if route == "direct":
        assert "only available for mgk_ keys" in only_failure(run("tasks"))
        assert sim.requests == []
        return
    assert run("tasks").lines == ["No tasks yet."]
    sid = new_session(sim, route)
    sim.complete_now(sid)
    run("query-session", sid)
    ran = run("tasks")
    assert ran.code == 0, ran
    assert ran.lines[0] == "1 task(s):" and sid in ran.lines[1] and "completed" in ran.lines[1]
    assert any(line.strip().startswith("🎬 " + sim.url) for line in ran.lines)
    doc = run("tasks", "--json").json()
    assert [t["id"] for t in doc["tasks"]] == [sid] and doc["tasks"][0]["status"] == "completed"
    assert set(doc["tasks"][0]) == {"id", "status", "backend", "created_at", "completed_at", "video_url", "error_message"}


def test_change_project(run: Any, sim: Simulator, route: str) -> None:
    first = run("change-project")
    second = run("change-project")
    assert first.code == second.code == 0, (first, second)
    a, b = first.json(), second.json()
    assert a["projectUuid"] != b["projectUuid"]
    assert b["projectUrl"] == f"https://www.liblib.tv/canvas?projectId={b['projectUuid']}"
    other = "/libtv/" if route == "direct" else "/openapi/"
    assert sim.requests_to(other) == []


def test_no_key_configured(cli: Any, sim: Simulator) -> None:
    cli.env.update(sim.env())
    assert "setup --api-key" in only_failure(cli("change-project"))
    assert sim.requests == []


def test_unreachable_upstream_is_one_clean_line(cli: Any) -> None:
    # One route is enough: connection retries make this the slowest test (~3 s).
    cli.env["LIBTV_GATEWAY_URL"] = "http://127.0.0.1:9"
    cli("setup", "--api-key", KEYS["gateway"])
    assert only_failure(cli("change-project")).startswith("❌ Network error")


def test_upstream_commands_start_light(cli: Any) -> None:
    import subprocess
    import sys

    code = ("import sys, libtv_fsm.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('requests', 'urllib3', 'requests_toolbelt')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
