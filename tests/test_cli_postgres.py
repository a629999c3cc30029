"""The CLI with LIBTV_JOURNAL_URL: every command keeps its journal in PostgreSQL; the key and logs stay in NEXU_HOME."""
from __future__ import annotations

import json

import pytest

from conftest import Cli, point_at_sim

GROUP = "oc_group_pg"
KEY = "mgk_sim_test_key_0001"


def all_bodies(url):
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT body::text FROM libtv_events ORDER BY position")]


def test_a_request_journaled_in_postgresql_is_delivered_once_and_listed(home, sim, pg_url):
    skill = point_at_sim(Cli(home), sim, {"LIBTV_JOURNAL_URL": pg_url, "LIBTV_WAIT_TIMEOUT_SECONDS": "60"}, key=KEY)
    ran = skill("create-session", "a cat surfing", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code == 0 and len(ran.lines) == 1, ran
    sid = ran.json()["sessionId"]
    waited = skill("wait-and-deliver", "--session-id", sid)
    assert waited.code == 0 and waited.json() == {"sessionId": sid, "state": "delivered"}, waited
    assert [m["msg_type"] for m in sim.feishu.messages if m["receive_id"] == GROUP] == ["media"]
    again = skill("wait-and-deliver", "--session-id", sid)
    assert again.code == 0 and len(sim.feishu.messages) == 1  # delivered: nothing sent twice

    history = skill("history", sid, "--json")
    assert history.code == 0, history
    doc = history.json()
    assert doc["state"] == "delivered" and doc["journal"].startswith("postgresql://127.0.0.1:")
    assert [e["type"] for e in doc["events"]][:1] == ["submitted"] and "delivered" in [e["type"] for e in doc["events"]]
    human = skill("history", sid)  # human lines work too
    assert human.code == 0 and "delivered" in human.out and "❌" not in human.out, human
    recovered = skill("recover", "--json")
    assert recovered.code == 0, recovered
    [entry] = recovered.json()["sessions"]
    assert (entry["session_id"], entry["state"], entry["waiter"]) == (sid, "delivered", "none")

    # The journal is the database's: no journal file under NEXU_HOME; the key and the log stay local.
    assert not list(home.glob("libtv-journal/*.jsonl"))
    assert json.loads((home / "libtv.json").read_text())["apiKey"] == KEY
    bodies = all_bodies(pg_url)
    assert len(bodies) == len(doc["events"]) and not any(KEY in b or "app_secret" in b for b in bodies)


def test_an_unknown_session_names_the_database_not_the_home(home, pg_url):
    ran = Cli(home)("history", "nope", env={"LIBTV_JOURNAL_URL": pg_url})
    assert ran.code != 0 and ran.last.startswith("❌ Unknown session nope") and "postgresql://127.0.0.1:" in ran.last, ran
    assert str(home) not in ran.last


def test_a_postgresql_url_without_psycopg_is_one_clear_line(home, tmp_path):
    blocker = tmp_path / "no-psycopg"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\", name='psycopg')\n")
    cli = Cli(home)
    ran = cli("recover", "--json", env={"LIBTV_JOURNAL_URL": "postgresql://u:hunter2@127.0.0.1:9/x",
                                        "PYTHONPATH": str(blocker)})
    assert ran.code != 0 and ran.lines == [ran.last] and ran.last.startswith("❌ "), ran
    assert "libtv-fsm[postgres]" in ran.last and "hunter2" not in ran.out + ran.err


def test_a_journal_url_that_is_not_postgresql_is_refused_without_echoing_it(home):
    ran = Cli(home)("history", "s1", env={"LIBTV_JOURNAL_URL": "mysql://root:hunter2@db/x"})
    assert ran.code != 0 and ran.last.startswith("❌ ") and "postgresql://" in ran.last and "hunter2" not in ran.out


def test_an_unreachable_database_is_one_clear_line_without_the_password(home):
    ran = Cli(home)("history", "s1", env={"LIBTV_JOURNAL_URL": "postgresql://u:hunter2@127.0.0.1:9/x",
                                                   "LIBTV_JOURNAL_RETRY_SECONDS": "0.5"}, timeout=120)
    assert ran.code != 0 and ran.last.startswith("❌ ") and "unreachable" in ran.last, ran
    assert "hunter2" not in ran.out + ran.err


# -- submit intents: rows held by advisory locks, so a create-session that dies anywhere is finished by recover --


def intent_rows(url):
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute("SELECT record, outcome FROM libtv_submit_intents ORDER BY created_at").fetchall()


@pytest.mark.parametrize("point", ["after_http:POST:/libtv/v1/session", "before_append:submitted"])
def test_a_create_session_killed_after_libtv_accepted_is_finished_by_recover(home, sim, pg_url, point):
    skill = point_at_sim(Cli(home), sim, {"LIBTV_JOURNAL_URL": pg_url, "LIBTV_SKIP_BACKGROUND_WAITER": "1"}, key=KEY)
    ran = skill("create-session", "a cat in the rain", "--channel", "feishu", "--chat-id", GROUP,
                env={"LIBTV_FAILPOINTS": point})
    assert ran.code == -9 and ran.out == "", ran
    (sid,) = sim.sessions
    [(record, outcome)] = intent_rows(pg_url)
    assert outcome is None and record["text"] == "a cat in the rain" and KEY not in json.dumps(record)
    doc = skill("recover", "--json").json()
    assert [(s["status"], s.get("session_id")) for s in doc["submits"]] == [("recovered", sid)], doc
    [entry] = doc["sessions"]
    assert entry["delivery"] == {"channel": "feishu", "chat_id": GROUP} and entry["submitted_text"] == "a cat in the rain"
    assert intent_rows(pg_url) == [] and "submits" not in skill("recover", "--json").json()
    assert skill("wait-and-deliver", "--session-id", sid).code == 0 and len(sim.feishu.messages) == 1


def test_recover_leaves_a_live_create_sessions_intent_alone_and_closes_a_dead_one_with_the_reason(home, sim, pg_url):
    from libtv_fsm.journal import open_journal

    skill = point_at_sim(Cli(home), sim, {"LIBTV_JOURNAL_URL": pg_url}, key=KEY)
    live = open_journal(pg_url).intents().begin({"at": "2026-01-01T00:00:00Z", "text": "a cat", "message": "a cat",
                                                 "auth_mode": "nexu_gateway", "session_id": None, "after_seq": 0})
    assert "submits" not in skill("recover", "--json").json()  # its writer still holds it
    live.release()  # the writer dies before the POST
    (entry,) = skill("recover", "--json").json()["submits"]
    assert entry["status"] == "closed" and "never reached LibTV" in entry["reason"], entry
    [(record, outcome)] = intent_rows(pg_url)
    assert outcome == entry["reason"] and "submits" not in skill("recover", "--json").json()  # kept for a human, told once


def test_recover_says_running_for_a_session_whose_claim_another_host_holds(home, pg_url):
    """`recover --json` tells a session some waiter holds (from pg_locks) from one nobody holds."""
    import subprocess
    import sys

    from libtv_fsm import events as ev
    from libtv_fsm.store import SessionStore
    from test_journal_postgres import HOLDER
    from test_replay import submitted

    store = SessionStore.from_url(pg_url, home)
    for sid in ("s1", "s2"):
        store.record(sid, submitted())
        store.record(sid, ev.Failed(at=ev.now(), reason="no"))
        store.record(sid, ev.NoticeSent(at=ev.now(), kind="failed"))
    store.journal.close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ran = Cli(home)("recover", "--json", env={"LIBTV_JOURNAL_URL": pg_url, "LIBTV_SKIP_BACKGROUND_WAITER": "1"})
        assert ran.code == 0, ran
        assert {e["session_id"]: e["waiter"] for e in ran.json()["sessions"]} == {"s1": "running", "s2": "none"}
    finally:
        holder.kill()
        holder.wait(timeout=30)
