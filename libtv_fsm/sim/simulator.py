"""The Simulator: one loopback server standing in for the gateway, the direct API, Feishu and the CDN."""
from __future__ import annotations

import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from libtv_fsm.sim import cdn as cdn_routes
from libtv_fsm.sim import discord as discord_sim
from libtv_fsm.sim import libtv
from libtv_fsm.sim import slack as slack_sim
from libtv_fsm.sim import telegram as telegram_sim
from libtv_fsm.sim import wecom as wecom_sim
from libtv_fsm.sim.cdn import Cdn
from libtv_fsm.sim.faults import fault_reply
from libtv_fsm.sim.feishu import FeishuSim
from libtv_fsm.sim.scenarios import POLL_FAULTS, Scenario, builtin_scenarios, pick_scenario
from libtv_fsm.sim.server import Recorded, Reply, SimHTTPServer, text_reply
from libtv_fsm.sim.sessions import SimSession

KEY_ERRORS = ("invalid", "exhausted", "expired", "unavailable")


@dataclass
class KeyState:
    """What the upstream knows about one API key."""

    remaining_uses: int = 10
    max_uses: int = 10
    expires_at: Optional[str] = None
    error: Optional[str] = None


class Simulator:
    """All upstreams on one 127.0.0.1 port; state behind one lock; every request recorded."""

    GATEWAY_KEY = "mgk_sim_test_key_0001"
    DIRECT_KEY = "sk-libtv-sim-test-key-0001"
    FEISHU_APP_ID = "cli_sim"
    FEISHU_APP_SECRET = "sim_feishu_secret_0001"
    TELEGRAM_BOT_TOKEN = "123456789:SIMtelegramTokenAAAAAAAAAAAAAAAAAAA"
    SLACK_BOT_TOKEN = "xoxb-sim-0001-slack-bot-token"
    DISCORD_BOT_TOKEN = "sim.discord.bot-token-0001"
    WECOM_CORP_ID = "wwsimcorp0001"
    WECOM_CORP_SECRET = "sim_wecom_secret_0001"
    WECOM_AGENT_ID = 1000002

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.lock = threading.RLock()
        self.requests: List[Recorded] = []
        self.sessions: Dict[str, SimSession] = {}
        self.scenarios: Dict[str, Scenario] = builtin_scenarios()
        self.default_scenario: Scenario = self.scenarios["video"]
        self.keys: Dict[str, KeyState] = {}
        # The current project per key: new sessions join it until change-project.
        self.projects: Dict[str, str] = {}
        self.uploads: List[Dict[str, Any]] = []
        # True: /openapi/file/upload answers 404 and /openapi/upload (accessKey + file) works.
        self.direct_legacy_upload = False
        # Delay for an injected "hang" fault.
        self.hang_seconds = 3.0
        # Where an injected "redirect" fault points (None: an unroutable off-host URL).
        self.redirect_to: Optional[str] = None
        self.cdn = Cdn()
        self.feishu = FeishuSim(self)
        self.telegram = telegram_sim.TelegramSim(self)
        self.slack = slack_sim.SlackSim(self)
        self.discord = discord_sim.DiscordSim(self)
        self.wecom = wecom_sim.WecomSim(self)
        # Injected faults on these routes answer in the platform's own shape (e.g. its 429).
        self._shaped_faults: Dict[str, Callable[[str], Reply]] = {
            "telegram": self.telegram.fault, "slack": self.slack.fault, "discord": self.discord.fault,
            "wecom": self.wecom.fault}
        # Replaceable so a test can move time without sleeping.
        self.clock: Callable[[], float] = time.time
        self.stopping = threading.Event()
        # Tracebacks of requests the simulator itself failed on (the sim fixture asserts none).
        self.errors: List[str] = []
        self._injected: List[Tuple[str, List[str]]] = []
        self._server: Optional[SimHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Simulator":
        if self._server is None:
            self.stopping.clear()
            self._server = SimHTTPServer((self.host, self.port), self._dispatch, self.stopping)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"libtv-sim:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self.stopping.set()  # wakes handlers that are "hanging"
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._server = None
            self._thread = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> Dict[str, str]:
        """Environment that points the CLI and the library at this simulator."""
        return {
            "LIBTV_GATEWAY_URL": self.url + "/",
            "LIBTV_DIRECT_BASE_URL": self.url,
            "LIBTV_FEISHU_BASE_URL": self.url,
            "LIBTV_EXTRA_RESULT_PREFIXES": self.url + "/cdn/",
            "FEISHU_APP_ID": self.FEISHU_APP_ID,
            "FEISHU_APP_SECRET": self.FEISHU_APP_SECRET,
            "LIBTV_TELEGRAM_API_ROOT": self.url,
            "TELEGRAM_BOT_TOKEN": self.TELEGRAM_BOT_TOKEN,
            "LIBTV_SLACK_API_URL": self.url + slack_sim.API_PREFIX,
            "SLACK_BOT_TOKEN": self.SLACK_BOT_TOKEN,
            "LIBTV_DISCORD_API_URL": self.url + discord_sim.PREFIX,
            "DISCORD_BOT_TOKEN": self.DISCORD_BOT_TOKEN,
            "LIBTV_WECOM_BASE_URL": self.url + wecom_sim.PREFIX,
            "WECOM_CORP_ID": self.WECOM_CORP_ID,
            "WECOM_CORP_SECRET": self.WECOM_CORP_SECRET,
            "WECOM_AGENT_ID": str(self.WECOM_AGENT_ID),
        }

    # -- test controls -----------------------------------------------------------------------

    def set_key(self, key: str, remaining_uses: int = 10, max_uses: int = 10,
                expires_at: Optional[str] = None, error: Optional[str] = None) -> None:
        """Give one key a state; error is None or one of "invalid", "exhausted", "expired", "unavailable"."""
        if error is not None and error not in KEY_ERRORS:
            raise ValueError(f"error must be one of {KEY_ERRORS}")
        with self.lock:
            self.keys[key] = KeyState(remaining_uses, max_uses, expires_at, error)

    def key_state(self, key: str) -> KeyState:
        """The key's state; any unknown key gets a fresh 10/10 one."""
        with self.lock:
            return self.keys.setdefault(key, KeyState())

    def requests_to(self, prefix: str, method: Optional[str] = None) -> List[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix) and (method is None or r.method == method)]

    def complete_now(self, session_id: str) -> None:
        """Force the session's current turn to publish all its results at the next poll."""
        with self.lock:
            self.sessions[session_id].force()

    def cdn_url(self, path: str) -> str:
        return f"{self.url}/cdn/{path.lstrip('/')}"

    def cdn_put(self, path: str, size: int) -> str:
        """Serve a deterministic file of `size` bytes at /cdn/<path>; returns its URL."""
        with self.lock:
            self.cdn.put(path, size)
        return self.cdn_url(path)

    def cdn_bytes(self, url_or_path: str) -> bytes:
        """The exact bytes the CDN serves for a result URL (to compare downloads with)."""
        path = url_or_path.split("/cdn/", 1)[-1]
        f = self.cdn.get(path)
        if f is None:
            raise KeyError(path)
        return f.read()

    def inject(self, path_prefix: str, *faults: str) -> None:
        """The next requests under `path_prefix` answer these faults, one each, in order."""
        unknown = [f for f in faults if f not in POLL_FAULTS]
        if unknown:
            raise ValueError(f"unknown fault(s) {unknown}; known: {sorted(POLL_FAULTS)}")
        with self.lock:
            self._injected.append((path_prefix, list(faults)))

    def result_urls(self, session_id: str) -> List[str]:
        with self.lock:
            return self.sessions[session_id].published_urls()

    # -- used by the routes (always under self.lock) -----------------------------------------

    def publish(self, path: str, size: int) -> str:
        self.cdn.put(path, size)
        return self.cdn_url(path)

    def project_for(self, key: str, renew: bool = False) -> str:
        if renew or key not in self.projects:
            self.projects[key] = str(uuid.uuid4())
        return self.projects[key]

    def new_session(self, key: str, text: Optional[str]) -> SimSession:
        now = self.clock()
        sid = f"sim-{uuid.uuid4().hex[:20]}"
        session = SimSession(id=sid, project_uuid=self.project_for(key), created_at=now, key=key)
        self.sessions[sid] = session
        if text:
            self.add_turn(session, text)
        return session

    def add_turn(self, session: SimSession, text: str) -> None:
        # A continued session keeps its scenario unless the new message names another.
        fallback = session.scenario or self.default_scenario
        scenario = pick_scenario(text, self.scenarios, fallback)
        session.add_turn(text, scenario, self.clock(), self.publish)

    # -- dispatch ----------------------------------------------------------------------------

    def pending_faults(self) -> List[Tuple[str, List[str]]]:
        """Injected faults no request has met yet, as (path prefix, faults)."""
        with self.lock:
            return [(prefix, list(faults)) for prefix, faults in self._injected]

    def clear_injected(self) -> None:
        """Forget injected faults not met yet (so a leftover cannot meet the next test step)."""
        with self.lock:
            self._injected.clear()

    def _take_injected(self, path: str) -> Optional[str]:
        for i, (prefix, faults) in enumerate(self._injected):
            if path.startswith(prefix) and faults:
                fault = faults.pop(0)
                if not faults:
                    del self._injected[i]
                return fault
        return None

    def _dispatch(self, rec: Recorded) -> Reply:
        try:
            return self._answer(rec)
        except Exception:  # a simulator bug: answer 500 and keep it for the test to see
            trace = traceback.format_exc()
            with self.lock:
                self.errors.append(trace)
            sys.stderr.write(trace)
            return text_reply(500, "simulator error", "text/plain")

    def _answer(self, rec: Recorded) -> Reply:
        with self.lock:
            self.requests.append(rec)
            fault = self._take_injected(rec.path)
        route = self._route(rec.path)
        if route is None:
            return text_reply(404, "<html><body>404 Not Found</body></html>")
        style, handler = route
        if fault and fault != "hang":
            shaped = self._shaped_faults.get(style)
            return shaped(fault) if shaped else fault_reply(fault, style, redirect_to=self.redirect_to, request=rec)
        reply = handler(rec)
        if fault == "hang":
            reply.delay = max(reply.delay, self.hang_seconds)
        return reply

    def _route(self, path: str) -> Optional[Tuple[str, Callable[[Recorded], Reply]]]:
        if path.startswith(("/api/v1/", "/libtv/v1/")):
            return "gateway", lambda rec: libtv.gateway(self, rec)
        if path.startswith("/openapi/"):
            return "direct", lambda rec: libtv.direct(self, rec)
        if path.startswith("/open-apis/"):
            return "feishu", self.feishu.handle
        if path.startswith("/cdn/"):
            return "cdn", lambda rec: cdn_routes.serve(self, rec)
        if path.startswith("/bot"):
            return "telegram", self.telegram.handle
        if path.startswith(("/slack/api/", "/slack/upload/")):
            return "slack", self.slack.handle
        if path.startswith(discord_sim.PREFIX + "/"):
            return "discord", self.discord.handle
        if path.startswith(wecom_sim.PREFIX + "/"):
            return "wecom", self.wecom.handle
        return None
