"""Crashes: a waiter (or create-session) SIGKILLed anywhere is restarted and every result still reaches the chat exactly once.

Deterministic crash points come from libtv_fsm.failpoints (LIBTV_FAILPOINTS): the real CLI
process kills itself right before or after a journal append of a given kind, or around an HTTP
call (before it is sent, after its answer's headers came back). Each case asserts the kill
really happened (exit -9), restarts the waiter without failpoints, and checks the chat and the
journal.
"""
from __future__ import annotations

import os
import signal

import pytest

from faultkit import (GROUP, KILLED, assert_clean_replay, assert_delivered_once, chat, run_waiter, skill,  # noqa: F401
                      start_waiter, submit)
from libtv_fsm import SessionStore
from waiting import wait_for

POLL = "/libtv/v1/session/*"
FILES, MESSAGES = "/open-apis/im/v1/files", "/open-apis/im/v1/messages"
TOKEN = "/open-apis/auth/v3/tenant_access_token/internal"

# One video: every journal append the happy path makes, before and after, and every HTTP step.
SINGLE_RESULT_POINTS = [
    "before_append:waiter_started",
    "after_append:waiter_started",
    f"before_http:GET:{POLL}",
    f"after_http:GET:{POLL}",
    "after_append:poll_answered:1",
    "before_append:poll_answered:2",
    "after_append:poll_answered:2",   # results seen, not yet concluded
    "before_append:completed",
    "after_append:completed",
    "before_append:delivery_attempted",
    "after_append:delivery_attempted",
    "after_http:GET:/cdn/*",          # mid-download of the result
    f"before_http:POST:{TOKEN}",
    f"after_http:POST:{TOKEN}",
    f"before_http:POST:{FILES}",      # before the upload
    f"after_http:POST:{FILES}",       # between the upload and the send
    f"before_http:POST:{MESSAGES}",
    f"after_http:POST:{MESSAGES}",    # sent, outcome not recorded
    "before_append:delivery_succeeded",
    "after_append:delivery_succeeded",
    "before_append:delivered",
    "after_append:delivered",
    "before_append:downloaded",
]

# Three results (two intermediate clips): crashes between one result and the next.
MULTI_RESULT_POINTS = [
    "after_append:delivery_succeeded:1",
    f"after_http:POST:{MESSAGES}:2",
    "before_append:delivery_attempted:3",
    f"after_http:POST:{FILES}:3",
]


def crash_then_finish(skill, sid: str, point: str) -> None:
    killed = run_waiter(skill, sid, failpoints=point)
    assert killed.code == KILLED, f"the failpoint {point} was never reached: {killed!r}"
    again = run_waiter(skill, sid)
    assert again.code == 0, again
    assert again.json() == {"sessionId": sid, "state": "delivered"}
    assert "Traceback" not in killed.err + again.err


@pytest.mark.parametrize("point", SINGLE_RESULT_POINTS)
def test_a_waiter_killed_at_any_step_delivers_the_result_once_after_a_restart(skill, home, sim, point):
    sid = submit(skill, "a cat")
    crash_then_finish(skill, sid, point)
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


@pytest.mark.parametrize("point", MULTI_RESULT_POINTS)
def test_a_waiter_killed_between_results_sends_each_result_once(skill, home, sim, point):
    sid = submit(skill, "a long story [sim:intermediate]")
    crash_then_finish(skill, sid, point)
    assert len(SessionStore(home).load(sid).result_urls) == 3
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_a_waiter_killed_again_and_again_still_delivers_each_result_once(skill, home, sim):
    """One session, a crash at a later step on every restart: the restarts add up, nothing is redone twice."""
    sid = submit(skill, "a poster and a trailer [sim:image+video]")
    chain = ["after_append:poll_answered:1", "after_append:completed", f"after_http:POST:{MESSAGES}:1",
             "after_append:delivery_succeeded:1", f"after_http:POST:{FILES}:1", f"after_http:POST:{MESSAGES}:1",
             "after_append:delivered"]
    for point in chain:
        killed = run_waiter(skill, sid, failpoints=point)
        assert killed.code == KILLED, f"{point}: {killed!r}"
    final = run_waiter(skill, sid)
    assert final.code == 0, final
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_a_waiter_killed_during_the_upload_resends_once_and_the_chat_shows_it_once(skill, home, sim):
    sim.hang_seconds = 20.0
    sim.inject(FILES, "hang")  # the upload arrives; its answer never does while the waiter lives
    sid = submit(skill, "a cat")
    waiter = start_waiter(skill, sid)
    wait_for(lambda: sim.requests_to(FILES), 30, "the upload to reach Feishu")
    os.killpg(waiter.pid, signal.SIGKILL)
    waiter.wait(timeout=10)
    assert chat(sim) == []
    again = run_waiter(skill, sid)
    assert again.code == 0, again
    assert len(sim.requests_to(FILES)) == 2  # uploaded again: the first upload's key was never known
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_a_failed_job_killed_before_its_notice_is_recorded_tells_the_chat_once(skill, home, sim):
    sid = submit(skill, "forbidden [sim:fail]")
    killed = run_waiter(skill, sid, failpoints=f"after_http:POST:{MESSAGES}")
    assert killed.code == KILLED, killed
    assert len(chat(sim)) == 1
    for _ in range(2):
        again = run_waiter(skill, sid)
        assert again.code == 3 and again.json()["state"] == "failed", again
    texts = chat(sim)
    assert len(texts) == 1 and "Content policy violation" in texts[0]["content"]["text"]
    assert len({r.json["uuid"] for r in sim.requests_to(MESSAGES)}) == 1  # the resend carried the same uuid
    assert_clean_replay(home, sid)


def test_a_waiter_killed_after_a_failed_send_was_recorded_retries_and_delivers_once(skill, home, sim):
    sim.inject(MESSAGES, "500")
    sid = submit(skill, "a cat")
    killed = run_waiter(skill, sid, failpoints="after_append:delivery_failed")
    assert killed.code == KILLED, killed
    again = run_waiter(skill, sid)
    assert again.code == 0, again
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_a_waiter_killed_as_it_times_out_is_resumed_by_recover_and_delivers_once(skill, home, sim):
    sid = submit(skill, "an epic [sim:never]")
    killed = run_waiter(skill, sid, failpoints="after_append:timed_out", env={"LIBTV_MAX_POLLS": "2"})
    assert killed.code == KILLED, killed
    assert SessionStore(home).load(sid).state == "timeout"
    sim.complete_now(sid)
    ran = skill("recover", "--json")
    assert ran.code == 0, ran
    entry = [s for s in ran.json()["sessions"] if s["session_id"] == sid][0]
    assert entry["waiter"] in ("started", "running")
    wait_for(lambda: SessionStore(home).load(sid).state == "delivered", 30, "the recovered session to be delivered")
    # the timeout notice was never sent (the waiter died first, and then it was no longer true); the result arrives once
    assert_delivered_once(home, sim, sid, notices=0)
    assert_clean_replay(home, sid)


def test_a_timeout_then_recover_then_a_crash_mid_send_still_delivers_once(skill, home, sim):
    sid = submit(skill, "an epic [sim:never]")
    timed_out = run_waiter(skill, sid, env={"LIBTV_MAX_POLLS": "2"})
    assert timed_out.code == 4, timed_out
    assert [m["msg_type"] for m in chat(sim)] == ["text"]  # "still generating", once
    sim.complete_now(sid)
    killed = run_waiter(skill, sid, failpoints=f"after_http:POST:{MESSAGES}")
    assert killed.code == KILLED, killed
    again = run_waiter(skill, sid)
    assert again.code == 0, again
    assert_delivered_once(home, sim, sid, notices=1)
    assert_clean_replay(home, sid)


# -- create-session dies after LibTV accepted the job ---------------------------------------------


@pytest.mark.parametrize("point", [
    "after_http:POST:/libtv/v1/session",   # LibTV answered; nothing journaled, nothing printed
    "before_append:submitted",             # the session id is known; the journal write never happened
    "after_append:submitted",              # journaled, but no waiter started and nothing printed
])
def test_create_session_killed_after_upstream_accepted_is_finished_by_recover(skill, home, sim, point):
    ran = skill("create-session", "a cat in the rain", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_FAILPOINTS": point})
    assert ran.code == KILLED and ran.out == "", ran
    assert len(sim.sessions) == 1
    sid = next(iter(sim.sessions))
    recovered = skill("recover", "--json")
    assert recovered.code == 0, recovered
    doc = recovered.json()
    entry = [s for s in doc["sessions"] if s["session_id"] == sid]
    assert entry and entry[0]["waiter"] in ("started", "running"), doc
    assert entry[0]["submitted_text"] == "a cat in the rain"
    assert entry[0]["delivery"] == {"channel": "feishu", "chat_id": GROUP}
    wait_for(lambda: SessionStore(home).load(sid).state == "delivered", 30, "the recovered session to be delivered")
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)
    assert not list((home / "libtv-journal" / ".submits").glob("*.json")), "the submit record was not cleared"
    # a second recover finds nothing more to do
    assert "submits" not in skill("recover", "--json").json()


def test_create_session_killed_while_the_post_is_in_flight_is_found_by_its_words(skill, home, sim):
    """The POST reached LibTV and the process died before the answer: only the request's words identify it."""
    other = submit(skill, "someone else's clip", target=None)  # an unrelated journaled session
    sim.hang_seconds = 20.0
    sim.inject("/libtv/v1/session", "hang")
    import subprocess

    from conftest import ENTRY_POINTS

    env = dict(skill.env)
    proc = subprocess.Popen(ENTRY_POINTS["module"] + ["create-session", "a fox at dawn", "--channel", "feishu",
                                                    "--chat-id", GROUP], env=env, cwd=str(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: len(sim.sessions) == 2, 30, "LibTV to accept the second session")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    sid = next(s for s in sim.sessions if s != other)
    assert not SessionStore(home).exists(sid)
    doc = skill("recover", "--json").json()
    assert doc["submits"][0]["status"] == "recovered" and doc["submits"][0]["session_id"] == sid, doc
    wait_for(lambda: SessionStore(home).load(sid).state == "delivered", 30, "the recovered session to be delivered")
    assert_delivered_once(home, sim, sid)


def test_create_session_killed_before_the_post_leaves_a_record_that_says_why(skill, home, sim):
    ran = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_FAILPOINTS": "before_http:POST:/libtv/v1/session"})
    assert ran.code == KILLED
    assert sim.sessions == {}
    doc = skill("recover", "--json").json()
    (entry,) = doc["submits"]
    assert entry["status"] == "closed" and "never reached LibTV" in entry["reason"], entry
    assert doc["sessions"] == []
    assert "submits" not in skill("recover", "--json").json()  # reported once, kept on disk for a human
    assert len(list((home / "libtv-journal" / ".submits").glob("*.json"))) == 1


def test_with_the_direct_api_a_submit_lost_mid_answer_is_reported_with_the_reason(skill, home, sim):
    from faultkit import DIRECT_KEY

    assert skill("update-key", "--api-key", DIRECT_KEY).code == 0
    ran = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_FAILPOINTS": "after_http:POST:/openapi/session"})
    assert ran.code == KILLED and len(sim.sessions) == 1
    # died before reading the answer: the direct API cannot list sessions, so this one cannot be found
    doc = skill("recover", "--json").json()
    (entry,) = doc["submits"]
    assert entry["status"] == "closed" and "cannot list sessions" in entry["reason"], entry
    assert doc["sessions"] == []


def test_with_the_direct_api_a_submit_whose_answer_was_read_is_finished(skill, home, sim):
    from faultkit import DIRECT_KEY

    assert skill("update-key", "--api-key", DIRECT_KEY).code == 0
    ran = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_FAILPOINTS": "before_append:submitted"})
    assert ran.code == KILLED
    doc = skill("recover", "--json").json()
    assert doc["submits"][0]["status"] == "recovered", doc
    sid = doc["submits"][0]["session_id"]
    wait_for(lambda: SessionStore(home).load(sid).state == "delivered", 30, "the recovered session to be delivered")
    assert_delivered_once(home, sim, sid)


def test_a_continued_session_whose_create_session_died_gets_its_new_turn_recorded(skill, home, sim):
    sid = submit(skill, "a cat")
    assert run_waiter(skill, sid).code == 0
    ran = skill("create-session", "now at night", "--session-id", sid,
                env={"LIBTV_FAILPOINTS": "before_http:POST:/libtv/v1/session", "LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code == KILLED
    # killed before the POST: the turn never started, and recover says so
    doc = skill("recover", "--json").json()
    assert doc["submits"][0]["status"] == "closed" and "never reached LibTV" in doc["submits"][0]["reason"]
    ran = skill("create-session", "now at night", "--session-id", sid,
                env={"LIBTV_FAILPOINTS": "after_http:POST:/libtv/v1/session"})
    assert ran.code == KILLED
    doc = skill("recover", "--json").json()
    assert doc["submits"][0] == {**doc["submits"][0], "status": "recovered", "session_id": sid}
    wait_for(lambda: SessionStore(home).load(sid).turn == 2 and SessionStore(home).load(sid).state == "delivered",
             30, "the second turn to be delivered")
    session = SessionStore(home).load(sid)
    assert len(session.result_urls) == 1 and len(chat(sim)) == 2
