"""The `openclaw` delegate against the real OpenClaw: a gateway on loopback whose Telegram is the simulator's.

OpenClaw and its Node come from npm (tests/toolchain/install-openclaw.sh, pinned, cached); without
them this module skips. Nothing may reach the real network: the gateway and the CLI listen and
connect on 127.0.0.1 only, update checks, the model catalog refresh, Bonjour and cron are off, and
every other destination goes to a proxy on a closed port.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from conftest import Cli, point_at_sim
from libtv_fsm import SessionStore
from libtv_fsm.channels import get_channel
from libtv_fsm.errors import TransientError
from libtv_fsm.channels.base import SendInDoubt
from libtv_fsm.sim import Scenario, Simulator

INSTALLER = Path(__file__).resolve().parent / "toolchain" / "install-openclaw.sh"
# Read at import: the conftest scrubs LIBTV_* from the environment before each test.
_INSTALL_ENV = {k: v for k, v in os.environ.items() if k.startswith("LIBTV_OPENCLAW_") or k in ("PATH", "HOME")}
GATEWAY_START_SECONDS = 180
MEDIA_MAX_MB = 1  # the gateway's media cap for Telegram here; a 2 MiB result is over it
CLOSED = "http://127.0.0.1:9"  # a proxy nobody listens on: any non-loopback request fails at once


def _installed() -> Path:
    if sys.platform != "linux" and sys.platform != "darwin":
        pytest.skip("OpenClaw's test toolchain is installed for Linux and macOS only")
    try:
        done = subprocess.run(["bash", str(INSTALLER), "--installed"], capture_output=True, text=True, timeout=30,
                              env=_INSTALL_ENV)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"cannot check for the OpenClaw toolchain: {err}")
    if done.returncode != 0:
        pytest.skip(f"OpenClaw is not installed; run {INSTALLER.relative_to(INSTALLER.parents[2])} (needs npm)")
    return Path(done.stdout.strip()) / "bin" / "openclaw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class World:
    """A started simulator and a real OpenClaw gateway whose Telegram bot talks to it."""

    def __init__(self, root: Path, binary: Path) -> None:
        self.root = root
        self.binary = binary
        self.sim = Simulator()
        self.home = root / "home"
        self.state = root / "state"
        self.config = self.state / "openclaw.json"
        self.port = _free_port()
        self.token = "libtv-test-gateway-token-0001"
        self.log = root / "gateway.log"
        self.process: Any = None

    def env(self) -> Dict[str, str]:
        """What both the gateway and `openclaw message send` run with: this world, and no way out."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "LANG": "C.UTF-8",
            "TMPDIR": str(self.root / "tmp"),
            "OPENCLAW_STATE_DIR": str(self.state), "OPENCLAW_CONFIG_PATH": str(self.config),
            "OPENCLAW_NO_AUTO_UPDATE": "1", "OPENCLAW_DISABLE_BONJOUR": "1", "OPENCLAW_SKIP_CRON": "1",
            "OPENCLAW_PROXY_URL": CLOSED, "HTTP_PROXY": CLOSED, "HTTPS_PROXY": CLOSED, "ALL_PROXY": CLOSED,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        }

    def write_config(self) -> None:
        config = {
            "gateway": {"mode": "local", "port": self.port, "bind": "loopback",
                        "auth": {"mode": "token", "token": self.token}},
            "channels": {"telegram": {"enabled": True, "botToken": self.sim.TELEGRAM_BOT_TOKEN,
                                      "apiRoot": self.sim.url, "mediaMaxMb": MEDIA_MAX_MB}},
            "update": {"checkOnStart": False},
            "models": {"catalogRefresh": {"enabled": False}},
            "proxy": {"proxyUrl": CLOSED},
            "logging": {"file": str(self.state / "logs" / "openclaw.log")},
        }
        self.state.mkdir(parents=True)
        self.config.write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        self.sim.start()
        self.sim.scenarios["over_cap"] = Scenario(video_bytes=2 * MEDIA_MAX_MB * 1024 * 1024, video_url_key="url")
        for folder in (self.home, self.root / "tmp"):
            folder.mkdir(parents=True)
        self.write_config()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([str(self.binary), "gateway", "run"], env=self.env(), stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + GATEWAY_START_SECONDS
        while b"[gateway] ready" not in self.log.read_bytes():
            if self.process.poll() is not None:
                raise AssertionError(f"the OpenClaw gateway exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the OpenClaw gateway did not start in {GATEWAY_START_SECONDS} s:\n{self.tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the gateway and everything it started (its process group); then the simulator."""
        try:
            if self.process is not None:
                _stop_group(self.process)
        finally:
            self.sim.stop()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def chat(self, chat_id: str) -> List[Dict[str, Any]]:
        return self.sim.telegram.chat(chat_id)


def _stop_group(process: Any) -> None:
    for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace  # its children share the group: wait until none is left
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return
    raise AssertionError("processes of the OpenClaw gateway were left running")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    binary = _installed()
    w = World(tmp_path_factory.mktemp("openclaw-real"), binary)
    # OpenClaw makes its shared temp root /tmp/openclaw whatever its config says; leave none behind.
    shared_tmp = Path("/tmp/openclaw")
    was_there = shared_tmp.exists()
    try:
        w.start()
        yield w
    finally:
        w.stop()
        if not was_there:
            try:
                shared_tmp.rmdir()  # only when empty: anything in it is not ours to delete
            except OSError:
                pass
    assert not w.sim.errors, "the simulator failed on a request:\n" + "\n".join(w.sim.errors)


@pytest.fixture
def skill(world: World, home: Path) -> Cli:
    """Our CLI on the simulator, delivering through the real `openclaw` (the sim's other tokens are set too)."""
    env = dict(world.env(), LIBTV_OPENCLAW_BIN=str(world.binary), LIBTV_WAIT_TIMEOUT_SECONDS="60",
               LIBTV_OPENCLAW_TIMEOUT_SECONDS="120")
    return point_at_sim(Cli(home), world.sim, env, key="mgk_sim_test_key_0001")


def deliver(skill: Cli, text: str, chat: str) -> str:
    ran = skill("create-session", text, "--channel", "openclaw:telegram", "--chat-id", f"telegram:{chat}",
                env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})
    assert ran.code == 0 and ran.json()["deliverable"] is True, ran
    sid = ran.json()["sessionId"]
    skill("wait-and-deliver", "--session-id", sid, timeout=600)
    return sid


def test_a_video_and_an_image_reach_telegram_once_each_under_their_own_names(world: World, skill: Cli,
                                                                             home: Path) -> None:
    sid = deliver(skill, "poster and trailer [sim:image+video]", "424242")
    session = SessionStore(home).load(sid)
    assert session.state == "delivered", world.tail()
    got = sorted((m["kind"], m.get("file_name") or m.get("text", "")) for m in world.chat("424242"))
    names = {url.rsplit("/", 1)[1] for url in session.result_urls}
    assert [kind for kind, _ in got] == ["photo", "video"] and {name for _, name in got} == names, got
    assert not session.uncertain_urls
    assert not list((world.state / "media").glob("libtv-*")), "the copies handed to the gateway are removed"


def test_a_failed_job_reaches_telegram_as_one_text(world: World, skill: Cli) -> None:
    deliver(skill, "something forbidden [sim:fail]", "424243")
    got = world.chat("424243")
    assert [m["kind"] for m in got] == ["text"] and "Content policy violation" in got[0]["text"], got


def test_a_result_over_the_gateways_media_cap_arrives_as_its_link(world: World, skill: Cli, home: Path) -> None:
    sid = deliver(skill, "a long one [sim:over_cap]", "424244")
    [url] = SessionStore(home).load(sid).result_urls
    got = world.chat("424244")
    assert [m["kind"] for m in got] == ["text"] and url in got[0]["text"], got


def test_a_file_the_gateway_may_not_read_arrives_as_its_link_not_as_nothing(world: World, skill: Cli, home: Path,
                                                                           tmp_path: Path) -> None:
    # Our side believes in another state dir than the gateway's (as with a runtime's own OpenClaw
    # home): the copy lands outside the gateway's media roots and it refuses the path.
    elsewhere = tmp_path / "another-state"
    elsewhere.mkdir()
    skill.env["OPENCLAW_STATE_DIR"] = str(elsewhere)
    sid = deliver(skill, "a cat", "424245")
    [url] = SessionStore(home).load(sid).result_urls
    got = world.chat("424245")
    assert [m["kind"] for m in got] == ["text"] and url in got[0]["text"], got
    assert not list((elsewhere / "media").glob("libtv-*"))


def test_a_gateway_nobody_answers_at_is_a_transient_failure_not_a_doubt(world: World) -> None:
    env = dict(world.env(), LIBTV_OPENCLAW_BIN=str(world.binary),
               OPENCLAW_GATEWAY_URL=f"ws://127.0.0.1:{_free_port()}", OPENCLAW_GATEWAY_TOKEN=world.token)
    channel = get_channel("openclaw:telegram", env)
    with pytest.raises(TransientError) as caught:
        channel.send_text("424246", "hello", dedupe_key="k")
    assert not isinstance(caught.value, SendInDoubt), caught.value
    assert world.chat("424246") == []
