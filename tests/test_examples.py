"""Every example runs: embedding in a runtime, auditing a home, and a custom (webhook) channel, also as an entry-point plugin."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest

from conftest import ROOT, _SCRUB, Cli
from libtv_fsm import SessionStore
from libtv_fsm import events as ev

EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env, cwd=str(cwd),
                          capture_output=True, text=True, encoding="utf-8", timeout=120)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested_here() -> None:
    text = Path(__file__).read_text(encoding="utf-8")
    for example in EXAMPLES.glob("*.py"):
        assert f'"{example.name}"' in text or f'"{example.stem}"' in text, example.name


def test_a_runtime_embeds_the_store_watches_each_state_and_delivers_to_its_own_channel(tmp_path: Path) -> None:
    proc = run_example("embed_runtime.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    states = [line.split("-> ")[-1] for line in out.splitlines() if "-> " in line]
    order = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
    assert order == ["submitted", "polling", "completed", "delivered"], out
    assert "final state: delivered" in out
    assert "inbox room-42: image" in out and "inbox room-42: video" in out


def _journal(store: SessionStore, sid: str, t0: datetime, *steps: ev.Event) -> None:
    first = ev.Submitted(at=t0, project_uuid="p-" + sid, project_url="https://www.liblib.tv/canvas?projectId=p",
                         text=f"request {sid}", message=f"request {sid}", auth_mode="nexu_gateway",
                         delivery=ev.Delivery("feishu", "oc_room"))
    store.record(sid, first, *steps)


def test_auditing_a_home_shows_each_outcome_and_how_long_it_took(home: Path, tmp_path: Path) -> None:
    store = SessionStore(home)
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    url = "https://libtv-res.liblib.art/claw/a.mp4"
    _journal(store, "s-delivered", t0,
             ev.PollAnswered(at=t0 + timedelta(seconds=50), after_seq=0, last_seq=3, new_messages=3, urls=(url,),
                             last_result_seq=2, last_assistant_seq=3),
             ev.Completed(at=t0 + timedelta(seconds=60), urls=(url,)),
             ev.DeliveryAttempted(at=t0 + timedelta(seconds=61), url=url, channel="feishu", chat_id="oc_room"),
             ev.DeliverySucceeded(at=t0 + timedelta(seconds=65), url=url, sent_as="video"),
             ev.Delivered(at=t0 + timedelta(seconds=65)))
    _journal(store, "s-failed", t0 + timedelta(minutes=1), ev.Failed(at=t0 + timedelta(minutes=1, seconds=30),
                                                                      reason="Content policy violation"))
    _journal(store, "s-timeout", t0 + timedelta(minutes=2),
             ev.TimedOut(at=t0 + timedelta(minutes=62), polls=120, waited_seconds=3600.0))
    _journal(store, "s-running", t0 + timedelta(minutes=3))

    proc = run_example("audit_home.py", str(home), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {r["session_id"]: r for r in doc["sessions"]}
    assert [r["session_id"] for r in doc["sessions"]] == ["s-running", "s-timeout", "s-failed", "s-delivered"]
    assert rows["s-delivered"]["took_seconds"] == 65 and rows["s-delivered"]["delivery_seconds"] == 5
    assert rows["s-failed"]["took_seconds"] == 30 and "Content policy violation" in rows["s-failed"]["outcome"]
    assert rows["s-timeout"]["took_seconds"] == 3600 and rows["s-timeout"]["state"] == "timeout"
    assert rows["s-running"]["finished"] is False and rows["s-running"]["outcome"] == "still generating"
    assert doc["summary"].startswith("4 session(s): 1 delivered, 1 failed, 1 submitted, 1 timeout")

    proc = run_example("audit_home.py", str(home), cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and lines[0].startswith("SESSION") and len(lines) == 2 + 4 + 2
    delivered = next(line for line in lines if line.startswith("s-delivered"))
    assert "65.0 s" in delivered and "5.0 s" in delivered and "feishu:oc_room" in delivered
    assert "60 min" in next(line for line in lines if line.startswith("s-timeout"))
    assert "median 65.0 s" in lines[-1]


def test_auditing_an_empty_home_says_so(tmp_path: Path) -> None:
    proc = run_example("audit_home.py", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("No sessions in")


def test_the_webhook_channel_example_sends_each_message_once(tmp_path: Path) -> None:
    proc = run_example("webhook_channel.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("4 requests, 3 messages:")
    assert "video: clip.mp4 200000" in proc.stdout and "text: Your video is ready" in proc.stdout


@pytest.fixture
def webhook_plugin(tmp_path: Path) -> Path:
    """The webhook channel as an installed plugin would be: its module and an entry point, on PYTHONPATH."""
    folder = tmp_path / "plugins"
    info = folder / "libtv_webhook_example-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: libtv-webhook-example\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[libtv_fsm.channels]\nwebhook = webhook_channel:WebhookChannel\n")
    shutil.copyfile(EXAMPLES / "webhook_channel.py", folder / "webhook_channel.py")
    return folder


def test_a_channel_plugin_found_by_entry_point_gets_the_result_from_the_detached_waiter(cli: Cli, sim, webhook_plugin):
    receiver = load_example("webhook_channel").WebhookReceiver()
    try:
        cli.env.update(sim.env())
        cli.env.update({"PYTHONPATH": str(webhook_plugin), "LIBTV_WEBHOOK_URL": receiver.url,
                        "LIBTV_POLL_INTERVAL_SECONDS": "0.05", "LIBTV_MAX_POLL_INTERVAL_SECONDS": "0.2"})
        assert cli("setup", "--api-key", sim.GATEWAY_KEY).code == 0
        ran = cli("create-session", "a cat surfing", "--channel", "webhook", "--chat-id", "room-7")
        assert ran.code == 0 and ran.json()["deliverable"] is True, ran
        sid = ran.json()["sessionId"]
        deadline = time.monotonic() + 30
        while SessionStore(cli.home).replay(sid).state != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert SessionStore(cli.home).replay(sid).state == "delivered"
        assert [(m["chat"], m["kind"], m["bytes"] > 0) for m in receiver.messages] == [("room-7", "video", True)]
        from libtv_fsm.recovery import waiter_running

        while waiter_running(SessionStore(cli.home), sid) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        receiver.close()
