"""Every chat channel of CONTRACT section 7 end to end: the real CLI and the real waiter against the simulator.

Telegram, Slack, Discord and WeCom are answered by the loopback simulator; the `openclaw`
delegate by tests/fixtures/openclaw, a fake `openclaw` command that records what it was asked.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from conftest import ENTRY_POINTS, Cli, point_at_sim
from libtv_fsm import SessionStore
from waiting import wait_for

FAKE_OPENCLAW = Path(__file__).resolve().parent / "fixtures" / "openclaw"
TG_CHAT, TG_TOPIC = "-1001234567890", 42
SLACK_CHANNEL = "C0LIBTV01"
DISCORD_CHANNEL = "123456789012345678"
WECOM_USER = "zhangsan"


def _ext_kind(name: str) -> str:
    return "video" if name.lower().endswith((".mp4", ".mov", ".webm")) else "image"


def _openclaw_calls(sim: Any) -> List[Dict[str, Any]]:
    path = Path(sim.openclaw_record)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@dataclass
class Platform:
    """How one channel is addressed, where its sends land, and how to read what the chat received."""

    channel: str
    chat_id: str
    # (kind, text) of every message the chat received, in order; kind is video, image or text
    received: Callable[[Any], List[Tuple[str, str]]]
    send_path: Callable[[Any], Optional[str]]  # where a file message lands (for injected faults)
    dedupes: bool
    shrink: Callable[[Any, Cli], None]  # make the platform refuse the result for its size
    credentials: Tuple[str, ...]  # env vars that hold its credentials
    missing: str  # words of the reason create-session gives without them


def _telegram(sim: Any) -> List[Tuple[str, str]]:
    names = {"video": "video", "photo": "image", "text": "text"}
    return [(names[m["kind"]], m.get("text", "")) for m in sim.telegram.chat(TG_CHAT, TG_TOPIC)]


def _slack(sim: Any) -> List[Tuple[str, str]]:
    return [(_ext_kind(m["files"][0]["name"]) if m["kind"] == "file" else "text", m["text"])
            for m in sim.slack.chat(SLACK_CHANNEL)]


def _discord(sim: Any) -> List[Tuple[str, str]]:
    return [(_ext_kind(m["attachments"][0]["filename"]) if m["attachments"] else "text", m["content"])
            for m in sim.discord.chat(DISCORD_CHANNEL)]


def _wecom(sim: Any) -> List[Tuple[str, str]]:
    return [(m["msgtype"], m["content"].get("content", "")) for m in sim.wecom.chat(WECOM_USER)]


def _openclaw(sim: Any) -> List[Tuple[str, str]]:
    out = []
    for call in _openclaw_calls(sim):
        if not call["sent"]:
            continue
        flags = call["flags"]
        assert flags["channel"] == "whatsapp" and flags["target"] == "+15551234567" and flags.get("json"), call
        if "media" in flags:
            assert call["media_size"], "the media file must exist while openclaw runs"
            out.append((_ext_kind(flags["media"]), call["media_name"]))
        else:
            out.append(("text", flags["message"]))
    return out


def _set(attr: str, value: Any) -> Callable[[Any, Cli], None]:
    def shrink(sim: Any, cli: Cli) -> None:
        platform, field = attr.split(".")
        setattr(getattr(sim, platform), field, value)
    return shrink


def _wecom_shrink(sim: Any, cli: Cli) -> None:
    sim.wecom.limits["video"] = 1024


def _openclaw_shrink(sim: Any, cli: Cli) -> None:
    cli.env["OPENCLAW_FAKE_MAX_MB"] = "0.001"


PLATFORMS = {
    "telegram": Platform("telegram", f"telegram:{TG_CHAT}:topic:{TG_TOPIC}", _telegram,
                         lambda sim: f"/bot{sim.TELEGRAM_BOT_TOKEN}/sendVideo", False,
                         _set("telegram.upload_limit", 1024), ("TELEGRAM_BOT_TOKEN",), "TELEGRAM_BOT_TOKEN"),
    "slack": Platform("slack", f"channel:{SLACK_CHANNEL}", _slack,
                      lambda sim: "/slack/api/files.completeUploadExternal", False,
                      _set("slack.upload_limit", 1024), ("SLACK_BOT_TOKEN",), "SLACK_BOT_TOKEN"),
    "discord": Platform("discord", f"channel:{DISCORD_CHANNEL}", _discord,
                        lambda sim: f"/discord/api/v10/channels/{DISCORD_CHANNEL}/messages", True,
                        _set("discord.upload_limit", 1024), ("DISCORD_BOT_TOKEN",), "DISCORD_BOT_TOKEN"),
    "wecom": Platform("wecom", f"wecom:{WECOM_USER}", _wecom, lambda sim: "/cgi-bin/message/send", True,
                      _wecom_shrink, ("WECOM_CORP_ID", "WECOM_CORP_SECRET", "WECOM_AGENT_ID"), "WECOM_CORP_ID"),
    "openclaw": Platform("openclaw:whatsapp", "+15551234567", _openclaw, lambda sim: None, False,
                         _openclaw_shrink, ("LIBTV_OPENCLAW_BIN",), "openclaw command was not found"),
}
EVERY = pytest.mark.parametrize("name", sorted(PLATFORMS))


@pytest.fixture
def skill(home: Path, sim: Any, tmp_path: Path) -> Cli:
    """The CLI pointed at the simulator (and the fake openclaw), fast polling, a gateway key."""
    sim.openclaw_record = str(tmp_path / "openclaw-calls.jsonl")
    (tmp_path / "openclaw-state").mkdir()
    return point_at_sim(Cli(home), sim, {"LIBTV_WAIT_TIMEOUT_SECONDS": "60", "LIBTV_OPENCLAW_BIN": str(FAKE_OPENCLAW),
                                         "OPENCLAW_FAKE_RECORD": sim.openclaw_record,
                                         "OPENCLAW_STATE_DIR": str(tmp_path / "openclaw-state")},
                        key="mgk_sim_test_key_0001")


def submit(skill: Cli, p: Platform, text: str, background: bool = False, env: Optional[Dict[str, str]] = None) -> str:
    extra = dict(env or {})
    if not background:
        extra["LIBTV_SKIP_BACKGROUND_WAITER"] = "1"
    ran = skill("create-session", text, "--channel", p.channel, "--chat-id", p.chat_id, env=extra)
    assert ran.code == 0 and ran.json()["deliverable"] is True, ran
    return ran.json()["sessionId"]


def history(skill: Cli, sid: str) -> Dict[str, Any]:
    ran = skill("history", sid, "--json")
    assert ran.code == 0, ran
    return ran.json()


@EVERY
def test_a_video_and_an_image_reach_the_chat_natively_through_the_detached_waiter(skill, home, sim, name):
    p = PLATFORMS[name]
    sid = submit(skill, p, "poster and trailer [sim:image+video]", background=True)
    wait_for(lambda: SessionStore(home).replay(sid).state == "delivered", 30, "delivery")
    assert sorted(kind for kind, _ in p.received(sim)) == ["image", "video"]
    assert not history(skill, sid).get("uncertain_urls")


@EVERY
def test_a_result_the_platform_refuses_for_size_arrives_as_one_text_with_its_url(skill, home, sim, name):
    p = PLATFORMS[name]
    p.shrink(sim, skill)
    sid = submit(skill, p, "a cat")
    ran = skill("wait-and-deliver", "--session-id", sid)
    assert ran.code == 0, ran
    url = SessionStore(home).load(sid).result_urls[0]
    received = p.received(sim)
    assert [kind for kind, _ in received] == ["text"] and url in received[0][1]


@EVERY
def test_a_failed_job_sends_one_text_with_the_reason(skill, home, sim, name):
    p = PLATFORMS[name]
    sid = submit(skill, p, "something forbidden [sim:fail]")
    assert skill("wait-and-deliver", "--session-id", sid).code == 3
    assert skill("wait-and-deliver", "--session-id", sid).code == 3
    received = p.received(sim)
    assert len(received) == 1 and received[0][0] == "text" and "Content policy violation" in received[0][1]


@pytest.mark.parametrize("name", [n for n in sorted(PLATFORMS) if n != "openclaw"])
def test_a_rate_limit_is_waited_out_not_failed(skill, home, sim, name):
    p = PLATFORMS[name]
    sim.inject(p.send_path(sim), "429")
    sid = submit(skill, p, "a cat")
    ran = skill("wait-and-deliver", "--session-id", sid)
    assert ran.code == 0, ran
    assert [kind for kind, _ in p.received(sim)] == ["video"]
    assert len(sim.requests_to(p.send_path(sim))) == 2  # the refused send and the one after the wait
    assert not [e for e in history(skill, sid)["events"] if e["type"] == "delivery_failed"]


@EVERY
def test_a_waiter_killed_mid_send_and_restarted_never_shows_a_result_more_than_twice(skill, home, sim, name):
    p = PLATFORMS[name]
    hang: Dict[str, str] = {}
    if p.send_path(sim) is None:
        hang["OPENCLAW_FAKE_HANG"] = "3"
    else:
        sim.hang_seconds = 3.0
        sim.inject(p.send_path(sim), "hang")  # the message lands, its answer is slow
    sid = submit(skill, p, "a cat")
    env = dict(skill.env, **hang)
    waiter = subprocess.Popen(ENTRY_POINTS["module"] + ["wait-and-deliver", "--session-id", sid], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for(lambda: p.received(sim), 30, "the first send to land")
    os.killpg(waiter.pid, signal.SIGKILL)
    waiter.wait(timeout=10)
    url = SessionStore(home).load(sid).result_urls[0]
    assert SessionStore(home).load(sid).uncertain_urls == [url]  # the attempt is in doubt
    again = skill("wait-and-deliver", "--session-id", sid, env={"OPENCLAW_FAKE_HANG": ""})
    assert again.code == 0, again
    doc = history(skill, sid)
    assert doc["state"] == "delivered"
    shown = [kind for kind, _ in p.received(sim)]
    if p.dedupes or name == "slack":
        # Discord's nonce / WeCom's duplicate check drop the resend; Slack's history shows it was sent.
        assert shown == ["video"] and not doc.get("uncertain_urls")
    else:
        # Telegram and the delegate cannot tell: one resend at most, and the result is flagged.
        assert shown == ["video", "video"] and doc["uncertain_urls"] == [url]
    if name == "slack":
        assert [e["sent_as"] for e in doc["events"] if e["type"] == "delivery_succeeded"] == ["reconciled"]


@EVERY
def test_without_credentials_a_submit_stays_deliverable_says_what_is_missing_and_delivers_once_fixed(
        skill, home, sim, name):
    p = PLATFORMS[name]
    env = {var: "" for var in p.credentials}
    if name == "openclaw":
        env["LIBTV_OPENCLAW_BIN"] = str(home / "no-such-openclaw")
    ran = skill("create-session", "a cat", "--channel", p.channel, "--chat-id", p.chat_id,
                env=dict(env, LIBTV_SKIP_BACKGROUND_WAITER="1"))
    assert ran.code == 0, ran
    out = ran.json()
    # CONTRACT 4: a channel and a chat id were captured, so it is deliverable; the note names the problem.
    assert out["deliverable"] is True and out["channel"] == p.channel and p.missing in out["note"], out
    for secret in (sim.TELEGRAM_BOT_TOKEN, sim.SLACK_BOT_TOKEN, sim.DISCORD_BOT_TOKEN, sim.WECOM_CORP_SECRET):
        assert secret not in ran.out
    # The credentials are read again when the result is ready: fixed meanwhile, the result arrives.
    waited = skill("wait-and-deliver", "--session-id", out["sessionId"])
    assert waited.code == 0 and waited.json()["state"] == "delivered", waited
    assert [kind for kind, _ in p.received(sim)] == ["video"]


def test_a_delegated_send_that_never_answers_is_resent_once_and_flagged_not_looped(skill, home, sim):
    p = PLATFORMS["openclaw"]
    sid = submit(skill, p, "a cat")
    # Every call records the send, then outlives the timeout: the outcome is never known.
    ran = skill("wait-and-deliver", "--session-id", sid,
                env={"OPENCLAW_FAKE_HANG": "5", "LIBTV_OPENCLAW_TIMEOUT_SECONDS": "0.5"})
    assert ran.code == 0, ran
    doc = history(skill, sid)
    url = SessionStore(home).load(sid).result_urls[0]
    assert [kind for kind, _ in p.received(sim)] == ["video", "video"]  # one resend, never a third
    assert doc["state"] == "delivered" and doc["uncertain_urls"] == [url]
    assert not [e for e in doc["events"] if e["type"] == "delivery_failed"]


def test_a_timeout_is_told_once_per_turn_however_often_it_is_resumed_on_a_chat_that_shows_repeats(skill, home, sim):
    """Telegram keeps every message it is sent, so only the journal stops a second "still generating":
    resuming (by wait-and-deliver, by recover) must remember the notice this turn already sent.
    A new turn is a new job and gets its own notice."""
    from waiting import waiter_gone

    p = PLATFORMS["telegram"]
    short = {"LIBTV_MAX_POLLS": "2"}
    sid = submit(skill, p, "an epic [sim:never]")

    def timeouts() -> int:
        return [e.type for e in SessionStore(home).load(sid).events].count("timed_out")

    def texts() -> List[str]:
        return [text for kind, text in p.received(sim) if kind == "text"]

    assert skill("wait-and-deliver", "--session-id", sid, env=short).code == 4
    assert len(texts()) == 1 and "Still generating" in texts()[0], p.received(sim)
    assert skill("wait-and-deliver", "--session-id", sid, env=short).code == 4  # resumed, timed out again
    assert len(texts()) == 1, f"the timeout was told again after wait-and-deliver resumed it: {len(texts())} notices"
    ran = skill("recover", "--json", env=short)  # resumed by recover's detached waiter
    assert ran.code == 0 and [s["waiter"] for s in ran.json()["sessions"]] == ["started"], ran
    wait_for(lambda: timeouts() == 3, 30, "recover's waiter to time out too")
    wait_for(lambda: waiter_gone(home, sid), 30, "recover's waiter to exit")
    assert len(texts()) == 1, f"the timeout was told again after recover resumed it: {len(texts())} notices"

    ran = skill("create-session", "an epic, part two [sim:never]", "--session-id", sid,
                env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code == 0, ran
    assert skill("wait-and-deliver", "--session-id", sid, env=short).code == 4
    assert skill("wait-and-deliver", "--session-id", sid, env=short).code == 4
    assert len(texts()) == 2, f"one notice per turn (two turns), got {len(texts())}"
    sim.complete_now(sid)
    assert skill("wait-and-deliver", "--session-id", sid).code == 0
    assert [kind for kind, _ in p.received(sim)] == ["text", "text", "video"]


def test_a_delegated_result_shows_in_the_chat_under_its_own_name(skill, home, sim):
    p = PLATFORMS["openclaw"]
    sid = submit(skill, p, "poster and trailer [sim:image+video]")
    assert skill("wait-and-deliver", "--session-id", sid).code == 0
    names = sorted(url.rsplit("/", 1)[1] for url in SessionStore(home).load(sid).result_urls)
    assert sorted(name for _, name in p.received(sim)) == names
    state = Path(skill.env["OPENCLAW_STATE_DIR"])
    assert list((state / "media").iterdir()) == []  # the copies handed to the gateway are gone


def test_a_stopped_gateway_is_retried_later_not_failed(skill, home, sim):
    p = PLATFORMS["openclaw"]
    sid = submit(skill, p, "a cat")
    down = {"OPENCLAW_FAKE_FAIL": "Gateway not reachable at ws://127.0.0.1:18789 (ECONNREFUSED)"}
    ran = skill("wait-and-deliver", "--session-id", sid, env=down)
    assert ran.code == 1 and p.received(sim) == [], ran
    failed = [e for e in history(skill, sid)["events"] if e["type"] == "delivery_failed"]
    assert failed and all(e["transient"] for e in failed)
    assert not SessionStore(home).load(sid).uncertain_urls  # nothing reached the gateway: nothing in doubt
    again = skill("wait-and-deliver", "--session-id", sid)  # the gateway is back
    assert again.code == 0, again
    assert [kind for kind, _ in p.received(sim)] == ["video"] and not history(skill, sid).get("uncertain_urls")


def test_a_send_the_gateway_gave_up_on_is_resent_once_and_flagged_not_looped(skill, home, sim):
    p = PLATFORMS["openclaw"]
    sid = submit(skill, p, "a cat")
    # The gateway's own 3 tries ended in 429; it keeps the send queued and may still deliver it.
    busy = {"OPENCLAW_FAKE_FAIL": "OutboundDeliveryError: Call to 'sendVideo' failed! (429: Too Many Requests: "
                                  "retry after 30)"}
    ran = skill("wait-and-deliver", "--session-id", sid, env=busy)
    assert ran.code == 0, ran
    url = SessionStore(home).load(sid).result_urls[0]
    doc = history(skill, sid)
    assert len(_openclaw_calls(sim)) == 2  # the send and one resend, never a third
    assert doc["state"] == "delivered" and doc["uncertain_urls"] == [url]
    assert skill("wait-and-deliver", "--session-id", sid).code == 0 and len(_openclaw_calls(sim)) == 2


def test_a_file_the_gateway_may_not_read_arrives_as_its_link(skill, home, sim):
    p = PLATFORMS["openclaw"]
    sid = submit(skill, p, "a cat")
    elsewhere = {"OPENCLAW_FAKE_MEDIA_ROOT": str(home / "the-gateways-own-state" / "media")}
    assert skill("wait-and-deliver", "--session-id", sid, env=elsewhere).code == 0
    url = SessionStore(home).load(sid).result_urls[0]
    calls = _openclaw_calls(sim)
    assert [c["flags"].get("media") is not None for c in calls] == [True, False]
    assert url in calls[1]["flags"]["message"] and "could not read" in calls[1]["flags"]["message"]
