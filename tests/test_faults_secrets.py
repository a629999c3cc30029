"""Secrets: the API key, the Feishu app secret and tenant tokens never land in a file, a log, an error or the output.

A full run (successes, a failure, a timeout, upstreams that echo credentials back in their
errors, a redirect to another host) and then every byte under NEXU_HOME and every line
printed is searched for the raw secrets; only the `****abcd` mask may appear.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import List

from conftest import Cli, Ran
from faultkit import GROUP, catcher, chat  # noqa: F401
from libtv_fsm import SessionStore
from waiting import wait_for

KEY = "mgk_SeCrEt_gateway_key_0123456789abcdef"
DIRECT = "sk-libtv-SeCrEt_direct_key_9876543210"


def test_no_secret_is_ever_written_or_printed_and_only_the_mask_shows(home, sim, catcher):
    cli = Cli(home)
    cli.env.update(sim.env())
    cli.env.update({"LIBTV_POLL_INTERVAL_SECONDS": "0.05", "LIBTV_MAX_POLL_INTERVAL_SECONDS": "0.2"})
    # One waiter per session: one session times out on its own LIBTV_MAX_POLLS, and a session submitted
    # without a waiter is run by hand (test_worker covers what the home worker logs).
    cli.env["LIBTV_WAITER"] = "process"
    sim.set_key(KEY, remaining_uses=100, max_uses=100)
    sim.redirect_to = catcher.url + "/steal"
    runs: List[Ran] = []

    def run(*args: str, env=None) -> Ran:
        ran = cli(*args, env=env)
        runs.append(ran)
        return ran

    assert run("setup", "--api-key", KEY).code == 0
    assert "****" + KEY[-4:] in runs[-1].out
    assert run("check").code == 0
    target = ["--channel", "feishu", "--chat-id", GROUP]
    ok = run("create-session", "a cat", *target).json()["sessionId"]
    failed = run("create-session", "forbidden [sim:fail]", *target).json()["sessionId"]
    late = run("create-session", "an epic [sim:never]", *target, env={"LIBTV_MAX_POLLS": "2"}).json()["sessionId"]
    store = SessionStore(home)
    wait_for(lambda: (store.replay(ok).state, store.replay(failed).state, store.replay(late).state)
             == ("delivered", "failed", "timeout"), 60, "the three sessions to end")

    # upstreams that echo what they were sent: the create call, the chat token, the chat send
    sim.inject("/libtv/v1/session", "echo")
    assert run("create-session", "a dog", *target).code != 0
    sim.inject("/libtv/v1/session", "redirect")
    assert run("create-session", "a dog", *target).code != 0
    sim.inject("/open-apis/auth/v3/tenant_access_token/internal", "echo")
    sim.inject("/open-apis/im/v1/messages", "echo")
    echoed = run("create-session", "a bird", *target, env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"}).json()["sessionId"]
    for _ in range(2):  # the token refused, then the send: each journaled, nothing delivered yet
        assert run("wait-and-deliver", "--session-id", echoed).code == 1, runs[-1]
    sim.complete_now(late)  # recover resumes the timed-out one too: let it finish
    assert run("recover").code == 0
    wait_for(lambda: store.replay(echoed).state == store.replay(late).state == "delivered", 60,
             "the echoed and the late session to be delivered")
    for sid in (ok, failed, late, echoed):
        run("history", sid)
        run("history", sid, "--json")
        run("query-session", sid)
    run("tasks")
    run("recover", "--json")
    # the direct route, with the older upload that takes the key as a form field, echoed back
    sim.direct_legacy_upload = True
    assert run("update-key", "--api-key", DIRECT).code == 0
    picture = home.parent / "in.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    sim.inject("/openapi/upload", "echo")
    assert run("upload", "--file", str(picture)).code != 0
    sim.inject("/openapi/session", "echo")
    assert run("create-session", "a fish").code != 0
    assert run("check").code == 0

    from libtv_fsm.recovery import waiter_running

    wait_for(lambda: not any(waiter_running(SessionStore(home), s) for s in store.journal.session_ids()), 30,
             "every waiter to exit (their logs complete)")
    tokens = list(sim.feishu.tokens)
    assert tokens and catcher.requests == []
    # the echoes really did carry the secrets back: the scrubbing is what kept them out
    assert any(KEY in str(r.headers.get("x-api-key")) for r in sim.requests)
    secrets = {"api key": KEY, "direct key": DIRECT, "app secret": sim.FEISHU_APP_SECRET}
    secrets.update({f"tenant token {i}": t for i, t in enumerate(tokens)})

    leaks = []
    config = home / "libtv.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600 and DIRECT in config.read_text()
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaks += [f"{name} in {path.relative_to(home)}" for name, value in secrets.items()
                  if value.encode() in data and not (path == config and name.endswith("key"))]  # its one place
    for ran in runs:
        leaks += [f"{name} in the output of a run: {ran.out[-300:]!r}" for name, value in secrets.items()
                  if value in ran.out + ran.err]
    assert not leaks, "\n".join(leaks)
    assert len(chat(sim)) == 5  # the cat, the failure, the timeout notice, the late epic, the bird
    assert all("Traceback" not in r.err for r in runs)


def test_the_config_file_is_private_from_its_first_byte_whatever_the_umask(tmp_path, monkeypatch):
    from libtv_fsm import config

    seen = []
    real_write = os.write

    def watched_write(fd, data):  # type: ignore[no-untyped-def]
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))  # the mode at the moment the key is written
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", watched_write)
    old = os.umask(0)
    try:
        path = config.update_config(tmp_path / "nexu", api_key=KEY)
    finally:
        os.umask(old)
    assert seen and set(seen) == {0o600}, [oct(m) for m in seen]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_secrets_stay_out_of_reprs_and_error_messages(sim):
    from libtv_fsm import errors
    from libtv_fsm.backends import open_backend
    from libtv_fsm.channels.feishu import FeishuChannel
    from libtv_fsm.config import Config

    assert KEY not in repr(Config(api_key=KEY)) and KEY not in repr(open_backend(KEY, sim.env()))
    sim.inject("/libtv/v1/session", "echo")
    backend = open_backend(KEY, sim.env())
    try:
        backend.create_session("a cat")
    except errors.LibtvError as err:
        assert KEY not in str(err) and KEY not in repr(err.args), err
    else:
        raise AssertionError("the echo fault was not met")
    channel = FeishuChannel(sim.env())
    sim.inject("/open-apis/im/v1/messages", "echo")
    try:
        channel.send_text(GROUP, "hi", dedupe_key="k")
    except errors.LibtvError as err:
        text = str(err) + repr(err.args)
        assert sim.FEISHU_APP_SECRET not in text and not any(t in text for t in sim.feishu.tokens), text
    else:
        raise AssertionError("the echo fault was not met")


def test_an_api_call_redirected_to_another_host_is_not_followed_with_the_key(home, sim, catcher):
    cli = Cli(home)
    cli.env.update(sim.env())
    assert cli("setup", "--api-key", KEY).code == 0
    sim.redirect_to = catcher.url + "/libtv/v1/session"
    for path, args in (("/api/v1/key/status", ["check"]), ("/libtv/v1/session", ["create-session", "a cat"]),
                       ("/api/v1/tasks", ["tasks"])):
        sim.inject(path, "redirect", "redirect", "redirect", "redirect")
        ran = cli(*args)
        assert ran.code != 0 and "redirect" in ran.last.lower(), ran
        sim.clear_injected()
    assert catcher.requests == []
    assert Path(home / "libtv.json").exists()
