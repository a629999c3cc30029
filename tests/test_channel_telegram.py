"""The Telegram channel: targets, the bot token's lookup, and what it sends (in process, against the simulator)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
import requests

from libtv_fsm import errors
from libtv_fsm.channels import get_channel
from libtv_fsm.channels.base import RATE_LIMIT_WAITS, SendInDoubt, TooLarge, request_error
from libtv_fsm.channels.telegram import TelegramChannel, parse_target, resolve_credentials

TOKEN = "123456789:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQ"


def openclaw_json(tmp_path: Path, telegram: Dict[str, Any]) -> Dict[str, str]:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({"channels": {"telegram": telegram}}), encoding="utf-8")
    return {"OPENCLAW_CONFIG": str(path), "NEXU_HOME": str(tmp_path / "nexu")}


@pytest.mark.parametrize("given, chat, topic", [
    ("telegram:123456789", "123456789", None),
    ("123456789", "123456789", None),
    ("-1001234567890", "-1001234567890", None),
    ("telegram:-1001234567890:topic:42", "-1001234567890", 42),
    ("  -1001234567890:topic:7 ", "-1001234567890", 7),
    ("telegram:group:-100123", "-100123", None),
    ("@libtv_news", "@libtv_news", None),
])
def test_openclaw_targets_reduce_to_the_chat_and_its_topic(given: str, chat: str, topic: Any) -> None:
    assert parse_target(given) == (chat, topic)
    channel = TelegramChannel({})
    normalized = channel.normalize_target(given)
    assert channel.normalize_target(normalized) == normalized  # idempotent: the waiter normalizes again
    assert not normalized.startswith("telegram:")  # OpenClaw's prefix never reaches Telegram


@pytest.mark.parametrize("junk", ["", "telegram:", "abc", "123:topic:", "123:topic:x", "12 34", "@ab", "slack:C1"])
def test_junk_targets_are_refused_with_the_expected_forms(junk: str) -> None:
    with pytest.raises(errors.InputError, match="Invalid Telegram chat id"):
        parse_target(junk)


def test_the_token_comes_from_the_environment_first(tmp_path: Path) -> None:
    env = openclaw_json(tmp_path, {"botToken": "999:fromfilefromfilefromfilefromfile"})
    env["TELEGRAM_BOT_TOKEN"] = TOKEN
    creds = resolve_credentials(env)
    assert creds.token == TOKEN and creds.source == "environment" and creds.api_root == "https://api.telegram.org"
    assert TOKEN not in repr(creds)


def test_the_token_comes_from_openclaw_json_a_secret_ref_or_a_token_file(tmp_path: Path) -> None:
    env = openclaw_json(tmp_path, {"botToken": {"source": "env", "provider": "default", "id": "MY_TG"}})
    env["MY_TG"] = TOKEN
    assert resolve_credentials(env).token == TOKEN
    token_file = tmp_path / "tg.token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    env = openclaw_json(tmp_path, {"tokenFile": str(token_file), "apiRoot": "http://127.0.0.1:8081/"})
    creds = resolve_credentials(env)
    assert creds.token == TOKEN and creds.api_root == "http://127.0.0.1:8081"


def test_accounts_and_default_account_pick_the_bot(tmp_path: Path) -> None:
    other = "555:otherotherotherotherotherother"
    env = openclaw_json(tmp_path, {"accounts": {"off": {"enabled": False, "botToken": other},
                                                "main": {"botToken": TOKEN}}})
    assert resolve_credentials(env).token == TOKEN
    env = openclaw_json(tmp_path, {"defaultAccount": "work", "botToken": other,
                                   "accounts": {"work": {"botToken": TOKEN}}})
    creds = resolve_credentials(env)
    assert creds.token == TOKEN and "account 'work'" in creds.source


def test_a_missing_or_unreadable_token_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="TELEGRAM_BOT_TOKEN"):
        resolve_credentials({"NEXU_HOME": str(tmp_path)})
    with pytest.raises(errors.ConfigError, match="source 'vault'"):
        resolve_credentials(openclaw_json(tmp_path, {"botToken": {"source": "vault", "id": "tg"}}))
    with pytest.raises(errors.ConfigError, match="tokenFile .* cannot be read"):
        resolve_credentials(openclaw_json(tmp_path, {"tokenFile": str(tmp_path / "missing")}))
    with pytest.raises(errors.ConfigError, match="does not look like"):
        resolve_credentials({"TELEGRAM_BOT_TOKEN": "not/a/token"})
    with pytest.raises(errors.ConfigError, match="TELEGRAM_BOT_TOKEN"):
        get_channel("telegram", {"NEXU_HOME": str(tmp_path)}).check_ready()


@pytest.fixture
def file(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0\0\0\x18ftypmp42" + b"v" * 4000)
    return path


def channel_for(sim: Any, waits: List[float]) -> TelegramChannel:
    return TelegramChannel(sim.env(), sleep=waits.append)


def test_a_topic_target_posts_into_the_topic_and_a_video_goes_as_a_video(sim: Any, file: Path) -> None:
    channel = channel_for(sim, [])
    target = channel.normalize_target("telegram:-1001234567890:topic:42")
    assert channel.send_video(target, file, file_name="clip.mp4", dedupe_key="k") == "-1001234567890/1"
    assert channel.send_text(target, "x" * 5000, dedupe_key="k") == "-1001234567890/2"
    got = sim.telegram.chat("-1001234567890", 42)
    assert [m["kind"] for m in got] == ["video", "text"] and len(got[1]["text"]) == 4096


def test_a_429_is_waited_out_as_told_and_only_a_few_times(sim: Any, file: Path) -> None:
    waits: List[float] = []
    channel = channel_for(sim, waits)
    sim.telegram.retry_after = 7
    path = f"/bot{sim.TELEGRAM_BOT_TOKEN}/sendMessage"
    sim.inject(path, "429")
    channel.send_text("42", "hi", dedupe_key="k")
    assert waits == [7.0] and len(sim.telegram.chat("42")) == 1
    sim.inject(path, *["429"] * (RATE_LIMIT_WAITS + 1))
    with pytest.raises(errors.UnavailableError, match="still rate limited"):
        channel.send_text("42", "hi", dedupe_key="k2")
    assert len(waits) == 1 + RATE_LIMIT_WAITS and len(sim.telegram.chat("42")) == 1


def test_a_group_that_became_a_supergroup_gets_the_message_at_its_new_id(sim: Any) -> None:
    sim.telegram.migrated["-4001"] = "-1004001"
    channel_for(sim, []).send_text("-4001", "hi", dedupe_key="k")
    assert len(sim.telegram.chat("-1004001")) == 1 and sim.telegram.chat("-4001") == []


def test_refusals_map_to_too_large_auth_and_permanent_errors_without_the_token(sim: Any, file: Path) -> None:
    channel = channel_for(sim, [])
    sim.telegram.upload_limit = 100
    with pytest.raises(TooLarge):
        channel.send_video("42", file, file_name="clip.mp4", dedupe_key="k")
    sim.telegram.unreachable.add("777")
    with pytest.raises(errors.PermanentError, match="chat not found") as err:
        channel.send_text("777", "hi", dedupe_key="k")
    assert sim.TELEGRAM_BOT_TOKEN not in str(err.value)
    bad = TelegramChannel(dict(sim.env(), TELEGRAM_BOT_TOKEN="1:" + "z" * 30))
    with pytest.raises(errors.AuthError) as auth:
        bad.send_text("42", "hi", dedupe_key="k")
    assert "z" * 30 not in str(auth.value)


def test_a_lost_answer_to_a_send_is_in_doubt_and_never_quotes_the_url() -> None:
    url = f"https://api.telegram.org/bot{TOKEN}/sendVideo"
    doubt = request_error(requests.ReadTimeout(f"read timed out: {url}"), "Telegram", "sendVideo", url, True)
    assert isinstance(doubt, SendInDoubt) and TOKEN not in str(doubt) and "api.telegram.org" in str(doubt)
    refused = request_error(requests.ConnectTimeout(url), "Telegram", "sendVideo", url, True)
    assert not isinstance(refused, SendInDoubt) and TOKEN not in str(refused)
