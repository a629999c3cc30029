"""The `openclaw` delegate: `--channel openclaw:<name>` runs `openclaw message send` and reads its answer."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

from libtv_fsm import errors
from libtv_fsm.channels import get_channel
from libtv_fsm.channels.base import TooLarge
from libtv_fsm.channels.openclaw import OpenClawChannel, last_json

FAKE = Path(__file__).resolve().parent / "fixtures" / "openclaw"


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    return {"LIBTV_OPENCLAW_BIN": str(FAKE), "FAKE_OPENCLAW_RECORD": str(tmp_path / "calls.jsonl"),
            "PATH": "/usr/bin:/bin"}


def calls(env: Dict[str, str]) -> List[Dict[str, Any]]:
    path = Path(env["FAKE_OPENCLAW_RECORD"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_sub_channel_is_required_and_must_be_a_plain_name(env: Dict[str, str]) -> None:
    with pytest.raises(errors.InputError, match="openclaw:<name>"):
        get_channel("openclaw", env)
    with pytest.raises(errors.InputError, match="Invalid OpenClaw channel name"):
        get_channel("openclaw:what sapp", env)
    channel = get_channel("OpenClaw:WhatsApp", env)
    assert isinstance(channel, OpenClawChannel) and channel.variant == "whatsapp" and channel.dedupes is False


def test_targets_pass_through_as_openclaw_wrote_them(env: Dict[str, str]) -> None:
    channel = get_channel("openclaw:discord", env)
    assert channel.normalize_target(" channel:123 ") == "channel:123"
    assert channel.normalize_target("openclaw:+15551234567") == "+15551234567"
    for junk in ("", "a\nb", "x" * 300):
        with pytest.raises(errors.InputError):
            channel.normalize_target(junk)


def test_without_the_command_the_channel_is_not_ready(env: Dict[str, str], tmp_path: Path) -> None:
    get_channel("openclaw:whatsapp", env).check_ready()
    missing = dict(env, LIBTV_OPENCLAW_BIN=str(tmp_path / "nope"))
    with pytest.raises(errors.ConfigError, match="openclaw command was not found"):
        get_channel("openclaw:whatsapp", missing).check_ready()


def test_media_and_text_become_the_documented_command_lines(env: Dict[str, str], tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"v" * 100)
    channel = get_channel("openclaw:whatsapp", env)
    assert channel.send_video("+15551234567", clip, file_name="clip.mp4", dedupe_key="k").startswith("fake-")
    channel.send_text("-100123", "--looks like a flag", dedupe_key="k")
    media, text = calls(env)
    assert media["argv"] == ["message", "send", "--channel", "whatsapp", "--target", "+15551234567",
                             "--media", str(clip), "--json"]
    assert media["media_size"] == 100  # the file is still there while openclaw reads it
    assert text["argv"] == ["message", "send", "--channel", "whatsapp", "--target", "-100123",
                            "--message", "--looks like a flag", "--json"]


def test_a_refusal_is_a_failed_send_with_openclaws_words(env: Dict[str, str], tmp_path: Path) -> None:
    channel = get_channel("openclaw:whatsapp", dict(env, FAKE_OPENCLAW_FAIL="WhatsApp is not linked"))
    with pytest.raises(errors.PermanentError, match="WhatsApp is not linked"):
        channel.send_text("+1555", "hi", dedupe_key="k")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"v" * 5000)
    small = get_channel("openclaw:whatsapp", dict(env, FAKE_OPENCLAW_MAX_MB="0.001"))
    with pytest.raises(TooLarge, match="exceeds"):
        small.send_video("+1555", clip, file_name="clip.mp4", dedupe_key="k")


def test_the_answer_is_found_after_log_lines() -> None:
    assert last_json('[openclaw] hi\n{"ok": true, "messageId": "m1"}\n') == {"ok": True, "messageId": "m1"}
    assert last_json('{\n  "ok": false,\n  "error": "x"\n}') == {"ok": False, "error": "x"}
    assert last_json("no json here") is None
