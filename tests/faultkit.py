"""What the fault suite shares: a configured CLI against the simulator, waiter runs with failpoints, the exactly-once checks."""
from __future__ import annotations

import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

from conftest import ENTRY_POINTS, Cli, Ran, point_at_sim
from libtv_fsm import SessionStore

GROUP = "oc_group_faults"
GATEWAY_KEY = "mgk_sim_test_key_0001"
DIRECT_KEY = "sk-libtv-sim-test-key-0001"
WAITER = ENTRY_POINTS["module"] + ["wait-and-deliver", "--session-id"]
KILLED = -9


def make_skill(home: Path, sim) -> Cli:
    """The CLI against the simulator, fast polling, a gateway key with plenty of uses."""
    home.mkdir(parents=True, exist_ok=True)
    sim.set_key(GATEWAY_KEY, remaining_uses=500, max_uses=500)
    return point_at_sim(Cli(home), sim, {"LIBTV_WAIT_TIMEOUT_SECONDS": "60"}, key=GATEWAY_KEY)


@pytest.fixture
def skill(home: Path, sim) -> Cli:
    """The CLI against the simulator, fast polling, a gateway key with plenty of uses."""
    return make_skill(home, sim)


def each_in_parallel(cases: List[str], check: Callable[[str], None], workers: int = 6) -> None:
    """Run ``check(case)`` for every case at once (they mostly wait on sockets); fail listing every case that failed."""
    import traceback
    from concurrent.futures import ThreadPoolExecutor

    def one(case: str) -> Optional[str]:
        try:
            check(case)
        except Exception:  # collected: one failing case must not hide the others
            return f"--- {case}:\n{traceback.format_exc(limit=3)}"
        return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        failures = [f for f in pool.map(one, cases) if f]
    assert not failures, "\n".join(failures)


def submit(skill: Cli, text: str, target: Optional[str] = GROUP, waiter: bool = False,
           env: Optional[Dict[str, str]] = None) -> str:
    """create-session; the session id. No background waiter unless asked: the test runs its own."""
    extra = ["--channel", "feishu", "--chat-id", target] if target else []
    run_env = dict(env or {})
    if not waiter:
        run_env["LIBTV_SKIP_BACKGROUND_WAITER"] = "1"
    ran = skill("create-session", text, *extra, env=run_env)
    assert ran.code == 0 and len(ran.lines) == 1, ran
    return ran.json()["sessionId"]


def run_waiter(skill: Cli, sid: str, failpoints: str = "", env: Optional[Dict[str, str]] = None,
               timeout: float = 60) -> Ran:
    """`wait-and-deliver` in the foreground, optionally armed to SIGKILL itself at a failpoint."""
    run_env = dict(env or {})
    if failpoints:
        run_env["LIBTV_FAILPOINTS"] = failpoints
    return skill("wait-and-deliver", "--session-id", sid, env=run_env, timeout=timeout)


def start_waiter(skill: Cli, sid: str, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """`wait-and-deliver` in the background, in its own process group (so a test can kill it whole)."""
    full = dict(skill.env)
    full.update(env or {})
    return subprocess.Popen(WAITER + [sid], env=full, cwd=str(skill.home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def chat(sim, target: str = GROUP) -> List[dict]:
    return [m for m in sim.feishu.messages if m["receive_id"] == target]


def expected_uuids(sid: str, urls: List[str]) -> Counter:
    from libtv_fsm.channels.feishu import feishu_uuid
    from libtv_fsm.delivery import dedupe_key

    return Counter(feishu_uuid(dedupe_key(sid, url)) for url in urls)


def assert_delivered_once(home: Path, sim, sid: str, target: str = GROUP, notices: int = 0) -> None:
    """The chat shows each result of the session exactly once (plus ``notices`` texts), and the journal agrees."""
    session = SessionStore(home).load(sid)
    assert session.state == "delivered", session
    urls = list(session.result_urls)
    assert urls, "the session has no results"
    seen = Counter(m["uuid"] for m in chat(sim, target))
    want = expected_uuids(sid, urls)
    results_seen = Counter({u: n for u, n in seen.items() if u in want})
    assert results_seen == want, f"results in the chat {dict(results_seen)} != each once {dict(want)}"
    assert sum(seen.values()) - sum(results_seen.values()) == notices, chat(sim, target)
    succeeded = Counter(e.event.url for e in session.events if e.type == "delivery_succeeded")
    assert succeeded == Counter(urls), f"delivery_succeeded per URL: {dict(succeeded)}"


def assert_clean_replay(home: Path, sid: str, allowed_ignored: int = 0, settle: float = 30.0) -> None:
    """The journal reads whole (no skipped line) and replays without refused events, twice the same.

    Checked once no waiter holds the session (up to ``settle`` s): a waiter that `recover` started
    keeps appending after `delivered` (its local copy's `downloaded`), and two loads on either side
    of that append differ without anything being wrong.
    """
    from waiting import wait_for, waiter_gone

    wait_for(lambda: waiter_gone(home, sid), settle, f"the waiter of session {sid} to finish")
    store = SessionStore(home)
    first, second = store.load(sid), store.load(sid)
    assert first.skipped_lines == 0, first.journal_problems
    assert len(first.ignored) <= allowed_ignored, [(e.type, e.note) for e in first.ignored]
    assert (first.state, first.version, first.result_urls) == (second.state, second.version, second.result_urls)


def no_traceback(home: Path, sid: str) -> None:
    log = home / f"libtv-waiter-{sid}.log"
    if log.exists():
        assert "Traceback" not in log.read_text(errors="replace")


def env_without_waiter() -> Dict[str, str]:
    return {"LIBTV_SKIP_BACKGROUND_WAITER": "1"}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class Catcher:
    """A second loopback HTTP server standing for "another host": it records every request that reaches it."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.requests = []  # type: List[dict]

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_HEAD = _any

            def log_message(self, *args: object) -> None:
                pass

        # "localhost", not 127.0.0.1: another host name, as a redirect to another host would be.
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def catcher():
    c = Catcher()
    yield c
    c.close()


class SlowServer:
    """A raw loopback server that answers every connection one byte at a time, headers included (a slow loris)."""

    def __init__(self, gap: float = 0.2) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.gap = gap
        self.stopping = threading.Event()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:  # type: ignore[no-untyped-def]
        reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 100000
        try:
            conn.recv(65536)
            for byte in reply:
                if self.stopping.wait(self.gap):
                    break
                conn.sendall(bytes([byte]))
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


@pytest.fixture
def slow_server():
    s = SlowServer()
    yield s
    s.close()
