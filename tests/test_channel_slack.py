"""The Slack channel: targets, the bot token's lookup, the external upload flow and reconciling from history."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from libtv_fsm import errors
from libtv_fsm.channels.slack import SlackChannel, marker, parse_target, resolve_credentials

TOKEN = "xoxb-1111-2222-abcdefabcdef"


def openclaw_json(tmp_path: Path, slack: Dict[str, Any]) -> Dict[str, str]:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({"channels": {"slack": slack}}), encoding="utf-8")
    return {"OPENCLAW_CONFIG": str(path), "NEXU_HOME": str(tmp_path / "nexu")}


@pytest.mark.parametrize("given, expected", [
    ("channel:C0123ABC", "C0123ABC"), ("C0123ABC", "C0123ABC"), ("G0PRIVATE1", "G0PRIVATE1"),
    ("D0DIRECT01", "D0DIRECT01"), ("user:U0ALICE1", "user:U0ALICE1"), ("U0ALICE1", "user:U0ALICE1"),
    ("slack:channel:C0123ABC", "C0123ABC"), ("<@U0ALICE1>", "user:U0ALICE1"),
])
def test_openclaw_targets_reduce_to_a_conversation_or_a_user(given: str, expected: str) -> None:
    assert parse_target(given) == expected
    assert parse_target(expected) == expected  # idempotent


@pytest.mark.parametrize("junk", ["", "#general", "channel:U0ALICE1", "user:C0123ABC", "c0123abc", "channel:"])
def test_junk_targets_are_refused(junk: str) -> None:
    with pytest.raises(errors.InputError, match="Invalid Slack target"):
        parse_target(junk)


def test_the_bot_token_comes_from_the_environment_then_openclaw_json(tmp_path: Path) -> None:
    env = openclaw_json(tmp_path, {"botToken": {"source": "env", "id": "SLACK_FROM_REF"}})
    env["SLACK_FROM_REF"] = TOKEN
    assert resolve_credentials(env).token == TOKEN
    env["SLACK_BOT_TOKEN"] = "xoxb-env-token"
    creds = resolve_credentials(env)
    assert creds.token == "xoxb-env-token" and creds.source == "environment" and creds.api_url == "https://slack.com/api"
    accounts = {"a": {"botToken": "xoxb-a"}, "b": {"botToken": TOKEN}}
    env = openclaw_json(tmp_path, {"defaultAccount": "b", "accounts": accounts})
    assert resolve_credentials(env).token == TOKEN


def test_missing_and_wrong_kinds_of_token_are_clear_config_errors(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="SLACK_BOT_TOKEN"):
        resolve_credentials({"NEXU_HOME": str(tmp_path)})
    with pytest.raises(errors.ConfigError, match="not a bot token"):
        resolve_credentials({"SLACK_BOT_TOKEN": "xapp-1-A0-secret"})
    with pytest.raises(errors.ConfigError, match="source 'file'"):
        resolve_credentials(openclaw_json(tmp_path, {"botToken": {"source": "file", "id": "/run/slack"}}))


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0\0\0\x18ftypmp42" + b"v" * 3000)
    return path


def test_a_file_goes_up_by_the_external_flow_and_never_by_files_upload(sim: Any, clip: Path) -> None:
    channel = SlackChannel(sim.env())
    file_id = channel.send_video("channel:C0LIBTV01", clip, file_name="clip.mp4", dedupe_key="key-1")
    [message] = sim.slack.chat("C0LIBTV01")
    assert message["files"][0]["id"] == file_id and message["files"][0]["size"] == clip.stat().st_size
    assert marker("key-1") in message["files"][0]["title"]
    assert sim.requests_to("/slack/api/files.upload") == []
    upload = sim.requests_to("/slack/upload/")
    assert len(upload) == 1 and "authorization" not in upload[0].headers  # the pre-signed URL gets no token


def test_a_user_target_opens_the_dm_first(sim: Any, clip: Path) -> None:
    channel = SlackChannel(sim.env())
    channel.send_text("user:U0ALICE1", "hello", dedupe_key="k")
    channel.send_image("user:U0ALICE1", clip.rename(clip.with_suffix(".png")), dedupe_key="k2")
    dm = sim.slack.dm_of("U0ALICE1")
    assert [m["kind"] for m in sim.slack.chat(dm)] == ["text", "file"]
    assert len(sim.requests_to("/slack/api/conversations.open")) == 1  # opened once, then remembered


def test_history_tells_whether_a_file_or_a_text_was_already_posted(sim: Any, clip: Path) -> None:
    channel = SlackChannel(sim.env())
    file_id = channel.send_video("C0LIBTV01", clip, file_name="clip.mp4", dedupe_key="video-key")
    ts = channel.send_text("C0LIBTV01", "the link", dedupe_key="text-key")
    for i in range(150):  # later chatter pushes the file to the second history page
        sim.slack.messages.append({"channel": "C0LIBTV01", "kind": "text", "ts": f"9.{i}", "text": "chat", "files": []})
    assert channel.find_sent("C0LIBTV01", "video-key") == file_id
    assert channel.find_sent("C0LIBTV01", "text-key") == ts
    assert channel.find_sent("C0LIBTV01", "never-sent") is None


def test_without_the_history_scope_find_sent_says_it_cannot_tell(sim: Any, clip: Path) -> None:
    channel = SlackChannel(sim.env())
    channel.send_video("C0LIBTV01", clip, file_name="clip.mp4", dedupe_key="k")
    sim.slack.history_denied = True
    assert channel.find_sent("C0LIBTV01", "k") is None


def test_a_429_is_waited_out_with_retry_after_and_errors_name_the_slack_error(sim: Any, clip: Path) -> None:
    waits: List[float] = []
    channel = SlackChannel(sim.env(), sleep=waits.append)
    sim.inject("/slack/api/files.completeUploadExternal", "429")
    channel.send_video("C0LIBTV01", clip, file_name="clip.mp4", dedupe_key="k")
    assert waits == [1.0] and len(sim.slack.chat("C0LIBTV01")) == 1
    sim.slack.not_in_channel.add("C0LIBTV02")
    with pytest.raises(errors.PermanentError, match="not_in_channel"):
        channel.send_text("C0LIBTV02", "hi", dedupe_key="k")
    with pytest.raises(errors.AuthError) as err:
        SlackChannel(dict(sim.env(), SLACK_BOT_TOKEN="xoxb-wrong-token")).send_text("C0LIBTV01", "hi", dedupe_key="k")
    assert "xoxb-wrong-token" not in str(err.value)
