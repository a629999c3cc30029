"""Start the background waiter (the home worker, or one `wait-and-deliver`) detached: it outlives the command and the turn."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import libtv_fsm


def waiter_log_path(home: Path, session_id: str) -> Path:
    return Path(home) / f"libtv-waiter-{session_id}.log"


def _import_path() -> List[str]:
    """Where this package (and a skill folder's vendor/) live, so the child imports the same code."""
    package_parent = Path(libtv_fsm.__file__).resolve().parent.parent
    paths = [str(package_parent)]
    vendor = package_parent / "vendor"
    if vendor.is_dir():
        paths.insert(0, str(vendor))
    return paths


def spawn_waiter(home: Path, session_id: str, env: Optional[Mapping[str, str]] = None) -> int:
    """Start `wait-and-deliver --session-id S` detached, output to its log; returns the pid."""
    return _detached(home, ["wait-and-deliver", "--session-id", session_id], waiter_log_path(home, session_id), env)


def spawn_worker(home: Path, env: Optional[Mapping[str, str]] = None, await_lock: float = 0.0) -> int:
    """Start the home worker (`libtv-video worker`) detached; its stray output goes to libtv-worker.log."""
    from libtv_fsm.waiting.homefiles import LOG_NAME

    args = ["worker"] + (["--await-lock", f"{await_lock:g}"] if await_lock > 0 else [])
    return _detached(home, args, Path(home) / LOG_NAME, env)


def start_background(home: Path, env: Optional[Mapping[str, str]] = None, retry: bool = False) -> None:
    """After a submit or a resume: wake the running home worker, or start one when none is alive.

    ``retry`` (recover): the running worker also tries again the sessions it gave up on.
    """
    from libtv_fsm.waiting import homefiles

    if retry:
        homefiles.wake(str(home), homefiles.RETRY_NAME)
    homefiles.wake(str(home))  # first: a worker that is leaving rescans after letting go of its lock
    if homefiles.worker_alive(str(home)) is not True:
        spawn_worker(home, env)  # where the lock cannot be probed, a second worker exits 0 at once


def _detached(home: Path, args: List[str], log_path: Path, env: Optional[Mapping[str, str]]) -> int:
    child_env = dict(env if env is not None else os.environ)
    child_env["NEXU_HOME"] = str(home)
    child_env["PYTHONPATH"] = os.pathsep.join(_import_path() + [p for p in [child_env.get("PYTHONPATH")] if p])
    child_env.setdefault("PYTHONIOENCODING", "utf-8")
    Path(home).mkdir(parents=True, exist_ok=True)
    kwargs: Dict[str, Any] = {}
    if os.name == "nt":
        flags = getattr(subprocess, "DETACHED_PROCESS", 0x8) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)
        kwargs["creationflags"] = flags | getattr(subprocess, "CREATE_NO_WINDOW", 0)
    else:
        kwargs["start_new_session"] = True  # its own session: no SIGHUP when the agent's shell ends
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "libtv_fsm", *args],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=child_env, cwd=str(home), close_fds=True, **kwargs,
        )
    finally:
        os.close(fd)
    return proc.pid
