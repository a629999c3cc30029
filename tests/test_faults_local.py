"""Hostile local input: bad flags, ratios, keys and ids, an unwritable NEXU_HOME, a full disk, a hand-edited journal.

Each is one `❌` line (never a traceback or a usage dump), nothing reaches upstream that should
not, nothing is written outside its folder, and nothing already journaled is lost.
"""
from __future__ import annotations

import json
import resource
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple


from conftest import ENTRY_POINTS, Ran
from faultkit import (GATEWAY_KEY, GROUP, assert_clean_replay, assert_delivered_once, each_in_parallel,  # noqa: F401
                      run_waiter, skill, submit)
from libtv_fsm import SessionStore
from waiting import wait_for

PASTED_KEY = "mgk_pasted_secret_value_9876"

# (argv, extra env, a word the ❌ line must carry)
BAD_INPUT: List[Tuple[List[str], Dict[str, str], str]] = [
    (["create-session"], {}, "Nothing to generate"),
    (["create-session", "a cat", "--bogus"], {}, "unrecognized"),
    (["create-session", "a cat", "--session-id", "../../etc"], {}, "Invalid session id"),
    (["create-session", "a cat", "--session-id", "a/b"], {}, "Invalid session id"),
    (["create-session", "a cat", "--channel", "feishu", "--chat-id", "../../x"], {}, "Invalid Feishu chat id"),
    (["create-session", "a cat", "--channel", "feishu", "--chat-id", "ou_x\nrm -rf /"], {}, "Invalid Feishu chat id"),
    (["create-session", "a cat", "--channel", "myspace", "--chat-id", "x"], {}, "Unknown channel"),
    (["create-session", "a cat"], {"LIBTV_VIDEO_RATIO": "16x9"}, "Invalid video ratio"),
    (["setup", "--video-ratio", "0:9"], {}, "Invalid video ratio"),
    (["setup", "--video-ratio", "100:1"], {}, "Invalid video ratio"),
    (["setup", "--video-ratio", "16:9;rm"], {}, "Invalid video ratio"),
    (["update-ratio", "--video-ratio", "-1:2"], {}, ""),
    (["setup", "--api-key", "sk-other-1234567890"], {}, "Invalid API Key format"),
    (["setup", "--api-key", "mgk_abc def ghi jkl"], {}, "Invalid API Key format"),
    (["setup", "--api-key", "mgk_\u00e9t\u00e9_1234567890"], {}, "Invalid API Key format"),
    (["setup", "--api-key", "mgk_x\nX-Evil: 1"], {}, "Invalid API Key format"),
    (["update-key", "--api-key", ""], {}, "Invalid API Key format"),
    (["check", PASTED_KEY], {}, "unrecognized"),
    (["query-session", "../../etc/passwd"], {}, "Invalid session id"),
    (["query-session", "sim-x", "--after-seq", "-1"], {}, "0 or more"),
    (["query-session", "sim-x", "--after-seq", "ten"], {}, "whole number"),
    (["query-session", "sim-x", "--project-id", "../x"], {}, "Invalid project id"),
    (["history", "../x"], {}, "Invalid session id"),
    (["history", "..", "--json"], {}, "Invalid session id"),
    (["wait-and-deliver", "--session-id", "../../x"], {}, "Invalid session id"),
    (["wait-and-deliver", "--session-id", "sim-new"], {"LIBTV_POLL_INTERVAL_SECONDS": "soon"}, "must be a number"),
    (["worker"], {"LIBTV_WORKER_IDLE_EXIT": "soon"}, "must be a number"),
    (["worker"], {"LIBTV_JOURNAL_URL": "postgresql://u@127.0.0.1:9/x", "LIBTV_QUEUE_STALLED_SECONDS": "soon"},
     "must be a number"),
    (["download-results", "../x"], {}, "Invalid session id"),
    (["download-results", "--urls", "file:///etc/passwd"], {}, "Not a result URL"),
    (["upload", "--file", "/etc/passwd"], {}, "Unsupported file type"),
    (["upload", "--file", "/nonexistent/cat.png"], {}, "File not found"),
    (["no-such-command"], {}, "invalid choice"),
]


def test_bad_flags_ratios_keys_and_ids_are_one_clear_line_and_reach_nobody(skill, home, sim):
    before = sorted(str(p.relative_to(home)) for p in home.rglob("*"))

    def one(index: str) -> None:
        argv, env, word = BAD_INPUT[int(index)]
        ran = skill(*argv, env=env)
        where = f"{argv!r} {env}"
        assert ran.code != 0, f"{where}: {ran!r}"
        # one ❌ line, the last (download-results prints its JSON report first)
        assert ran.lines and ran.last.startswith("❌ ") and sum(x.startswith("❌") for x in ran.lines) == 1, f"{where}: {ran!r}"
        assert word in ran.last, f"{where}: {ran.last!r} lacks {word!r}"
        assert "Traceback" not in ran.err and "usage:" not in ran.err, f"{where}: {ran.err!r}"
        assert PASTED_KEY not in ran.out + ran.err and "9876\n" not in ran.out[:-1]

    each_in_parallel([str(i) for i in range(len(BAD_INPUT))], one, workers=4)
    assert sim.requests_to("/libtv/v1/session") == [] and sim.requests_to("/libtv/v1/upload") == []
    after = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    # no journal or file came out of any of them (the read-model lock and such may appear; no journal)
    assert [p for p in after if p.endswith(".jsonl")] == [], after
    assert set(before) <= set(after)
    assert json.loads((home / "libtv.json").read_text())["apiKey"] == GATEWAY_KEY  # no bad key was saved


def test_a_download_prefix_or_a_planted_symlink_never_writes_outside_the_output_folder(skill, home, sim, tmp_path):
    url = sim.cdn_put("x/1.mp4", 4096)
    out = tmp_path / "out"
    out.mkdir()
    for prefix in ["../../evil", "/etc/evil", "..", "ev/../il", "\u202eevil", "", "a" * 300]:
        ran = skill("download-results", "--urls", url, "--output-dir", str(out), "--prefix", prefix)
        assert ran.code == 0, (prefix, ran)
        (written,) = ran.json()["downloaded"]
        assert Path(written).parent == out.resolve() and len(Path(written).name) < 80, (prefix, written)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (out / "planted_1.mp4").symlink_to(outside)  # planted where the next download will land
    ran = skill("download-results", "--urls", url, "--output-dir", str(out), "--prefix", "planted")
    assert outside.read_text() == "keep me"
    if ran.code != 0:  # refusing is as good as replacing the link itself; writing through it is not
        assert ran.last.startswith("❌ ") and "outside" in ran.last, ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nexu", "out", "outside.txt"]


def test_an_unwritable_nexu_home_is_one_clear_line_and_nothing_is_sent(skill, home, sim, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad_home = {"NEXU_HOME": str(blocker / "nexu")}  # below a file: unwritable even for root
    for argv in (["setup", "--api-key", GATEWAY_KEY], ["create-session", "a cat"], ["history", "sim-x"], ["recover"]):
        ran = skill(*argv, env=bad_home)
        assert ran.code != 0 and ran.last.startswith("❌ ") and "Traceback" not in ran.err, (argv, ran)
    # a home whose journal folder cannot be made: refused before the request goes out
    (home / "libtv-journal").write_text("in the way")
    for argv in (["create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP], ["recover", "--json"]):
        ran = skill(*argv)
        assert ran.code != 0 and ran.last.startswith("❌ ") and "Traceback" not in ran.err, (argv, ran)
    assert sim.requests_to("/libtv/v1/session", "POST") == []
    assert (home / "libtv-journal").read_text() == "in the way"


def run_limited(skill, args: List[str], max_file_bytes: int, env: Optional[Dict[str, str]] = None) -> Ran:
    """The CLI with RLIMIT_FSIZE: a write past ``max_file_bytes`` in any file fails with EFBIG (a full disk, for one process)."""
    full = dict(skill.env)
    full.update(env or {})

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    proc = subprocess.run(ENTRY_POINTS["module"] + args, env=full, cwd=str(skill.home), capture_output=True,
                          text=True, timeout=60, preexec_fn=limit, encoding="utf-8")
    return Ran(proc)


def test_a_full_disk_while_waiting_is_reported_and_loses_nothing_already_written(skill, home, sim):
    sid = submit(skill, "a cat")
    journal = home / "libtv-journal" / f"{sid}.jsonl"
    before = journal.read_bytes()
    # room for the small waiter_started line, not for the first poll's
    ran = run_limited(skill, ["wait-and-deliver", "--session-id", sid], len(before) + 150)
    assert ran.code == 1 and ran.last.startswith("❌ ") and "journal" in ran.last, ran
    assert "File too large" in ran.last and "Traceback" not in ran.err, ran
    after = journal.read_bytes()
    assert after.startswith(before) and after.endswith(b"\n") and len(after) <= len(before) + 150
    assert_clean_replay(home, sid)
    again = run_waiter(skill, sid)
    assert again.code == 0, again
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_a_full_disk_while_submitting_is_reported_and_recover_finishes_what_libtv_accepted(skill, home, sim):
    # no room even for the submit record: nothing is sent
    ran = run_limited(skill, ["create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP], 60)
    assert ran.code != 0 and "nothing was sent to LibTV" in ran.last and "Traceback" not in ran.err, ran
    assert sim.sessions == {}
    # room for the submit record (about 250 bytes) but not for the journal line (about 380): LibTV has the job
    ran = run_limited(skill, ["create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP], 300,
                      env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code != 0 and ran.last.startswith("❌ ") and "Traceback" not in ran.err, ran
    assert len(sim.sessions) == 1, ran
    sid = next(iter(sim.sessions))
    assert "recover" in ran.last and sid in ran.last, ran
    doc = skill("recover", "--json").json()
    # (the first attempt could not even write its record, so it left nothing to find)
    assert [(s["status"], s.get("session_id")) for s in doc["submits"]] == [("recovered", sid)], doc
    wait_for(lambda: SessionStore(home).load(sid).state == "delivered", 30, "the recovered session to be delivered")
    assert_delivered_once(home, sim, sid)


def test_a_hand_edited_journal_is_read_around_its_garbage_and_history_reports_it(skill, home, sim):
    sid = submit(skill, "a cat")
    assert run_waiter(skill, sid).code == 0
    path = home / "libtv-journal" / f"{sid}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    edited = (lines[:2] + [b"# a note someone typed\n", b"{not json\n", b'{"seq": 99, "type": "delivered"}\n',
                           b'{"seq": "x"}\n', b"\xff\xfe binary\n"] + lines[2:] + [b'{"seq": 1000, "type": "torn'])
    path.write_bytes(b"".join(edited))
    ran = skill("history", sid)
    assert ran.code == 0, ran
    assert "6 unreadable journal line(s) skipped" in ran.out and f"Session {sid}: delivered" in ran.out, ran.out
    doc = skill("history", sid, "--json").json()
    assert doc["state"] == "delivered" and doc["skipped_lines"] == 6 and len(doc["journal_problems"]) == 6
    listed = [s for s in skill("recover", "--json").json()["sessions"] if s["session_id"] == sid][0]
    assert listed["state"] == "delivered" and listed.get("skipped_lines") == 6
    # nothing is sent again, and the journal takes new lines after the torn one
    again = run_waiter(skill, sid)
    assert again.code == 0 and len(sim.feishu.messages) == 1, again
    session = SessionStore(home).load(sid)
    assert session.skipped_lines == 6 and session.state == "delivered" and not session.ignored
