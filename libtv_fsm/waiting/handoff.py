"""create-session through the running home worker: the client side, and what both sides share. Standard library only.

When the home's worker is up, `create-session` hands it the submission over a Unix socket
under NEXU_HOME instead of importing the HTTP stack itself: the worker runs the same code with
the command's inputs and answers the same JSON line and exit code. One connection, JSON lines:

    client: {"op": "create-session", "proto": 1, "code": <code identity>, "request": <id>,
             "args": {...}, "env": {...}, "home": <absolute NEXU_HOME>, "cwd": <cwd>}
    worker: {"status": "ready"} | {"status": "other-version" | "stopping" | "refused", "reason"}
    client: {"go": <id>}
    worker: {"status": "done", "code": N, "stdout": "..."}

Nothing is sent upstream before the worker reads ``go``, and the client never does the work
itself once it has sent ``go``: so a client that gives up on the worker (no answer, refused, a
worker of another version) before ``go`` submits the request itself, and one that loses the
answer after ``go`` reports that instead of submitting it a second time (the worker wrote its
submit intent before the request, so `recover` finds it either way).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from typing import Any, Dict, Mapping, Optional, Tuple

from libtv_fsm.waiting import homefiles

PROTO = 1
# The variables a submission reads (routing, ratio and hints, the chat, its credentials, the home).
ENV_PREFIXES = ("LIBTV_", "OPENCLAW_", "NEXU_", "FEISHU_", "TELEGRAM_", "SLACK_", "DISCORD_", "WECOM_")
ENV_NAMES = ("HOME", "USERPROFILE")
# Path-valued variables a submission may read, resolved against the command's working directory.
PATH_VARS = ("NEXU_HOME", "OPENCLAW_CONFIG", "OPENCLAW_STATE_DIR", "LIBTV_DOWNLOAD_DIR")
CONNECT_SECONDS = 0.5
READY_SECONDS = 5.0
ANSWER_SECONDS = 330.0      # a submission's own HTTP deadlines (300 s) and some margin
ANSWER_ENV = "LIBTV_WORKER_ANSWER_TIMEOUT"

_identity: Optional[str] = None


def code_identity() -> str:
    """The library version plus a hash of the package's source files: a replaced skill folder differs."""
    global _identity
    if _identity is None:
        import libtv_fsm

        root = os.path.dirname(os.path.abspath(libtv_fsm.__file__))
        digest = hashlib.sha256()
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, root).encode("utf-8", "replace") + b"\0")
                    try:
                        with open(path, "rb") as fh:
                            digest.update(fh.read())
                    except OSError:
                        digest.update(b"?")
        _identity = f"{libtv_fsm.__version__}+{digest.hexdigest()[:16]}"
    return _identity


def home_of(env: Mapping[str, str]) -> str:
    """NEXU_HOME as config.nexu_home resolves it (absolute), without importing config."""
    raw = (env.get("NEXU_HOME") or "").strip()
    return os.path.abspath(os.path.expanduser(raw or "~/.nexu"))


def submission_env(env: Mapping[str, str], cwd: str) -> Dict[str, str]:
    """What the worker needs of the command's environment, path variables made absolute."""
    sent = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}
    for name in PATH_VARS:
        value = sent.get(name, "").strip()
        if value and not value.startswith("~") and not os.path.isabs(value):
            sent[name] = os.path.join(cwd, value)
    return sent


class Outcome:
    """What asking the worker gave: ``answer`` (exit code, stdout) when it did the work, else why not."""

    def __init__(self, answer: Optional[Tuple[int, str]] = None, successor: bool = False, why: str = "") -> None:
        self.answer = answer
        # The worker is leaving (another version, or stopping): the next one must wait for it to let go.
        self.successor = successor
        self.why = why


def read_line(sock: Any, buffer: bytearray, limit: int = 16 << 20) -> Optional[Dict[str, Any]]:
    """The next JSON line from the socket (None at EOF); socket.timeout / OSError pass through."""
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer.extend(chunk)
        if len(buffer) > limit:
            raise ValueError("line too long")
    raw, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    value = json.loads(raw.decode("utf-8"))
    return value if isinstance(value, dict) else None


def send_line(sock: Any, value: Dict[str, Any]) -> None:
    sock.sendall(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")


def create_through_worker(fields: Mapping[str, Any], env: Mapping[str, str], cwd: Optional[str] = None) -> Outcome:
    """Ask the home's running worker (or queue worker) to do this create-session; ``Outcome.answer`` is None when it did not."""
    import socket

    home = home_of(env)
    where = homefiles.socket_path(home, homefiles.socket_name(env))
    if where is None or not os.path.exists(where):
        return Outcome(why="no worker socket")
    cwd = cwd or os.getcwd()
    request = secrets.token_hex(8)
    sent_env = submission_env(env, cwd)
    sent_env["NEXU_HOME"] = home
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    buffer = bytearray()
    try:
        try:
            sock.settimeout(CONNECT_SECONDS)
            sock.connect(where)
            sock.settimeout(READY_SECONDS)
            send_line(sock, {"op": "create-session", "proto": PROTO, "code": code_identity(), "request": request,
                             "args": dict(fields), "env": sent_env, "home": home, "cwd": cwd})
            reply = read_line(sock, buffer)
        except (OSError, ValueError) as err:
            return Outcome(why=f"worker unreachable: {type(err).__name__}")
        status = (reply or {}).get("status")
        if status != "ready":
            return Outcome(successor=status in ("other-version", "stopping"), why=str(status or "no answer"))
        try:
            send_line(sock, {"go": request})
        except OSError as err:
            # Whether "go" arrived is unknown: the worker may be submitting. Never submit a second time.
            return Outcome(answer=lost_answer(request, f"could not confirm ({type(err).__name__})"))
        try:
            raw = env.get(ANSWER_ENV, "").strip()
            sock.settimeout(float(raw) if raw else ANSWER_SECONDS)
        except ValueError:
            sock.settimeout(ANSWER_SECONDS)
        try:
            done = read_line(sock, buffer)
        except (OSError, ValueError) as err:
            return Outcome(answer=lost_answer(request, f"no answer ({type(err).__name__})"))
        if not done or done.get("status") != "done" or not isinstance(done.get("code"), int):
            return Outcome(answer=lost_answer(request, "it stopped before answering"))
        return Outcome(answer=(int(done["code"]), str(done.get("stdout") or "")))
    finally:
        sock.close()


def lost_answer(request: str, why: str) -> Tuple[int, str]:
    """The ❌ line when the worker had the go-ahead but its answer never came: it may have submitted."""
    return 1, (f"❌ The background worker took the request (id {request}) but {why}; it may already be "
               f"generating. Do not send it again: if LibTV got it, the result is delivered by itself, and "
               f"`recover` shows it\n")
