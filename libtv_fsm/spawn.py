"""Start the background waiter as a detached process that outlives the command and the agent's turn."""
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
    child_env = dict(env if env is not None else os.environ)
    child_env["NEXU_HOME"] = str(home)
    child_env["PYTHONPATH"] = os.pathsep.join(_import_path() + [p for p in [child_env.get("PYTHONPATH")] if p])
    child_env.setdefault("PYTHONIOENCODING", "utf-8")
    log_path = waiter_log_path(home, session_id)
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
            [sys.executable, "-m", "libtv_fsm", "wait-and-deliver", "--session-id", session_id],
            stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, env=child_env, cwd=str(home), close_fds=True, **kwargs,
        )
    finally:
        os.close(fd)
    return proc.pid
