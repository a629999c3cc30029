"""Shared fixtures: a fresh NEXU_HOME per test and a way to run the real CLI as a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import pg  # reads LIBTV_TEST_DATABASE_URL before the autouse fixture below clears LIBTV_ variables

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "libtv_video.py"

# The three ways the same program is started (CONTRACT section 4).
ENTRY_POINTS = {
    "script": [sys.executable, str(SCRIPT)],
    "module": [sys.executable, "-m", "libtv_fsm"],
    "console": [str(Path(sys.executable).with_name("libtv-video"))],
}

# Variables of the developer's shell that must never leak into a test run.
_SCRUB = (
    "LIBTV_", "OPENCLAW_", "FEISHU_", "NEXU_", "TELEGRAM_", "SLACK_", "DISCORD_", "WECOM_",
)


# Every upstream and chat platform on a closed loopback port until a test points it at the simulator.
CLOSED_UPSTREAMS = {
    var: "http://127.0.0.1:9"
    for var in ("LIBTV_GATEWAY_URL", "LIBTV_DIRECT_BASE_URL", "LIBTV_FEISHU_BASE_URL", "LIBTV_TELEGRAM_API_ROOT",
                "LIBTV_SLACK_API_URL", "LIBTV_DISCORD_API_URL", "LIBTV_WECOM_BASE_URL")
}
CLOSED_UPSTREAMS["LIBTV_OPENCLAW_BIN"] = str(ROOT / "tests" / "no-such-openclaw")


class Ran:
    """What one CLI run did."""

    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.code: int = proc.returncode
        self.out: str = proc.stdout
        self.err: str = proc.stderr
        self.lines: List[str] = [line for line in proc.stdout.splitlines() if line.strip()]

    @property
    def last(self) -> str:
        return self.lines[-1] if self.lines else ""

    def json(self) -> Any:
        return json.loads(self.last)

    def __repr__(self) -> str:
        return f"Ran(code={self.code}, out={self.out!r}, err={self.err[-2000:]!r})"


class Cli:
    """Runs the CLI as a real subprocess against one NEXU_HOME."""

    def __init__(self, home: Path, entry: str = "module") -> None:
        self.home = home
        self.entry = entry
        self.env: Dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        # Nothing a test runs may reach a real service: every upstream defaults to a closed
        # loopback port until a test points it at the simulator.
        self.env.update(CLOSED_UPSTREAMS)
        self.env["NEXU_HOME"] = str(home)
        self.env["LIBTV_DOWNLOAD_DIR"] = str(home / "downloads")
        self.env["PYTHONUNBUFFERED"] = "1"
        # A home worker that create-session or recover starts leaves soon after its last session.
        self.env["LIBTV_WORKER_IDLE_EXIT"] = "2"

    def __call__(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60,
                 cwd: Optional[Path] = None, input: Optional[str] = None) -> Ran:
        full_env = dict(self.env)
        full_env.update(env or {})
        proc = subprocess.run(
            ENTRY_POINTS[self.entry] + [str(a) for a in args],
            env=full_env, capture_output=True, text=True, timeout=timeout,
            cwd=str(cwd or self.home), input=input if input is not None else "",
            encoding="utf-8",
        )
        return Ran(proc)


# Polling fast enough that a test sees a session move within a second.
FAST_POLLING = {"LIBTV_POLL_INTERVAL_SECONDS": "0.05", "LIBTV_MAX_POLL_INTERVAL_SECONDS": "0.2"}


def point_at_sim(cli: Cli, sim: Any, env: Optional[Dict[str, str]] = None, key: Optional[str] = None) -> Cli:
    """``cli`` pointed at the simulator, polling fast, with ``env`` on top; `setup` with a gateway key has run."""
    cli.env.update(sim.env())
    cli.env.update(FAST_POLLING)
    cli.env.update(env or {})
    ran = cli("setup", "--api-key", key or sim.GATEWAY_KEY)
    assert ran.code == 0, ran
    return cli


@pytest.fixture(autouse=True)
def no_real_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process code, too, sees every upstream on a closed loopback port unless a test says otherwise."""
    for name in list(os.environ):
        if name.startswith(_SCRUB):
            monkeypatch.delenv(name)
    for var, value in CLOSED_UPSTREAMS.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("NEXU_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "libtv-fsm-tests-nexu-unused"))


def _stop_workers_under(folder: Path) -> None:
    """SIGKILL every home worker a test left running under ``folder`` (found by the pid file each writes)."""
    import signal

    for pid_file in folder.rglob("libtv-worker*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError):
            continue
        if b"libtv_fsm" in cmdline and b"worker" in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(autouse=True)
def no_worker_left(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """No home worker outlives the test that started it (each exits when idle; this catches a failed test's)."""
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if isinstance(tmp, Path) and tmp.exists():
        _stop_workers_under(tmp)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty NEXU_HOME folder."""
    h = tmp_path / "nexu"
    h.mkdir()
    return h


@pytest.fixture
def cli(home: Path) -> Cli:
    """The CLI (`python -m libtv_fsm`) bound to the test's NEXU_HOME."""
    return Cli(home)


@pytest.fixture(params=sorted(ENTRY_POINTS))
def any_cli(request: pytest.FixtureRequest, home: Path) -> Cli:
    """The CLI through each of its three entry points in turn."""
    if request.param == "console" and not Path(ENTRY_POINTS["console"][0]).exists() and not shutil.which("libtv-video"):
        pytest.skip("console script not installed")
    return Cli(home, request.param)


@pytest.fixture
def sim():  # type: ignore[no-untyped-def]
    """A started loopback Simulator of every upstream (gateway, direct API, Feishu, CDN); stopped after the test."""
    from libtv_fsm.sim import Simulator

    with Simulator() as s:
        yield s
    assert not s.errors, "the simulator itself failed on a request:\n" + "\n".join(s.errors)


def legacy_sessions(chat_id: str) -> List[Dict[str, Any]]:
    """A `libtv-sessions.json` as the earlier stdlib skill wrote it: one session of each legacy status."""
    return [
        {"session_id": "old-delivered", "project_uuid": "p1", "status": "completed", "submitted_text": "a cat",
         "auth_mode": "nexu_gateway", "delivery": {"channel": "feishu", "chat_id": chat_id},
         "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:05:00Z",
         "result_urls": ["https://libtv-res.liblib.art/claw/a.mp4"], "completed_at": "2026-01-01T00:04:00Z",
         "delivered_at": "2026-01-01T00:05:00Z"},
        {"session_id": "old-completed", "project_uuid": "p2", "status": "completed", "submitted_text": "a dog",
         "auth_mode": "libtv_direct", "delivery": {}, "created_at": "2026-01-02T00:00:00Z",
         "updated_at": "2026-01-02T00:03:00Z", "result_urls": ["https://libtv-res.liblib.art/sd-gen-save-img/b.png"],
         "completed_at": "2026-01-02T00:03:00Z"},
        {"session_id": "old-failed", "project_uuid": "p3", "status": "failed", "submitted_text": "a fox",
         "auth_mode": "nexu_gateway", "delivery": {}, "created_at": "2026-01-03T00:00:00Z",
         "updated_at": "2026-01-03T00:01:00Z", "failure_message": "Content policy violation"},
        {"session_id": "old-timeout", "project_uuid": "p4", "status": "timeout", "submitted_text": "an owl",
         "auth_mode": "nexu_gateway", "delivery": {}, "created_at": "2026-01-04T00:00:00Z",
         "updated_at": "2026-01-04T01:00:00Z"},
    ]


# -- the journal's two stores: the same contract tests run against each ----------------------------


@pytest.fixture
def pg_url():  # type: ignore[no-untyped-def]
    """A postgresql:// URL on a fresh schema of the test database (skips without one, except in CI)."""
    yield from pg.fresh_schema()


class StoreKind:
    """One of the journal's stores, for a test parametrized over both: where it lives, and how to open it."""

    def __init__(self, name: str, home: Path, url: Optional[str]) -> None:
        self.name = name
        self.home = home
        self.url = url
        # What a subprocess is given to open the same store (tests/peer scripts: `open_store(spec)`).
        self.spec = url or str(home)

    def journal(self) -> Any:
        """A new journal object on the same storage (as another process would open it)."""
        from libtv_fsm.journal import JsonlJournal, open_journal

        return open_journal(self.url) if self.url else JsonlJournal(self.home)

    def store(self, **kwargs: Any) -> Any:
        from libtv_fsm.store import SessionStore

        return SessionStore(self.home, journal=self.journal(), **kwargs) if self.url else SessionStore(self.home, **kwargs)


OPEN_STORE = (
    "def open_store(spec):\n"
    "    from libtv_fsm.store import SessionStore\n"
    "    return SessionStore.from_url(spec) if spec.startswith('postgresql') else SessionStore(spec)\n"
)


@pytest.fixture(params=["jsonl", "postgres"])
def kind(request: pytest.FixtureRequest, home: Path):  # type: ignore[no-untyped-def]
    """The JSONL store of ``home``, then a PostgreSQL journal on a fresh schema (with ``home`` for the rest)."""
    if request.param == "jsonl":
        yield StoreKind("jsonl", home, None)
        return
    for url in pg.fresh_schema():
        yield StoreKind("postgres", home, url)
