"""The WeCom channel: targets, the app's credentials, the token, media, and the duplicate check."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from libtv_fsm import errors
from libtv_fsm.channels.base import TooLarge
from libtv_fsm.channels.wecom import DUPLICATE_CHECK_SECONDS, MediaKeep, WecomChannel, parse_target, resolve_credentials


def openclaw_json(tmp_path: Path, wecom: Dict[str, Any]) -> Dict[str, str]:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({"channels": {"wecom": wecom}}), encoding="utf-8")
    return {"OPENCLAW_CONFIG": str(path), "NEXU_HOME": str(tmp_path / "nexu")}


@pytest.mark.parametrize("given, expected", [("wecom:zhangsan", "zhangsan"), ("zhangsan", "zhangsan"),
                                             ("wecom:user:Li.Si-2", "Li.Si-2")])
def test_openclaw_targets_reduce_to_the_member_userid(given: str, expected: str) -> None:
    assert parse_target(given) == expected and parse_target(expected) == expected


@pytest.mark.parametrize("junk", ["", "wecom:", "@all", "wecom:@all", "a|b", "a b", "x" * 65])
def test_junk_and_broadcast_targets_are_refused(junk: str) -> None:
    with pytest.raises(errors.InputError, match="Invalid WeCom target"):
        parse_target(junk)


def test_credentials_come_from_the_environment_all_three_or_from_the_agent_section(tmp_path: Path) -> None:
    env = {"WECOM_CORP_ID": "ww1", "WECOM_CORP_SECRET": "s3cret", "WECOM_AGENT_ID": "1000002"}
    creds = resolve_credentials(env)
    assert (creds.corp_id, creds.agent_id, creds.base_url) == ("ww1", 1000002, "https://qyapi.weixin.qq.com/cgi-bin")
    assert "s3cret" not in repr(creds)
    with pytest.raises(errors.ConfigError, match="set together"):
        resolve_credentials({"WECOM_CORP_ID": "ww1"})
    agent = {"corpId": "ww2", "corpSecret": {"source": "env", "id": "WS"}, "agentId": 7}
    env = openclaw_json(tmp_path, {"accounts": {"bot-only": {"botId": "x"}, "app": {"agent": agent}}})
    env["WS"] = "from-ref"
    creds = resolve_credentials(env)
    assert (creds.corp_id, creds.corp_secret, creds.agent_id) == ("ww2", "from-ref", 7)
    with pytest.raises(errors.ConfigError, match="WECOM_CORP_ID.*only the app mode"):
        resolve_credentials(openclaw_json(tmp_path, {"botId": "bot-mode-only"}))
    with pytest.raises(errors.ConfigError, match="agentId must be a number"):
        resolve_credentials(dict(env, WECOM_CORP_ID="a", WECOM_CORP_SECRET="b", WECOM_AGENT_ID="x"))


@pytest.fixture
def channel(sim: Any, tmp_path: Path) -> WecomChannel:
    return WecomChannel(dict(sim.env(), NEXU_HOME=str(tmp_path / "nexu")), sleep=lambda s: None)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0\0\0\x18ftypmp42" + b"v" * 3000)
    return path


def test_a_video_is_uploaded_once_and_a_resend_is_the_identical_message_the_server_drops(
        sim: Any, channel: WecomChannel, clip: Path) -> None:
    first = channel.send_video("wecom:zhangsan", clip, file_name="clip.mp4", dedupe_key="key-1")
    # A new waiter process after a crash: a fresh channel, the same kept media_id.
    fresh = WecomChannel(channel.env, sleep=lambda s: None)
    assert fresh.send_video("zhangsan", clip, file_name="clip.mp4", dedupe_key="key-1") == first
    assert [m["msgtype"] for m in sim.wecom.chat("zhangsan")] == ["video"] and len(sim.wecom.uploads) == 1
    body = sim.requests_to("/cgi-bin/message/send")[0].json
    assert body["enable_duplicate_check"] == 1 and body["duplicate_check_interval"] == DUPLICATE_CHECK_SECONDS
    assert body["agentid"] == sim.WECOM_AGENT_ID and body["touser"] == "zhangsan"


def test_the_token_is_reused_and_fetched_again_once_when_revoked(sim: Any, channel: WecomChannel) -> None:
    channel.send_text("zhangsan", "one", dedupe_key="a")
    channel.send_text("zhangsan", "two", dedupe_key="b")
    assert sim.wecom.tokens_issued == 1
    sim.wecom.revoke_tokens()
    channel.send_text("zhangsan", "three", dedupe_key="c")
    assert sim.wecom.tokens_issued == 2 and len(sim.wecom.chat("zhangsan")) == 3


def test_other_formats_go_as_files_and_sizes_over_the_limit_are_too_large(sim: Any, channel: WecomChannel,
                                                                         tmp_path: Path) -> None:
    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a" + b"g" * 500)
    channel.send_image("zhangsan", gif, dedupe_key="g")
    assert sim.wecom.chat("zhangsan")[0]["msgtype"] == "file"
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"p" * (2 * 1024 * 1024))
    with pytest.raises(TooLarge):
        channel.send_image("zhangsan", big, dedupe_key="b")
    sim.wecom.limits["image"] = 100
    small = tmp_path / "small.png"
    small.write_bytes(b"\x89PNG" + b"p" * 500)
    with pytest.raises(TooLarge, match="40006"):
        channel.send_image("zhangsan", small, dedupe_key="s")


def test_busy_answers_are_waited_out_a_few_times_then_left_to_the_waiter(sim: Any, tmp_path: Path) -> None:
    waits: List[float] = []
    channel = WecomChannel(dict(sim.env(), NEXU_HOME=str(tmp_path)), sleep=waits.append)
    sim.inject("/cgi-bin/message/send", "429")
    channel.send_text("zhangsan", "hi", dedupe_key="k")
    assert len(waits) == 1 and len(sim.wecom.chat("zhangsan")) == 1
    sim.inject("/cgi-bin/message/send", "429", "429", "429", "429")
    with pytest.raises(errors.UnavailableError):
        channel.send_text("zhangsan", "again", dedupe_key="k2")
    assert len(waits) == 4


def test_refusals_are_clear_and_never_carry_the_secret(sim: Any, channel: WecomChannel, tmp_path: Path) -> None:
    sim.wecom.invalid_users.add("ghost")
    with pytest.raises(errors.PermanentError, match="81013"):
        channel.send_text("ghost", "hi", dedupe_key="k")
    bad = WecomChannel(dict(sim.env(), WECOM_CORP_SECRET="wrong-secret", NEXU_HOME=str(tmp_path)))
    with pytest.raises(errors.AuthError) as err:
        bad.send_text("zhangsan", "hi", dedupe_key="k")
    assert "wrong-secret" not in str(err.value) and "40001" in str(err.value)


def test_a_kept_media_id_is_used_only_inside_the_duplicate_window(tmp_path: Path) -> None:
    now = [1000.0]
    keep = MediaKeep(tmp_path, clock=lambda: now[0])
    keep.put("k", "video", "m1")
    assert keep.get("k", "video") == "m1" and keep.get("k", "image") is None and keep.get("other", "video") is None
    now[0] += DUPLICATE_CHECK_SECONDS + 1
    assert keep.get("k", "video") is None
