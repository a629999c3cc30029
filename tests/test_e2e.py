"""The skill end to end: a request submitted with create-session ends as a message in the chat, once.

Real subprocesses (the CLI and the detached waiter it spawns) against the loopback simulator.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List

import pytest

from conftest import ENTRY_POINTS, Cli, legacy_sessions, point_at_sim
from libtv_fsm import SessionStore
from waiting import state_of, wait_for, wait_state, waiter_gone

GROUP, USER = "oc_group_e2e", "ou_user_e2e"
KEYS = {"gateway": "mgk_sim_test_key_0001", "direct": "sk-libtv-sim-test-key-0001"}


@pytest.fixture
def skill(home: Path, sim) -> Cli:
    """The CLI pointed at the simulator with fast polling, configured with a gateway key."""
    return point_at_sim(Cli(home), sim, {"LIBTV_WAIT_TIMEOUT_SECONDS": "60"}, key=KEYS["gateway"])


def chat(sim, target: str) -> List[dict]:
    return [m for m in sim.feishu.messages if m["receive_id"] == target]


def submit(skill: Cli, text: str, *extra: str, env=None) -> dict:
    ran = skill("create-session", text, *extra, env=env)
    assert ran.code == 0 and len(ran.lines) == 1, ran
    return ran.json()


@pytest.mark.parametrize("route", ["gateway", "direct"])
def test_a_video_request_reaches_the_group_chat_once(skill, home, sim, route):
    assert skill("update-key", "--api-key", KEYS[route]).code == 0
    started = time.monotonic()
    out = submit(skill, "a cat surfing at sunset", "--channel", "feishu", "--chat-id", GROUP)
    assert time.monotonic() - started < 10
    assert set(out) == {"status", "sessionId", "projectUuid", "projectUrl", "channel", "deliverable", "note"}
    assert out["status"] == "submitted" and out["deliverable"] is True and out["channel"] == "feishu"
    sid = out["sessionId"]
    wait_state(home, sid, "delivered")
    wait_for(lambda: waiter_gone(home, sid), 30, "the background waiter to exit")  # it keeps a local copy last
    received = chat(sim, GROUP)
    assert [m["msg_type"] for m in received] == ["media"] and received[0]["receive_id_type"] == "chat_id"
    # the relayed words carry the hints (the model hint on the gateway only); the journal keeps the user's own words
    posted = [r for r in sim.requests if r.method == "POST" and r.path.endswith("/session")]
    hint = {"gateway": ", please use Seedance 2.0", "direct": ""}[route]
    assert posted[0].json["message"] == f"a cat surfing at sunset{hint}, video ratio 16:9"
    session = SessionStore(home).load(sid)
    assert session.submitted_text == "a cat surfing at sunset"
    assert session.auth_mode == {"gateway": "nexu_gateway", "direct": "libtv_direct"}[route]
    assert Path(session.downloads[session.result_urls[0]]).is_file()  # the local copy
    log = (home / f"libtv-waiter-{sid}.log").read_text()
    assert "delivered" in log and KEYS[route] not in log
    model = json.loads((home / "libtv-sessions.json").read_text())
    assert model[0]["session_id"] == sid and model[0]["status"] == "completed" and model[0]["delivered_at"]


def test_an_image_in_a_direct_chat_goes_to_the_sender_as_an_image(skill, home, sim):
    out = submit(skill, "a red fox [sim:image]", "--channel", "feishu", "--chat-id", USER)
    wait_state(home, out["sessionId"], "delivered")
    received = chat(sim, USER)
    assert [(m["msg_type"], m["receive_id_type"]) for m in received] == [("image", "open_id")]


def test_images_and_videos_of_one_request_each_arrive_once(skill, home, sim):
    out = submit(skill, "poster and trailer [sim:image+video]", "--channel", "feishu", "--chat-id", GROUP)
    wait_state(home, out["sessionId"], "delivered")
    assert sorted(m["msg_type"] for m in chat(sim, GROUP)) == ["image", "media"]


def test_intermediate_clips_all_arrive_in_order_once(skill, home, sim):
    out = submit(skill, "a long story [sim:intermediate]", "--channel", "feishu", "--chat-id", GROUP)
    wait_state(home, out["sessionId"], "delivered")
    session = SessionStore(home).load(out["sessionId"])
    assert len(session.result_urls) == 3 and len(chat(sim, GROUP)) == 3


def test_chat_target_from_the_openclaw_environment(skill, home, sim):
    out = submit(skill, "a dog", env={"OPENCLAW_CHANNEL_TYPE": "feishu", "OPENCLAW_CHAT_ID": GROUP})
    assert out["deliverable"] is True
    wait_state(home, out["sessionId"], "delivered")
    assert len(chat(sim, GROUP)) == 1


def test_without_a_chat_the_job_still_completes_and_nothing_is_sent(skill, home, sim):
    out = submit(skill, "a dog")
    assert out["deliverable"] is False and out["channel"] == "" and out["sessionId"] in out["note"]
    wait_state(home, out["sessionId"], "completed")
    assert sim.feishu.messages == []


def test_an_unknown_channel_is_refused_before_anything_is_submitted(skill, sim):
    ran = skill("create-session", "a dog", "--channel", "myspace", "--chat-id", "x")
    assert ran.code != 0 and ran.last.startswith("❌ ") and "Unknown channel" in ran.last
    assert sim.requests_to("/libtv/v1/session") == []


def test_running_the_waiter_again_on_a_delivered_session_sends_nothing(skill, home, sim):
    out = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP)
    sid = out["sessionId"]
    wait_state(home, sid, "delivered")
    wait_for(lambda: waiter_gone(home, sid), 30, "the background waiter to exit")
    before = SessionStore(home).load(sid).version
    again = skill("wait-and-deliver", "--session-id", sid)
    assert again.code == 0 and again.json() == {"sessionId": sid, "state": "delivered"}
    assert len(chat(sim, GROUP)) == 1 and SessionStore(home).load(sid).version == before


def test_two_waiters_at_once_deliver_once(skill, home, sim):
    sim.default_scenario = sim.scenarios["video"].__class__(polls_before_result=8)
    out = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP, env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    sid = out["sessionId"]
    cmd = ENTRY_POINTS["module"] + ["wait-and-deliver", "--session-id", sid]
    env = dict(skill.env)
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(p.wait(timeout=60) for p in procs)
    assert codes == [0, 5]
    assert state_of(home, sid) == "delivered" and len(chat(sim, GROUP)) == 1


def test_a_waiter_killed_mid_send_resumes_and_the_chat_sees_each_result_once(skill, home, sim):
    sim.hang_seconds = 5.0
    sim.inject("/open-apis/im/v1/messages", "hang")  # the send lands, its answer is slow
    out = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP, env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    sid = out["sessionId"]
    waiter = subprocess.Popen(ENTRY_POINTS["module"] + ["wait-and-deliver", "--session-id", sid], env=dict(skill.env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: chat(sim, GROUP), 30, "the first send to land")
    os.killpg(waiter.pid, signal.SIGKILL)
    waiter.wait(timeout=10)
    session = SessionStore(home).load(sid)
    assert session.state == "completed" and session.uncertain_urls == session.result_urls
    again = skill("wait-and-deliver", "--session-id", sid)
    assert again.code == 0, again
    assert state_of(home, sid) == "delivered"
    assert len(chat(sim, GROUP)) == 1  # the resend carried the same uuid: Feishu dropped it
    sends = sim.requests_to("/open-apis/im/v1/messages")
    assert len(sends) == 2 and sends[0].json["uuid"] == sends[1].json["uuid"]


def test_a_timeout_is_told_once_then_recover_delivers_when_upstream_finishes(skill, home, sim):
    env = {"LIBTV_MAX_POLLS": "3"}
    out = submit(skill, "an epic [sim:never]", "--channel", "feishu", "--chat-id", GROUP, env=env)
    sid = out["sessionId"]
    wait_state(home, sid, "timeout")
    wait_for(lambda: chat(sim, GROUP), 10, "the timeout notice")
    notice = chat(sim, GROUP)
    assert [m["msg_type"] for m in notice] == ["text"] and sid in notice[0]["content"]["text"]
    sim.complete_now(sid)
    ran = skill("recover", "--json")
    assert ran.code == 0, ran
    entry = [s for s in ran.json()["sessions"] if s["session_id"] == sid][0]
    assert entry["state"] == "timeout" and entry["waiter"] == "started"
    wait_state(home, sid, "delivered")
    assert [m["msg_type"] for m in chat(sim, GROUP)] == ["text", "media"]


def test_a_failed_job_sends_one_text_with_the_reason_and_exits_3(skill, home, sim):
    out = submit(skill, "something forbidden [sim:fail]", "--channel", "feishu", "--chat-id", GROUP,
                 env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    ran = skill("wait-and-deliver", "--session-id", out["sessionId"])
    assert ran.code == 3 and ran.json()["state"] == "failed", ran
    texts = chat(sim, GROUP)
    assert len(texts) == 1 and texts[0]["msg_type"] == "text" and "Content policy violation" in texts[0]["content"]["text"]
    assert skill("wait-and-deliver", "--session-id", out["sessionId"]).code == 3
    assert len(chat(sim, GROUP)) == 1  # told once


def test_without_upload_permission_the_chat_gets_the_link_and_the_grant_link(skill, home, sim):
    sim.feishu.deny_scope = True
    out = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP)
    wait_state(home, out["sessionId"], "delivered")
    received = chat(sim, GROUP)
    assert len(received) == 1 and received[0]["msg_type"] == "text"
    text = received[0]["content"]["text"]
    url = SessionStore(home).load(out["sessionId"]).result_urls[0]
    assert url in text and "open.feishu.cn/app/" in text


def test_a_continued_session_delivers_only_the_new_turns_results(skill, home, sim):
    first = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP)
    sid = first["sessionId"]
    wait_state(home, sid, "delivered")
    second = submit(skill, "now make it night", "--session-id", sid)
    assert second["sessionId"] == sid
    wait_for(lambda: SessionStore(home).load(sid).turn == 2 and state_of(home, sid) == "delivered", 30, "second turn")
    received = chat(sim, GROUP)
    assert len(received) == 2 and received[0]["content"] != received[1]["content"]
    session = SessionStore(home).load(sid)
    assert len(session.result_urls) == 1 and session.result_urls[0] in sim.result_urls(sid)[-1:]


def test_twenty_sessions_at_once_are_each_delivered_once(skill, home, sim):
    sim.set_key(KEYS["gateway"], remaining_uses=100, max_uses=100)
    targets = [f"oc_room_{i:02d}" for i in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        outs = list(pool.map(lambda t: submit(skill, f"clip for {t}", "--channel", "feishu", "--chat-id", t), targets))
    for out in outs:
        wait_state(home, out["sessionId"], "delivered", timeout=60)
    assert sorted(m["receive_id"] for m in sim.feishu.messages) == targets
    model = json.loads((home / "libtv-sessions.json").read_text())
    assert sorted(r["session_id"] for r in model) == sorted(o["sessionId"] for o in outs)
    listing = skill("recover", "--json").json()["sessions"]
    assert len(listing) == 20 and {s["state"] for s in listing} == {"delivered"}


def test_a_legacy_sessions_file_is_imported_and_nothing_in_it_is_lost(skill, home, sim):
    # the delivered and the failed session of the earlier skill's file
    legacy = [r for r in legacy_sessions(GROUP) if r["session_id"] in ("old-delivered", "old-failed")]
    (home / "libtv-sessions.json").write_text(json.dumps(legacy))
    ran = skill("recover", "--json", env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code == 0, ran
    by_id = {s["session_id"]: s for s in ran.json()["sessions"]}
    assert by_id["old-delivered"]["state"] == "delivered" and by_id["old-failed"]["state"] == "failed"
    assert by_id["old-failed"]["failure_message"] == "Content policy violation"
    assert by_id["old-delivered"]["result_urls"] == ["https://libtv-res.liblib.art/claw/a.mp4"]
    assert list(home.glob("libtv-sessions.json.legacy-*.bak"))
    model = json.loads((home / "libtv-sessions.json").read_text())
    assert {r["session_id"]: r["status"] for r in model} == {"old-delivered": "completed", "old-failed": "failed"}
    assert sim.feishu.messages == []  # an old delivered session is never sent again


def test_continuing_a_session_made_elsewhere_never_delivers_its_earlier_results(skill, home, sim):
    import requests

    headers = {"X-API-KEY": KEYS["gateway"]}
    made = requests.post(sim.url + "/libtv/v1/session", json={"message": "first turn"}, headers=headers, timeout=10).json()
    sid = made["sessionId"]
    sim.complete_now(sid)
    requests.get(f"{sim.url}/libtv/v1/session/{sid}", headers=headers, timeout=10)  # publishes turn one
    earlier = sim.result_urls(sid)
    assert earlier
    out = submit(skill, "second turn", "--session-id", sid, "--channel", "feishu", "--chat-id", GROUP)
    assert out["sessionId"] == sid
    wait_state(home, sid, "delivered")
    session = SessionStore(home).load(sid)
    assert session.result_urls and not set(session.result_urls) & set(earlier)
    assert len(chat(sim, GROUP)) == len(session.result_urls)


def test_query_session_journals_new_results_and_answers_from_the_journal(skill, home, sim):
    out = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP, env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    sid = out["sessionId"]
    sim.complete_now(sid)
    ran = skill("query-session", sid)
    assert ran.code == 0, ran
    doc = ran.json()
    assert doc["state"] == "completed" and doc["result_urls"] == sim.result_urls(sid)
    assert doc["projectUrl"] == out["projectUrl"]
    session = SessionStore(home).load(sid)
    assert session.state == "completed" and [e.event.source for e in session.events if e.type == "poll_answered"] == ["query"]
    assert sim.feishu.messages == []  # a query never delivers; the waiter (or recover) does
    assert skill("recover", "--json").json()["sessions"][0]["waiter"] == "started"
    wait_state(home, sid, "delivered")
    assert len(chat(sim, GROUP)) == 1


def test_query_session_that_finds_the_results_brings_the_read_model_along(skill, home, sim):
    # Issue 13: the journal said completed, libtv-sessions.json still said submitted, no result_urls.
    out = submit(skill, "a cat", "--channel", "feishu", "--chat-id", GROUP, env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    sid = out["sessionId"]
    model = json.loads((home / "libtv-sessions.json").read_text())
    assert [(r["session_id"], r["status"]) for r in model] == [(sid, "submitted")]
    sim.complete_now(sid)
    ran = skill("query-session", sid)
    assert ran.code == 0 and ran.json()["state"] == "completed", ran
    assert SessionStore(home).load(sid).state == "completed"
    (row,) = json.loads((home / "libtv-sessions.json").read_text())
    assert row["session_id"] == sid and row["status"] == "completed"
    assert row["result_urls"] == sim.result_urls(sid) and row["completed_at"] and "delivered_at" not in row


def test_wait_and_deliver_takes_over_a_session_submitted_elsewhere(skill, home, sim):
    import requests

    headers = {"X-API-KEY": KEYS["gateway"]}
    made = requests.post(sim.url + "/libtv/v1/session", json={"message": "from another machine"},
                         headers=headers, timeout=10).json()
    sid = made["sessionId"]
    ran = skill("wait-and-deliver", "--session-id", sid, "--project-id", made["projectUuid"],
                env={"OPENCLAW_CHANNEL_TYPE": "feishu", "OPENCLAW_CHAT_ID": GROUP})
    assert ran.code == 0 and ran.json() == {"sessionId": sid, "state": "delivered"}, ran
    session = SessionStore(home).load(sid)
    assert session.project_uuid == made["projectUuid"] and session.delivery.chat_id == GROUP
    assert len(chat(sim, GROUP)) == len(session.result_urls) == 1
