"""The `openclaw` delegate: `--channel openclaw:<name>` runs `openclaw message send` and reads its answer."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from libtv_fsm import errors
from libtv_fsm.channels import get_channel
from libtv_fsm.channels.base import FileRefused, SendInDoubt, TooLarge
from libtv_fsm.channels.openclaw import OpenClawChannel, last_json, media_root, state_dir

FAKE = Path(__file__).resolve().parent / "fixtures" / "openclaw"


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    (tmp_path / "state").mkdir()
    return {"LIBTV_OPENCLAW_BIN": str(FAKE), "OPENCLAW_FAKE_RECORD": str(tmp_path / "calls.jsonl"),
            "OPENCLAW_STATE_DIR": str(tmp_path / "state"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


def calls(env: Dict[str, str]) -> List[Dict[str, Any]]:
    path = Path(env["OPENCLAW_FAKE_RECORD"])
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
    clip = tmp_path / "downloaded.mp4"
    clip.write_bytes(b"v" * 100)
    channel = get_channel("openclaw:whatsapp", env)
    assert channel.send_video("+15551234567", clip, file_name="final-cut.mp4", dedupe_key="k").isdigit()
    channel.send_text("-100123", "--looks like a flag", dedupe_key="k")
    media, text = calls(env)
    assert media["argv"][:6] == ["message", "send", "--channel", "whatsapp", "--target", "+15551234567"]
    assert media["argv"][6] == "--media" and media["argv"][8:] == ["--json"]
    assert text["argv"] == ["message", "send", "--channel", "whatsapp", "--target", "-100123",
                            "--message", "--looks like a flag", "--json"]


def test_the_gateway_gets_a_copy_it_may_read_under_the_results_name_removed_once_settled(
        env: Dict[str, str], tmp_path: Path) -> None:
    clip = tmp_path / "downloaded.mp4"
    clip.write_bytes(b"v" * 100)
    channel = get_channel("openclaw:telegram", env)
    channel.send_video("424242", clip, file_name="final-cut.mp4", dedupe_key="k")
    with pytest.raises(errors.PermanentError):
        get_channel("openclaw:telegram", dict(env, OPENCLAW_FAKE_FAIL="Error: Unknown channel")).send_image(
            "424242", clip, dedupe_key="k")
    sent, failed = calls(env)
    media = Path(sent["flags"]["media"])
    # Inside the gateway's media root, under the result's own name, while openclaw runs...
    assert media.parent.parent == tmp_path / "state" / "media" and sent["media_name"] == "final-cut.mp4"
    assert sent["media_size"] == 100 and failed["media_name"] == "downloaded.mp4"
    # ...and gone once the send is settled, whichever way it went; the download itself is left alone.
    assert list((tmp_path / "state" / "media").iterdir()) == [] and clip.exists()


def test_openclaw_runs_without_other_channels_credentials(env: Dict[str, str], tmp_path: Path) -> None:
    clip = tmp_path / "clip.png"
    clip.write_bytes(b"p" * 10)
    secrets = {"FEISHU_APP_ID": "cli_x", "FEISHU_APP_SECRET": "s1", "TELEGRAM_BOT_TOKEN": "1:x", "SLACK_BOT_TOKEN": "xoxb",
               "DISCORD_BOT_TOKEN": "d", "WECOM_CORP_SECRET": "w", "LIBTV_ACCESS_KEY": "k", "AWS_SECRET_ACCESS_KEY": "a"}
    wanted = {"OPENCLAW_GATEWAY_TOKEN": "gw", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC"}
    get_channel("openclaw:telegram", dict(env, **secrets, **wanted)).send_image("424242", clip, dedupe_key="k")
    [call] = calls(env)
    names = set(call["env"])
    assert not names & set(secrets), names & set(secrets)
    assert set(wanted) | {"PATH", "HOME", "OPENCLAW_STATE_DIR"} <= names


@pytest.mark.parametrize("message, kind, expected, in_doubt", [
    # Nothing reached the gateway: retry later, nothing is in doubt.
    ("Gateway not reachable at ws://127.0.0.1:18789 (ECONNREFUSED)", "video", errors.UnavailableError, False),
    # The gateway tried 3 times and keeps the send queued: it may still arrive.
    ("OutboundDeliveryError: Call to 'sendVideo' failed! (429: Too Many Requests: retry after 5)", "video",
     SendInDoubt, True),
    ("OutboundDeliveryError: Call to 'sendMessage' failed! (502: Bad Gateway)", "text", SendInDoubt, True),
    # The gateway could not reach the platform: the send is still in its queue, not "nothing sent".
    ("OutboundDeliveryError: request to https://api.telegram.org failed, reason: connect ECONNREFUSED 127.0.0.1:9",
     "text", SendInDoubt, True),
    ("OutboundDeliveryError: getaddrinfo ENOTFOUND api.telegram.org", "video", SendInDoubt, True),
    # The platform refused the message itself: sending it again changes nothing.
    ("OutboundDeliveryError: Telegram recipient 424242 could not be resolved", "text", errors.PermanentError, False),
    ("Error: Unknown channel: whatsap", "text", errors.PermanentError, False),
    # The gateway will not take the file: the link goes as text instead.
    ("LocalMediaAccessError: Local media path is not under an allowed directory: /x/a.mp4", "video", FileRefused,
     False),
    ("FsSafeError: file exceeds limit of 25165824 bytes (got 30000000)", "video", TooLarge, False),
    ("Error: Media exceeds 1MB limit (got 2MB)", "video", TooLarge, False),  # a channel's mediaMaxMb
])
def test_a_failed_send_is_read_by_what_openclaw_says(env: Dict[str, str], tmp_path: Path, message: str, kind: str,
                                                     expected: type, in_doubt: bool) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"v" * 10)
    channel = get_channel("openclaw:telegram", dict(env, OPENCLAW_FAKE_FAIL=message))
    with pytest.raises(expected) as caught:
        if kind == "text":
            channel.send_text("424242", "hi", dedupe_key="k")
        else:
            channel.send_video("424242", clip, file_name="clip.mp4", dedupe_key="k")
    assert isinstance(caught.value, SendInDoubt) is in_doubt
    assert isinstance(caught.value, errors.TransientError) is (expected in (errors.UnavailableError, SendInDoubt))
    assert message[-30:] in str(caught.value)


def test_a_refusal_is_a_failed_send_with_openclaws_words(env: Dict[str, str], tmp_path: Path) -> None:
    channel = get_channel("openclaw:whatsapp", dict(env, OPENCLAW_FAKE_FAIL="Error: WhatsApp is not linked"))
    with pytest.raises(errors.PermanentError, match="WhatsApp is not linked"):
        channel.send_text("+1555", "hi", dedupe_key="k")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"v" * 5000)
    small = get_channel("openclaw:whatsapp", dict(env, OPENCLAW_FAKE_MAX_MB="0.001"))
    with pytest.raises(TooLarge, match="exceeds"):
        small.send_video("+1555", clip, file_name="clip.mp4", dedupe_key="k")


def test_an_answer_that_says_not_ok_is_a_failure_even_with_exit_0(env: Dict[str, str], tmp_path: Path) -> None:
    liar = tmp_path / "openclaw"
    liar.write_text("#!/bin/sh\necho '{\"payload\": {\"ok\": false, \"error\": \"Error: no route\"}}'\n")
    liar.chmod(0o755)
    with pytest.raises(errors.PermanentError, match="no route"):
        get_channel("openclaw:whatsapp", dict(env, LIBTV_OPENCLAW_BIN=str(liar))).send_text("+1", "hi", dedupe_key="k")


def test_the_state_dir_and_media_root_are_found_as_openclaw_finds_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert state_dir({"HOME": str(home)}) == home / ".openclaw"
    assert state_dir({"HOME": str(home), "OPENCLAW_STATE_DIR": "~/oc"}) == home / "oc"
    assert state_dir({"HOME": str(home), "OPENCLAW_HOME": str(tmp_path / "oh")}) == tmp_path / "oh" / ".openclaw"
    (home / ".clawdbot").mkdir(parents=True)
    assert state_dir({"HOME": str(home)}) == home / ".clawdbot"  # only the legacy one exists
    (home / ".openclaw").mkdir()
    assert state_dir({"HOME": str(home)}) == home / ".openclaw"
    assert media_root({"HOME": str(home)}) == home / ".openclaw" / "media"
    # No state dir at all: OpenClaw's temp root, which every gateway reads.
    nowhere = {"HOME": str(tmp_path / "nobody")}
    assert media_root(nowhere) in (Path("/tmp/openclaw"), Path(os.environ.get("TMPDIR", "/tmp")) / f"openclaw-{os.getuid()}")


def test_the_answer_is_found_after_log_lines() -> None:
    assert last_json('[openclaw] hi\n{"ok": true, "messageId": "m1"}\n') == {"ok": True, "messageId": "m1"}
    assert last_json('{\n  "ok": false,\n  "error": "x"\n}') == {"ok": False, "error": "x"}
    pretty = json.dumps({"action": "send", "payload": {"ok": True, "messageId": "1", "list": [{"a": 1}]}}, indent=2)
    assert last_json("[openclaw] resolving\n" + pretty + "\n")["action"] == "send"  # not a nested object
    assert last_json("no json here") is None


def test_a_result_that_cannot_be_copied_into_the_media_folder_is_refused_so_the_link_goes(tmp_path: Path) -> None:
    from libtv_fsm.channels.openclaw import staged

    env = {"OPENCLAW_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    (tmp_path / "state" / "media").mkdir(parents=True)
    root = media_root(env)
    assert root == tmp_path / "state" / "media"
    not_a_file = tmp_path / "clip.mp4"
    not_a_file.mkdir()  # copyfile fails with an OSError, as on a full disk
    with pytest.raises(FileRefused):
        with staged(not_a_file, "clip.mp4", env):
            pass
    assert not list(root.iterdir()), "the staging folder was left behind"
