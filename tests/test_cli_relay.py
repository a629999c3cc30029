"""What create-session relays upstream (CONTRACT section 4): the user's words plus the model and ratio hints.

Real subprocesses against the simulator, which records every request it received. The journal
keeps the user's own words; only the relayed message carries the hints.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import Cli, point_at_sim
from libtv_fsm import SessionStore
from libtv_fsm import events as ev
from libtv_fsm.sim import Simulator

SESSION_PATHS = {Simulator.GATEWAY_KEY: "/libtv/v1/session", Simulator.DIRECT_KEY: "/openapi/session"}
NO_WAITER = {"LIBTV_SKIP_BACKGROUND_WAITER": "1"}


def relayed(sim: Simulator, key: str) -> List[Dict[str, Any]]:
    """The bodies of every session-creating POST the simulator received on the key's route."""
    return [r.json for r in sim.requests_to(SESSION_PATHS[key], "POST") if r.path == SESSION_PATHS[key]]


def create(cli: Cli, text: str, *extra: str, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    ran = cli("create-session", text, *extra, env=dict(NO_WAITER, **(env or {})))
    assert ran.code == 0 and len(ran.lines) == 1, ran
    return ran.json()


def journaled(home: Path, sid: str) -> List[Any]:
    """The Submitted events of a session's journal: what the user said and what was relayed."""
    return [e.event for e in SessionStore(home).load(sid).events if isinstance(e.event, ev.Submitted)]


def test_the_gateway_route_asks_for_seedance_before_the_ratio_and_journals_the_users_words(cli, home, sim):
    point_at_sim(cli, sim, key=sim.GATEWAY_KEY)
    out = create(cli, "a cat surfing")
    assert relayed(sim, sim.GATEWAY_KEY) == [{"message": "a cat surfing, please use Seedance 2.0, video ratio 16:9"}]
    assert SessionStore(home).load(out["sessionId"]).submitted_text == "a cat surfing"
    [event] = journaled(home, out["sessionId"])
    assert event.text == "a cat surfing" and event.message == "a cat surfing, please use Seedance 2.0, video ratio 16:9"
    legacy = json.loads((home / "libtv-sessions.json").read_text(encoding="utf-8"))
    assert legacy[0]["submitted_text"] == "a cat surfing"


def test_the_direct_route_relays_the_users_words_with_only_the_ratio_hint(cli, home, sim):
    point_at_sim(cli, sim, key=sim.DIRECT_KEY)
    create(cli, "a cat surfing")
    assert relayed(sim, sim.DIRECT_KEY) == [{"message": "a cat surfing, video ratio 16:9"}]


@pytest.mark.parametrize("text, message", [
    ("a fox in the snow, use Kling", "a fox in the snow, use Kling, video ratio 16:9"),
    ("wan2.2: a heron, 9:16", "wan2.2: a heron, 9:16"),
    ("I want a swan", "I want a swan, please use Seedance 2.0, video ratio 16:9"),  # neither word names Wan
])
def test_a_message_that_names_a_model_is_relayed_without_the_model_hint(cli, sim, text, message):
    point_at_sim(cli, sim, key=sim.GATEWAY_KEY)
    create(cli, text)
    assert relayed(sim, sim.GATEWAY_KEY) == [{"message": message}]


def test_libtv_model_hint_0_turns_the_model_hint_off(cli, sim):
    point_at_sim(cli, sim, key=sim.GATEWAY_KEY)
    create(cli, "a cat surfing", env={"LIBTV_MODEL_HINT": "0"})
    assert relayed(sim, sim.GATEWAY_KEY) == [{"message": "a cat surfing, video ratio 16:9"}]


def test_an_unrecognised_libtv_model_hint_is_one_line_and_nothing_is_sent(cli, sim):
    point_at_sim(cli, sim, key=sim.GATEWAY_KEY)
    ran = cli("create-session", "a cat surfing", env=dict(NO_WAITER, LIBTV_MODEL_HINT="maybe"))
    assert ran.code != 0 and ran.lines == [ran.last] and ran.last.startswith("❌ ") and "LIBTV_MODEL_HINT" in ran.last
    assert "Traceback" not in ran.err and relayed(sim, sim.GATEWAY_KEY) == []


def test_a_continued_session_gets_the_model_hint_too(cli, home, sim):
    point_at_sim(cli, sim, key=sim.GATEWAY_KEY)
    sid = create(cli, "a cat surfing")["sessionId"]
    sim.complete_now(sid)
    waited = cli("wait-and-deliver", "--session-id", sid)  # no chat: it completes, nothing to send
    assert waited.code == 0 and waited.json()["state"] == "completed", waited
    again = create(cli, "now at night", "--session-id", sid)
    assert again["sessionId"] == sid
    assert relayed(sim, sim.GATEWAY_KEY)[-1] == {"message": "now at night, please use Seedance 2.0, video ratio 16:9",
                                                 "sessionId": sid}
    assert [e.text for e in journaled(home, sid)] == ["a cat surfing", "now at night"]
