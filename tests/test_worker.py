"""The home worker (CONTRACT section 8): one process serves every unfinished session of a home, each result once.

Real `libtv-video worker` processes against the loopback simulator. Sessions are submitted with
LIBTV_SKIP_BACKGROUND_WAITER=1 so that the worker a test starts is the only one.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import ENTRY_POINTS, Cli
from faultkit import (GROUP, assert_clean_replay, assert_delivered_once, chat, run_waiter, skill,  # noqa: F401
                      start_waiter, submit)
from libtv_fsm import SessionStore
from libtv_fsm.sim import Scenario
from waiting import wait_for, wait_state

MESSAGES = "/open-apis/im/v1/messages"


def start_worker(skill: Cli, *args: str, env: Optional[Dict[str, str]] = None,
                 idle_exit: str = "1") -> subprocess.Popen:
    """`libtv-video worker` in the background (its own process group), exiting after ``idle_exit`` idle seconds."""
    full = dict(skill.env)
    full.update(env or {})
    cmd = ENTRY_POINTS["module"] + ["worker", "--idle-exit", idle_exit, *args]
    return subprocess.Popen(cmd, env=full, cwd=str(skill.home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, text=True)


def finished(proc: subprocess.Popen, timeout: float = 30) -> int:
    code = proc.wait(timeout=timeout)
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    return code


def worker_log(home: Path) -> str:
    path = home / "libtv-worker.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


def events(home: Path, sid: str, kind: str) -> List[object]:
    return [e for e in SessionStore(home).load(sid).events if e.type == kind]


def test_one_worker_delivers_every_session_and_picks_up_a_new_one_within_a_second(skill, home, sim):
    first = [submit(skill, "a cat", target="oc_cat"), submit(skill, "a dog [sim:image]", target="oc_dog")]
    worker = start_worker(skill, idle_exit="30")
    for sid in first:
        wait_state(home, sid, "delivered")
    late = submit(skill, "a fox", target="oc_fox")
    wait_state(home, late, "delivered")
    worker.send_signal(signal.SIGINT)
    assert finished(worker) == 0
    for sid, target in zip(first + [late], ("oc_cat", "oc_dog", "oc_fox")):
        assert_delivered_once(home, sim, sid, target)
        (started,) = events(home, sid, "waiter_started")
        assert started.event.pid == worker.pid
        assert f"delivered ({1} result(s))" in (home / f"libtv-waiter-{sid}.log").read_text(encoding="utf-8")
    submitted = events(home, late, "submitted")[0].event.at
    picked = events(home, late, "waiter_started")[0].event.at
    assert (picked - submitted).total_seconds() < 1.0, "a new session was not picked up within a second"
    log = worker_log(home)
    assert f"[{late}] session {late} delivered" in log and "exiting (signal" in log


def test_two_workers_started_at_once_one_serves_and_the_other_exits_0_at_once(skill, home, sim):
    sid = submit(skill, "a cat")
    workers = [start_worker(skill), start_worker(skill)]
    wait_state(home, sid, "delivered")
    codes = [finished(w) for w in workers]
    assert codes == [0, 0]
    assert worker_log(home).count("another worker serves") == 1
    assert len(events(home, sid, "waiter_started")) == 1
    assert_delivered_once(home, sim, sid)


def test_a_worker_and_a_wait_and_deliver_never_both_work_one_session(skill, home, sim):
    held = submit(skill, "an epic [sim:never]", target="oc_held")
    waiter = start_waiter(skill, held)
    wait_for(lambda: events(home, held, "waiter_started"), 30, "the waiter to start")
    mine = submit(skill, "a long one [sim:never]")
    worker = start_worker(skill, idle_exit="30")
    wait_for(lambda: events(home, mine, "waiter_started"), 30, "the worker to take its session")
    wait_for(lambda: "held by another waiter" in worker_log(home), 10, "the worker to skip the held session")
    # a wait-and-deliver for the session the worker serves: exit 5, nothing done
    assert run_waiter(skill, mine).code == 5
    assert len(events(home, held, "waiter_started")) == 1
    # the waiter goes away: the worker takes its session over and delivers both
    os.killpg(waiter.pid, signal.SIGKILL)
    waiter.wait(timeout=10)
    wait_for(lambda: len(events(home, held, "waiter_started")) == 2, 10, "the worker to take the freed session")
    sim.complete_now(held)
    sim.complete_now(mine)
    for sid in (held, mine):
        wait_state(home, sid, "delivered")
    worker.send_signal(signal.SIGTERM)
    assert finished(worker) == 0
    for sid, target in ((held, "oc_held"), (mine, GROUP)):
        assert_delivered_once(home, sim, sid, target)
        assert_clean_replay(home, sid)


def test_a_timed_out_session_is_left_to_recover_and_an_idle_worker_exits_0(skill, home, sim):
    sid = submit(skill, "an epic [sim:never]")
    assert run_waiter(skill, sid, env={"LIBTV_MAX_POLLS": "1"}).code == 4
    version = SessionStore(home).load(sid).version
    worker = start_worker(skill, idle_exit="0.5")
    assert finished(worker, timeout=10) == 0
    assert "exiting (idle)" in worker_log(home)
    assert SessionStore(home).load(sid).version == version, "the worker resumed a timed-out session by itself"


@pytest.mark.parametrize("hangs", ["poll", "send"])
def test_a_hanging_call_of_one_session_does_not_delay_another_sessions_delivery(skill, home, sim, hangs):
    if hangs == "poll":
        sim.scenarios["slow"] = Scenario(poll_faults=("hang",), hang_seconds=20.0)
        sids = [submit(skill, "a slow one [sim:slow]", target="oc_a"), submit(skill, "a cat", target="oc_b")]
        hanging = f"/libtv/v1/session/{sids[0]}"
    else:
        sim.hang_seconds = 20.0
        sim.inject(MESSAGES, "hang")  # whichever session sends first hangs there
        sids = [submit(skill, "a dog", target="oc_a"), submit(skill, "a cat", target="oc_b")]
        hanging = MESSAGES
    worker = start_worker(skill, idle_exit="30")
    first = wait_for(lambda: sim.requests_to(hanging), 10, f"a {hangs} to hang")[0]
    began = time.monotonic()
    stuck = sids[0] if hangs == "poll" or first.json["receive_id"] == "oc_a" else sids[1]
    quick = sids[1] if stuck == sids[0] else sids[0]
    wait_state(home, quick, "delivered", timeout=10)
    assert time.monotonic() - began < 5
    expected = "submitted" if hangs == "poll" else "completed"
    assert SessionStore(home).load(stuck).state == expected, "the hanging call answered early"
    worker.kill()
    worker.wait(timeout=10)


def test_sigterm_while_a_send_is_in_flight_finishes_the_send_and_exits_0(skill, home, sim):
    sim.hang_seconds = 2.0
    sim.inject(MESSAGES, "hang")
    sid = submit(skill, "a cat")
    worker = start_worker(skill, idle_exit="30")
    wait_for(lambda: sim.requests_to(MESSAGES), 30, "the send to reach the chat")
    worker.send_signal(signal.SIGTERM)
    assert finished(worker) == 0
    assert events(home, sid, "delivery_succeeded"), "the send in flight was abandoned"
    assert_delivered_once(home, sim, sid)
    assert len(chat(sim)) == 1


# -- started by create-session and recover ------------------------------------------------------------


def worker_pid(home: Path) -> int:
    return int((home / "libtv-worker.pid").read_text().strip())


def test_create_session_starts_one_worker_for_every_session_instead_of_a_waiter_each(skill, home, sim):
    sids = [skill("create-session", text, "--channel", "feishu", "--chat-id", chat_id).json()["sessionId"]
            for text, chat_id in (("a cat", "oc_cat"), ("a dog", "oc_dog"))]
    pid = wait_for(lambda: (home / "libtv-worker.pid").exists() and worker_pid(home), 10, "the worker to start")
    for sid, chat_id in zip(sids, ("oc_cat", "oc_dog")):
        wait_state(home, sid, "delivered")
        assert_delivered_once(home, sim, sid, chat_id)
        assert [e.event.pid for e in events(home, sid, "waiter_started")] == [pid]
    wait_for(lambda: not (home / "libtv-worker.pid").exists(), 10, "the worker to leave once idle")
    # LIBTV_WAITER=process keeps one wait-and-deliver per session
    own = skill("create-session", "a fox", "--channel", "feishu", "--chat-id", "oc_fox",
                env={"LIBTV_WAITER": "process"}).json()["sessionId"]
    wait_state(home, own, "delivered")
    assert [e.event.pid for e in events(home, own, "waiter_started")] != [pid]
    assert f"[{own}]" not in worker_log(home) and not (home / "libtv-worker.pid").exists()


@pytest.mark.parametrize("then", ["recover", "create-session"])
def test_a_worker_killed_mid_send_is_brought_back_and_each_result_reaches_the_chat_once(skill, home, sim, then):
    sid = submit(skill, "a poster and a trailer [sim:image+video]")
    killed = start_worker(skill, env={"LIBTV_FAILPOINTS": f"after_http:POST:{MESSAGES}:1"})
    assert killed.wait(timeout=30) == -signal.SIGKILL
    assert SessionStore(home).load(sid).state == "completed" and len(chat(sim)) == 1
    if then == "recover":
        ran = skill("recover", "--json")
        assert ran.code == 0, ran
        assert [s["waiter"] for s in ran.json()["sessions"]] == ["started"]
    else:
        other = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", "oc_cat").json()["sessionId"]
        wait_state(home, other, "delivered")
        assert_delivered_once(home, sim, other, "oc_cat")
    wait_state(home, sid, "delivered")
    assert_delivered_once(home, sim, sid)
    assert_clean_replay(home, sid)


def test_recover_shows_a_session_the_worker_holds_as_running_and_resumes_a_timed_out_one(skill, home, sim):
    timed_out = submit(skill, "an epic [sim:never]")
    assert run_waiter(skill, timed_out, env={"LIBTV_MAX_POLLS": "1"}).code == 4
    held = submit(skill, "another epic [sim:never]", target="oc_held")
    worker = start_worker(skill, idle_exit="30")
    wait_for(lambda: events(home, held, "waiter_started"), 10, "the worker to take the session")
    sim.complete_now(timed_out)
    doc = skill("recover", "--json").json()
    waiters = {s["session_id"]: s["waiter"] for s in doc["sessions"]}
    assert waiters == {held: "running", timed_out: "started"}, doc
    wait_state(home, timed_out, "delivered")
    assert [e.event.pid for e in events(home, timed_out, "waiter_started")][-1] == worker.pid
    sim.complete_now(held)
    wait_state(home, held, "delivered")
    worker.send_signal(signal.SIGTERM)
    assert finished(worker) == 0
    assert_delivered_once(home, sim, timed_out, notices=1)  # the "still generating" notice, then the result


def test_recover_makes_the_running_worker_try_again_a_delivery_it_gave_up_on(skill, home, sim):
    sim.inject(MESSAGES, "forbidden")  # refused for good, once
    sid = submit(skill, "a cat")
    worker = start_worker(skill, idle_exit="30")
    wait_for(lambda: "recover` will try again" in worker_log(home), 10, "the worker to give up on the send")
    from libtv_fsm.waiting.homefiles import wake

    wake(str(home))  # a rescan (another submit) leaves it alone: no retry loop
    time.sleep(0.5)
    assert SessionStore(home).load(sid).state == "completed" and len(sim.requests_to(MESSAGES)) == 1
    ran = skill("recover", "--json")
    assert [s["waiter"] for s in ran.json()["sessions"]] == ["started"], ran
    wait_state(home, sid, "delivered", timeout=10)
    assert_delivered_once(home, sim, sid)
    worker.send_signal(signal.SIGTERM)
    assert finished(worker) == 0


# -- create-session through the running worker -----------------------------------------------------


def through_worker(home: Path) -> List[str]:
    return [line for line in worker_log(home).splitlines() if "[worker] create-session" in line and ": exit " in line]


def without_ids(doc: dict) -> dict:
    sid = doc["sessionId"]
    return {k: (v.replace(sid, "SID") if k == "note" else v) for k, v in doc.items()
            if k not in ("sessionId", "projectUuid", "projectUrl")}


def test_create_session_through_the_running_worker_prints_the_same_line_and_keeps_secrets_out_of_logs(skill, home, sim):
    secret = "client-only-bot-token-7f3a"
    direct = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", "oc_cat",
                   env={"LIBTV_WAITER": "process"})
    refused_here = skill("create-session", "a cat", "--channel", "nope", "--chat-id", "oc_cat")
    worker = start_worker(skill, idle_exit="30")
    wait_for(lambda: (home / "libtv-worker.sock").exists(), 10, "the worker's socket")
    assert os.stat(home / "libtv-worker.sock").st_mode & 0o777 == 0o600
    ran = skill("create-session", "a dog", "--channel", "feishu", "--chat-id", "oc_dog",
                env={"TELEGRAM_BOT_TOKEN": secret})
    refused = skill("create-session", "a cat", "--channel", "nope", "--chat-id", "oc_cat")
    assert ran.code == 0 and len(ran.lines) == 1 and ran.err == "", ran
    assert (refused.code, refused.out) == (refused_here.code, refused_here.out), refused
    assert len(through_worker(home)) == 2, worker_log(home)
    assert without_ids(ran.json()) == without_ids(direct.json())
    sid = ran.json()["sessionId"]
    assert SessionStore(home).load(sid).submitted_text == "a dog"
    wait_state(home, sid, "delivered")
    assert_delivered_once(home, sim, sid, "oc_dog")
    worker.send_signal(signal.SIGTERM)
    assert finished(worker) == 0
    assert not (home / "libtv-worker.sock").exists()
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and sim.FEISHU_APP_SECRET.encode() not in data, path


def test_a_lost_answer_after_the_worker_went_ahead_never_submits_the_request_twice(skill, home, sim):
    sim.hang_seconds = 3.0
    sim.inject("/libtv/v1/session", "hang")
    worker = start_worker(skill, idle_exit="30")
    wait_for(lambda: (home / "libtv-worker.sock").exists(), 10, "the worker's socket")
    ran = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_WORKER_ANSWER_TIMEOUT": "0.5"})
    sid = wait_for(lambda: next(iter(SessionStore(home).journal.session_ids()), None), 10, "the worker to journal it")
    wait_state(home, sid, "delivered")
    assert len(sim.sessions) == 1, "the request reached LibTV twice"
    assert ran.code == 1 and ran.last.startswith("❌ ") and "Do not send it again" in ran.last, ran
    assert_delivered_once(home, sim, sid)
    worker.send_signal(signal.SIGTERM)
    assert finished(worker) == 0


def test_a_worker_of_another_version_is_not_used_and_the_next_one_takes_over_once_it_let_go(skill, home, sim, tmp_path):
    import shutil

    import libtv_fsm

    old = tmp_path / "old-skill"
    shutil.copytree(Path(libtv_fsm.__file__).parent, old / "libtv_fsm", ignore=shutil.ignore_patterns("__pycache__"))
    with open(old / "libtv_fsm" / "__init__.py", "a", encoding="utf-8") as fh:
        fh.write("# the skill folder before it was replaced\n")
    busy = submit(skill, "an epic [sim:never]", target="oc_epic")
    former = start_worker(skill, idle_exit="30", env={"PYTHONPATH": str(old)})
    wait_for(lambda: events(home, busy, "waiter_started"), 10, "the old worker to take its session")
    ran = skill("create-session", "a cat", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0 and len(ran.lines) == 1, ran
    sid = ran.json()["sessionId"]
    assert finished(former) == 0  # told to leave: it finished its step and let go
    assert through_worker(home) == [], "the old worker was used for a submission"
    assert "another version of the code asked" in worker_log(home)
    wait_state(home, sid, "delivered")
    newer = worker_pid(home)
    assert newer != former.pid and [e.event.pid for e in events(home, sid, "waiter_started")] == [newer]
    assert events(home, busy, "waiter_started")[-1].event.pid == newer  # the old one's session moved over
    assert len(sim.sessions) == 2
    assert_delivered_once(home, sim, sid)
