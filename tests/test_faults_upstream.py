"""Hostile upstream: every broken, huge, mistyped, escaping, redirecting or trickling answer ends in a clear ❌ or a journaled outcome.

Never a traceback, never a hang, never a request (with a key or a token) to another host.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest

from faultkit import (GATEWAY_KEY, GROUP, assert_clean_replay, assert_delivered_once, catcher, chat,  # noqa: F401
                      each_in_parallel, make_skill, run_waiter, skill, slow_server, submit)
from libtv_fsm import SessionStore
from waiting import wait_for

HOSTILE = ["html502", "empty", "huge", "wrong_types", "path_id", "redirect", "slowloris"]
FAST_DEADLINE = {"LIBTV_HTTP_DEADLINE_SECONDS": "1"}

# (command line, the path prefix its first request goes to)
COMMANDS = [
    (["create-session", "a cat"], "/libtv/v1/session"),
    (["check"], "/api/v1/key/status"),
    (["tasks"], "/api/v1/tasks"),
    (["upload", "--file", "{image}"], "/libtv/v1/upload"),
    (["query-session", "sim-unknown"], "/libtv/v1/session/"),
    (["download-results", "sim-unknown", "--output-dir", "{out}"], "/libtv/v1/session/"),
    (["change-project"], "/libtv/v1/session/change-project"),
]


@contextmanager
def hostile_world(base: Path, fault: str) -> Iterator[Tuple[Any, Any, Path, Any]]:
    """(sim, catcher, home, skill) for one fault: its own simulator redirecting to a catcher host.

    On the way out: no request followed a redirect to the catcher, and the simulator did not crash.
    """
    from faultkit import Catcher
    from libtv_fsm.sim import Simulator

    with Simulator() as sim:
        catcher = Catcher()
        try:
            home = base / fault / "nexu"
            skill = make_skill(home, sim)
            sim.redirect_to = catcher.url + "/steal"
            yield sim, catcher, home, skill
            assert catcher.requests == [], f"{fault}: a request followed a redirect to another host"
            assert not sim.errors, sim.errors
        finally:
            catcher.close()


def hostile_commands(base: Path, fault: str) -> None:
    """Every upstream command against one hostile answer, with its own simulator, home and catcher."""
    with hostile_world(base, fault) as (sim, catcher, home, skill):
        image = base / fault / "in.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
        out = base / fault / "out"
        for argv, prefix in COMMANDS:
            args = [a.format(image=image, out=out) for a in argv]
            sim.inject(prefix, fault)
            started = time.monotonic()
            ran = skill(*args, env={**FAST_DEADLINE, "LIBTV_SKIP_BACKGROUND_WAITER": "1"}, timeout=30)
            elapsed = time.monotonic() - started
            sim.clear_injected()  # a leftover must not meet the next command
            where = f"{' '.join(args)} vs {fault}"
            assert "Traceback" not in ran.out + ran.err, f"{where}: {ran!r}"
            assert elapsed < 15, f"{where} took {elapsed:.1f} s"
            if ran.code != 0:
                errors = [x for x in ran.lines if x.startswith("❌")]
                assert ran.last.startswith("❌ ") and len(errors) == 1, f"{where}: {ran!r}"
            if args[0] == "create-session":
                # whatever came back is not a usable session: refused, and nothing journaled for it
                assert ran.code != 0, f"{where}: {ran!r}"
                assert SessionStore(home).journal.session_ids() == []


def test_every_command_meets_every_hostile_answer_with_one_clear_line(tmp_path):
    each_in_parallel(HOSTILE, lambda fault: hostile_commands(tmp_path, fault))
    assert not Path("/tmp/libtv-escape").exists() and not list(tmp_path.rglob("libtv-escape*"))


def hostile_polls(base: Path, fault: str) -> None:
    with hostile_world(base, fault) as (sim, catcher, home, skill):
        sid = submit(skill, "a cat")
        # urllib3 retries 5xx and resets inside one poll (3 times, backing off): four make one poll
        # fail as a whole (tried for "500" only: it costs 3 s of backoff); two are absorbed by them
        sim.inject(f"/libtv/v1/session/{sid}", *[fault] * (4 if fault == "500" else 2))
        ran = run_waiter(skill, sid, env=FAST_DEADLINE, timeout=60)
        assert ran.code == 0, ran
        assert "Traceback" not in ran.err, ran.err[-2000:]
        assert not sim.pending_faults(), "not every injected fault was met"
        if fault not in ("path_id", "html502", "reset"):  # path_id is well-formed; the others were absorbed
            assert "transient error, will retry" in ran.err, ran.err[-2000:]
        assert_delivered_once(home, sim, sid)
        assert_clean_replay(home, sid)


def test_a_waiter_polling_a_hostile_upstream_retries_and_delivers_once(tmp_path):
    each_in_parallel(HOSTILE + ["html", "malformed", "reset", "500"], lambda fault: hostile_polls(tmp_path, fault))


def test_a_poll_refused_for_good_fails_the_session_with_the_upstream_text(skill, home, sim):
    sid = submit(skill, "a cat [sim:poll_forbidden]")
    ran = run_waiter(skill, sid)
    assert ran.code == 3 and ran.json()["state"] == "failed", ran
    session = SessionStore(home).load(sid)
    assert session.failure_message == "Forbidden"
    assert [m["msg_type"] for m in chat(sim)] == ["text"] and "Forbidden" in chat(sim)[0]["content"]["text"]


def test_result_urls_on_look_alike_hosts_and_paths_are_never_taken(skill, home, sim):
    sid = submit(skill, "a cat")
    base = sim.url
    port = sim.port
    look_alikes = [
        "https://libtv-res.liblib.art.evil.com/claw/x.mp4",
        "https://libtv-res.liblib.art@evil.com/claw/x.mp4",
        "http://libtv-res.liblib.art/claw/x.mp4",
        "https://libtv-res.liblib.art/other/x.mp4",
        "https://libtv-res.liblib.art/claw/../../etc/x.mp4",
        f"http://127.0.0.1:{port}.evil.com/cdn/x.mp4",
        f"http://127.0.0.1:{port}@evil.com/cdn/x.mp4",
        f"http://localhost:{port}/cdn/x.mp4",
        f"{base}/cdnx/x.mp4",
        f"{base}/cdn/../secret.mp4",
        f"{base}/cdn/%2e%2e/secret.mp4",
        f"{base}/cdn/x.mp4\\@evil.com",
    ]
    with sim.lock:
        turn = sim.sessions[sid].turns[-1]
        turn.steps[-1][:0] = [
            {"role": "tool", "content": json.dumps({"task_result": {"videos": [{"url": u} for u in look_alikes],
                                                                     "images": [{"previewPath": u} for u in look_alikes]}})},
            # (in prose a backslash ends a URL, so the last one would read as a plain, harmless CDN URL)
            {"role": "assistant", "content": "Look: " + " ".join(look_alikes[:-1])},
        ]
    ran = run_waiter(skill, sid)
    assert ran.code == 0, ran
    session = SessionStore(home).load(sid)
    assert session.result_urls == sim.result_urls(sid) and len(session.result_urls) == 1
    assert_delivered_once(home, sim, sid)
    assert not any(r.path.startswith("/cdnx") or "secret" in r.path for r in sim.requests)


def test_a_result_redirected_to_another_host_is_sent_as_a_link_and_never_fetched_there(skill, home, sim, catcher):
    sim.redirect_to = catcher.url + "/cdn/stolen.mp4"
    sid = submit(skill, "a cat")
    sim.inject("/cdn/", "redirect", "redirect")  # the delivery download, then the local copy
    ran = run_waiter(skill, sid)
    assert ran.code == 0, ran
    assert catcher.requests == []
    session = SessionStore(home).load(sid)
    url = session.result_urls[0]
    (message,) = chat(sim)
    assert message["msg_type"] == "text" and url in message["content"]["text"]
    assert session.delivered[url] == "text"
    copies = [e.event for e in session.events if e.type == "downloaded"]
    assert copies and copies[0].error and not copies[0].path  # the local copy failed, and says so
    assert_delivered_once(home, sim, sid)


def test_a_result_that_trickles_in_is_cut_off_and_fetched_again(skill, home, sim):
    sid = submit(skill, "a cat")
    sim.inject("/cdn/", "slowloris")
    started = time.monotonic()
    ran = run_waiter(skill, sid, env=FAST_DEADLINE)
    assert ran.code == 0, ran
    assert time.monotonic() - started < 30
    session = SessionStore(home).load(sid)
    failures = [e.event for e in session.events if e.type == "delivery_failed"]
    assert len(failures) == 1 and failures[0].transient, failures
    assert_delivered_once(home, sim, sid)


def test_a_hostile_chat_platform_is_retried_and_the_result_still_arrives_once(skill, home, sim):
    sid = submit(skill, "a cat")
    sim.inject("/open-apis/auth/v3/tenant_access_token/internal", "wrong_types")
    sim.inject("/open-apis/im/v1/files", "html502")
    sim.inject("/open-apis/im/v1/messages", "slowloris")
    ran = run_waiter(skill, sid, env=FAST_DEADLINE)
    assert ran.code == 0, ran
    session = SessionStore(home).load(sid)
    failures = [e.event for e in session.events if e.type == "delivery_failed"]
    assert len(failures) == 3 and all(f.transient for f in failures), failures
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_a_chat_platform_redirect_is_not_followed_and_the_token_stays_home(skill, home, sim, catcher):
    sim.redirect_to = catcher.url + "/open-apis/im/v1/messages"
    sid = submit(skill, "a cat")
    sim.inject("/open-apis/im/v1/messages", "redirect")
    ran = run_waiter(skill, sid)
    assert catcher.requests == []
    assert "Traceback" not in ran.err
    session = SessionStore(home).load(sid)
    failures = [e.event for e in session.events if e.type == "delivery_failed"]
    assert failures and "302" in failures[0].error, failures
    if ran.code != 0:  # a redirect is a permanent no for this send: the next waiter tries again
        assert run_waiter(skill, sid).code == 0
    assert_delivered_once(home, sim, sid)


def test_a_slow_loris_upstream_that_trickles_even_its_headers_cannot_hang_a_command(skill, slow_server):
    started = time.monotonic()
    ran = skill("check", env={"LIBTV_GATEWAY_URL": slow_server.url, **FAST_DEADLINE}, timeout=30)
    elapsed = time.monotonic() - started
    assert ran.code != 0 and ran.last.startswith("❌ ") and "in time" in ran.last, ran
    assert elapsed < 10, elapsed


def test_every_call_has_a_deadline_even_when_each_byte_arrives_in_time(slow_server, monkeypatch):
    """In-process: the backend and the chat channel give up on a trickle at the deadline, with a clear error."""
    from libtv_fsm import errors
    from libtv_fsm.backends import open_backend
    from libtv_fsm.channels.feishu import FeishuChannel

    monkeypatch.setenv("LIBTV_HTTP_DEADLINE_SECONDS", "0.8")
    backend = open_backend(GATEWAY_KEY, {"LIBTV_GATEWAY_URL": slow_server.url})
    started = time.monotonic()
    with pytest.raises(errors.NetworkError, match="in time"):
        backend.query_session("sim-x")
    assert time.monotonic() - started < 5
    channel = FeishuChannel({"FEISHU_APP_ID": "cli_x", "FEISHU_APP_SECRET": "s" * 20, "LIBTV_FEISHU_BASE_URL": slow_server.url})
    started = time.monotonic()
    with pytest.raises(errors.TransientError):
        channel.send_text(GROUP, "hello", dedupe_key="k")
    assert time.monotonic() - started < 5


def test_a_huge_answer_is_cut_at_the_cap_not_read_whole(sim):
    """20 MB of otherwise valid JSON: refused once 8 MB are in, so memory stays bounded."""
    from libtv_fsm import errors, transport
    from libtv_fsm.backends import open_backend

    assert transport.MAX_JSON_BYTES < 20 * 1024 * 1024
    backend = open_backend(GATEWAY_KEY, sim.env())
    sim.inject("/libtv/v1/session/", "huge")
    with pytest.raises(errors.BadResponse, match="not JSON"):
        backend.query_session("sim-x")


def test_a_create_session_whose_answer_is_lost_is_found_and_delivered_by_recover(skill, home, sim):
    """LibTV takes the job but its answer never arrives in time: the paid job must not be forgotten.

    create-session says so in one ❌ line, keeps its written-down submit, and `recover` finds the
    session upstream by its words and delivers it.
    """
    sim.hang_seconds = 6.0
    sim.inject("/libtv/v1/session", "hang")  # the session is created; the answer comes after our deadline
    ran = skill("create-session", "a fox at dawn", "--channel", "feishu", "--chat-id", GROUP,
                env={**FAST_DEADLINE, "LIBTV_SKIP_BACKGROUND_WAITER": "1"}, timeout=30)
    assert ran.code != 0 and ran.last.startswith("❌ ") and "recover" in ran.last, ran
    assert len(sim.sessions) == 1, "LibTV should have accepted the job"
    sid = next(iter(sim.sessions))
    assert not SessionStore(home).exists(sid)
    kept = list((home / "libtv-journal" / ".submits").glob("*.json"))
    assert len(kept) == 1, "the submit record that recover needs was deleted when the answer was lost"
    doc = skill("recover", "--json").json()
    assert [(s["status"], s.get("session_id")) for s in doc.get("submits", [])] == [("recovered", sid)], doc
    wait_for(lambda: SessionStore(home).load(sid).state == "delivered", 30, "the recovered session to be delivered")
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)
