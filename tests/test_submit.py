"""Where a submitted request's result will go (`deliverable`, `channel`, `note`: CONTRACT sections 4 and 7)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest

from libtv_fsm.errors import InputError
from libtv_fsm.submit import Target, note_for, resolve_target


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    """No chat credentials anywhere: an empty NEXU_HOME, no openclaw.json."""
    return {"NEXU_HOME": str(tmp_path / "nexu")}


FEISHU_CREDENTIALS = {"FEISHU_APP_ID": "cli_test_app", "FEISHU_APP_SECRET": "s" * 24}


def test_a_channel_and_a_chat_id_from_the_flags_make_it_deliverable(env):
    target = resolve_target("feishu", "oc_group", dict(env, **FEISHU_CREDENTIALS))
    assert target == Target("feishu", "oc_group") and target.deliverable


def test_missing_chat_credentials_keep_it_deliverable_and_name_the_problem(env):
    target = resolve_target("feishu", "oc_group", env)
    assert target.deliverable and target.channel == "feishu" and target.chat_id == "oc_group"
    assert "FEISHU_APP_ID" in target.problem
    assert target.delivery is not None  # journaled: the waiter reads the credentials again later


def test_the_target_comes_from_the_openclaw_environment_when_no_flags_are_given(env):
    target = resolve_target(None, None, dict(env, OPENCLAW_CHANNEL_TYPE="telegram", OPENCLAW_CHAT_ID="telegram:-100123"))
    assert (target.channel, target.chat_id, target.deliverable) == ("telegram", "-100123", True)
    assert "TELEGRAM_BOT_TOKEN" in target.problem


def test_the_chat_id_comes_from_the_channel_context_when_openclaw_chat_id_is_unset(env):
    context = json.dumps({"sender": {"id": "ou_sender"}, "chat": {"id": "oc_from_context"}})
    target = resolve_target(None, None, dict(env, OPENCLAW_CHANNEL_TYPE="feishu", OPENCLAW_CHANNEL_CONTEXT=context))
    assert (target.channel, target.chat_id, target.deliverable) == ("feishu", "oc_from_context", True)


def test_flags_win_over_the_environment(env):
    target = resolve_target("feishu", "oc_flag", dict(env, OPENCLAW_CHANNEL_TYPE="telegram", OPENCLAW_CHAT_ID="-100"))
    assert (target.channel, target.chat_id) == ("feishu", "oc_flag")


@pytest.mark.parametrize("channel, chat_id", [(None, None), (None, "oc_group"), ("feishu", None)])
def test_without_both_a_channel_and_a_chat_id_it_is_not_deliverable(env, channel, chat_id):
    target = resolve_target(channel, chat_id, env)
    assert not target.deliverable and target.problem
    assert target.channel == (channel or "")


def test_an_unknown_channel_is_refused(env):
    with pytest.raises(InputError, match="Unknown channel"):
        resolve_target("myspace", "x", env)


def test_the_note_says_the_result_comes_by_itself_when_nothing_is_in_the_way():
    note = note_for("s1", Target("feishu", "oc_group"), waiter=True)
    assert "sent to this chat automatically" in note and "s1" in note


def test_the_note_relays_missing_credentials_and_that_fixing_them_in_time_is_enough():
    note = note_for("s1", Target("telegram", "-100", "No Telegram bot token: set TELEGRAM_BOT_TOKEN"), waiter=True)
    assert "No Telegram bot token" in note and "before the result is ready" in note
    assert "ask me later to check session s1" in note


def test_the_note_says_why_nothing_will_be_sent():
    no_chat = note_for("s1", Target(problem="no chat channel was given"), waiter=True)
    assert "will not be sent" in no_chat and "no chat channel was given" in no_chat
    no_waiter = note_for("s1", Target("feishu", "oc_group"), waiter=False)
    assert "will not be sent" in no_waiter and "waiter is disabled" in no_waiter
