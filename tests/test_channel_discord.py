"""The Discord channel: targets, the bot token's lookup, attachments, DMs and the enforced nonce."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from libtv_fsm import errors
from libtv_fsm.channels.base import TooLarge
from libtv_fsm.channels.discord import USER_AGENT, DiscordChannel, nonce_for, parse_target, resolve_credentials

CHANNEL = "123456789012345678"
USER = "223456789012345678"


def openclaw_json(tmp_path: Path, discord: Dict[str, Any]) -> Dict[str, str]:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({"channels": {"discord": discord}}), encoding="utf-8")
    return {"OPENCLAW_CONFIG": str(path), "NEXU_HOME": str(tmp_path / "nexu")}


@pytest.mark.parametrize("given, expected", [
    (f"channel:{CHANNEL}", CHANNEL), (CHANNEL, CHANNEL), (f"user:{USER}", f"user:{USER}"),
    (f"<@{USER}>", f"user:{USER}"), (f"<@!{USER}>", f"user:{USER}"), (f"discord:channel:{CHANNEL}", CHANNEL),
])
def test_openclaw_targets_reduce_to_a_channel_or_a_user(given: str, expected: str) -> None:
    assert parse_target(given) == expected and parse_target(expected) == expected


@pytest.mark.parametrize("junk", ["", "channel:", "general", "#general", "user:abc", "12"])
def test_junk_targets_are_refused(junk: str) -> None:
    with pytest.raises(errors.InputError, match="Invalid Discord target"):
        parse_target(junk)


def test_the_token_comes_from_the_environment_then_openclaw_json(tmp_path: Path) -> None:
    env = openclaw_json(tmp_path, {"accounts": {"main": {"token": {"source": "env", "id": "DC"}}}})
    env["DC"] = "file-token"
    assert resolve_credentials(env).token == "file-token"
    env["DISCORD_BOT_TOKEN"] = "Bot env-token"
    creds = resolve_credentials(env)
    assert creds.token == "env-token" and creds.api_url == "https://discord.com/api/v10" and "env-token" not in repr(creds)
    with pytest.raises(errors.ConfigError, match="DISCORD_BOT_TOKEN"):
        resolve_credentials({"NEXU_HOME": str(tmp_path / "empty")})
    with pytest.raises(errors.ConfigError, match="disabled"):
        resolve_credentials(openclaw_json(tmp_path, {"enabled": False, "token": "t"}))


def test_the_nonce_is_short_stable_and_distinct() -> None:
    assert len(nonce_for("a" * 200)) <= 25
    assert nonce_for("k1") == nonce_for("k1") != nonce_for("k2")


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0\0\0\x18ftypmp42" + b"v" * 3000)
    return path


def test_a_file_is_one_message_with_an_attachment_a_bot_user_agent_and_an_enforced_nonce(sim: Any, clip: Path) -> None:
    channel = DiscordChannel(sim.env())
    first = channel.send_video(CHANNEL, clip, file_name="clip.mp4", dedupe_key="key-1")
    again = channel.send_video(CHANNEL, clip, file_name="clip.mp4", dedupe_key="key-1")  # a resend
    assert first == again
    [message] = sim.discord.chat(CHANNEL)
    assert message["attachments"][0]["filename"] == "clip.mp4" and message["nonce"] == nonce_for("key-1")
    sent = sim.requests_to(f"/discord/api/v10/channels/{CHANNEL}/messages")
    assert sent[0].headers["user-agent"] == USER_AGENT and json.loads(sent[0].form["payload_json"])["enforce_nonce"]


def test_a_user_target_opens_a_dm_and_texts_never_ping_everyone(sim: Any) -> None:
    channel = DiscordChannel(sim.env())
    channel.send_text(f"user:{USER}", "@everyone look " + "x" * 3000, dedupe_key="k")
    [message] = sim.discord.chat(sim.discord.dms[USER])
    assert len(message["content"]) == 2000
    body = sim.requests_to("/discord/api/v10/channels/")[0].json
    assert body["allowed_mentions"] == {"parse": []}


def test_a_429_waits_retry_after_and_a_413_is_too_large(sim: Any, clip: Path) -> None:
    waits: List[float] = []
    channel = DiscordChannel(sim.env(), sleep=waits.append)
    sim.inject(f"/discord/api/v10/channels/{CHANNEL}/messages", "429")
    channel.send_text(CHANNEL, "hi", dedupe_key="k")
    assert waits == [0.5] and len(sim.discord.chat(CHANNEL)) == 1
    sim.discord.upload_limit = 100
    with pytest.raises(TooLarge, match="40005"):
        channel.send_video(CHANNEL, clip, file_name="clip.mp4", dedupe_key="k2")
    with pytest.raises(errors.AuthError) as err:
        DiscordChannel(dict(sim.env(), DISCORD_BOT_TOKEN="wrong-secret")).send_text(CHANNEL, "hi", dedupe_key="k")
    assert "wrong-secret" not in str(err.value)


def test_texts_too_carry_an_enforced_nonce_so_a_resent_notice_or_link_shows_once(sim: Any, tmp_path: Path) -> None:
    """The failure notice and the link sent for a file over the size limit are texts: a resend after a
    crash must be dropped by Discord, as it is for files."""
    from libtv_fsm import transport
    from libtv_fsm.delivery import deliver_result, send_notice

    channel = DiscordChannel(sim.env())
    http = transport.new_session()
    sim.discord.upload_limit = 100  # the clip goes as a link
    url = sim.cdn_put("results/clip.mp4", 3000)
    for _ in range(2):  # the second round is the waiter resending after a crash
        send_notice(channel, CHANNEL, "sess-1", "failed", "Content policy violation")
        outcome = deliver_result(channel, CHANNEL, "sess-1", url, http=http, workdir=tmp_path / "work")
        assert outcome.sent_as == "text"
    texts = [r.json for r in sim.requests_to(f"/discord/api/v10/channels/{CHANNEL}/messages", "POST") if r.json]
    assert len(texts) == 4, texts
    for body in texts:
        assert isinstance(body.get("nonce"), str) and 0 < len(body["nonce"]) <= 25, body
        assert body.get("enforce_nonce") is True, body
    shown = [m["content"] for m in sim.discord.chat(CHANNEL)]
    assert len(shown) == 2, f"a resent text showed twice: {shown}"
    assert "Content policy violation" in shown[0] and url in shown[1]
