"""The `openclaw` delegate: hand a file or a text to `openclaw message send`, for any channel OpenClaw runs."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import requests

from libtv_fsm import errors
from libtv_fsm.channels.base import MB, Channel, FileRefused, SendInDoubt, TooLarge, scrub

log = logging.getLogger(__name__)

# Uploading a large video through a chat platform can take a while; past this the send is in doubt.
# LIBTV_OPENCLAW_TIMEOUT_SECONDS overrides it.
SEND_TIMEOUT_SECONDS = 300.0
_VARIANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_TEXT = 4000

# The environment `openclaw` gets: what finds the program, its home and its gateway, and the locale.
# Nothing else: other channels' variables (FEISHU_APP_SECRET, TELEGRAM_BOT_TOKEN, ...) make OpenClaw
# treat those plugins as configured (sends took 10-40 s, and it tried to install plugins), and they
# are secrets it has no business seeing.
_PASSED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "LANG", "LANGUAGE",
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
    "NODE_EXTRA_CA_CERTS", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
})
_PASSED_PREFIXES = ("OPENCLAW_", "LC_")

# How `openclaw message send` says why a send failed (`<Kind>: ...`, CONTRACT section 7):
# - the CLI never reached the gateway: nothing was sent, try again later (but a connection error inside
#   an OutboundDeliveryError is the gateway's own, towards the platform: that send stays in its queue);
_NOT_REACHED = re.compile(r"gateway not reachable|\b(ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ENETUNREACH)\b", re.I)
_QUEUED = re.compile(r"^OutboundDeliveryError\b")
# - the gateway may not read the file, or it is over the media cap (24 MiB unless mediaMaxMb): a link instead;
_TOO_LARGE = re.compile(r"exceeds? (the )?(limit|size|\d)|too (large|big)|size limit|\b413\b", re.I)
_REFUSED_FILE = re.compile(r"^(LocalMediaAccessError|FsSafeError|MediaReferenceError)\b")
# - the platform refused the message itself: sending it again changes nothing;
_PERMANENT = re.compile(r"could not be resolved|chat not found|not found|forbidden|unauthorized|blocked|"
                        r"\b(400|401|403|404)\b", re.I)
# - the gateway tried and failed (its 3 tries at a 429, a 5xx, a timeout): it keeps the send in its
#   outbound queue and may still deliver it, so the outcome is in doubt.
_IN_DOUBT = re.compile(r"\b(429|5\d\d)\b|too many requests|timed? ?out|ETIMEDOUT|"
                       r"ECONNRESET|socket hang up|fetch failed", re.I)


def openclaw_binary(env: Mapping[str, str]) -> Optional[str]:
    """The `openclaw` command: LIBTV_OPENCLAW_BIN (a path or a name), else `openclaw` on PATH."""
    wanted = (env.get("LIBTV_OPENCLAW_BIN") or "").strip() or "openclaw"
    return shutil.which(wanted, path=env.get("PATH")) or (wanted if Path(wanted).is_file() else None)


def child_env(env: Mapping[str, str]) -> Dict[str, str]:
    """The variables of ``env`` that `openclaw` needs (see _PASSED); no other channel's credentials."""
    return {k: v for k, v in env.items() if k in _PASSED or k.startswith(_PASSED_PREFIXES)}


def _expand_home(raw: str, home: Path) -> Path:
    if raw == "~" or raw.startswith("~/"):
        return home / raw[2:]
    return Path(raw)


def state_dir(env: Mapping[str, str]) -> Path:
    """OpenClaw's state folder, found as OpenClaw finds it.

    OPENCLAW_STATE_DIR, else `<home>/.openclaw` (`<home>/.clawdbot` when only that legacy one
    exists), where home is OPENCLAW_HOME, else HOME.
    """
    os_home = Path(env.get("HOME") or os.path.expanduser("~"))
    raw_home = (env.get("OPENCLAW_HOME") or "").strip()
    home = _expand_home(raw_home, os_home) if raw_home else os_home
    override = (env.get("OPENCLAW_STATE_DIR") or "").strip()
    if override:
        return _expand_home(override, home).absolute()
    new, legacy = home / ".openclaw", home / ".clawdbot"
    return legacy if not new.exists() and legacy.exists() else new


def media_root(env: Mapping[str, str]) -> Path:
    """A folder the gateway reads local media from: `<state dir>/media`, else OpenClaw's temp root.

    The temp root is `/tmp/openclaw` when it is missing or a folder of ours that nobody else may
    write to (OpenClaw's own rule), else `<tmp>/openclaw-<uid>`.
    """
    state = state_dir(env)
    if state.is_dir():
        return state / "media"
    preferred = Path("/tmp/openclaw")
    try:
        info = preferred.lstat()
    except FileNotFoundError:
        return preferred
    except OSError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return preferred
    return Path(tempfile.gettempdir()) / f"openclaw-{os.getuid()}"


@contextmanager
def staged(path: Path, name: str, env: Mapping[str, str]) -> Iterator[Path]:
    """A copy of ``path`` called ``name`` inside the gateway's media root, removed when the send is settled.

    The gateway reads `--media` itself and refuses a path outside its media roots
    (LocalMediaAccessError); the chat shows the file under its base name. A copy, not a hard link:
    OpenClaw's safe-file reads refuse hard-linked files in places.

    Removed as soon as `openclaw message send` returns, whatever it answered: a send the gateway
    queues for a retry is queued with its own copy (`<state>/delivery-queue-media/`), and were some
    version to read ours later instead, a missing file would fail that retry rather than show the
    result again after the waiter's own resend: at most two sends stays true either way.
    """
    root = media_root(env)
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="libtv-", dir=str(root)))
    except OSError as err:
        raise FileRefused(f"OpenClaw's media folder {root} cannot be written: {err.strerror or type(err).__name__}",
                          reason="OpenClaw's media folder cannot be written") from None
    try:
        copy = folder / name
        try:
            shutil.copyfile(path, copy)
        except OSError as err:  # a full disk, a read-only media folder: the link goes instead
            raise FileRefused(f"The result could not be copied into OpenClaw's media folder {root}: "
                              f"{err.strerror or type(err).__name__}",
                              reason="the copy into OpenClaw's media folder failed") from None
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def last_json(stdout: str) -> Optional[Dict[str, Any]]:
    """The last JSON object the command printed: one line or pretty-printed, after any log lines.

    An object starts on a line of its own at column 0 (nested ones are indented).
    """
    lines = stdout.splitlines()
    decoder = json.JSONDecoder()
    for index in range(len(lines) - 1, -1, -1):
        if not lines[index].startswith("{"):
            continue
        try:
            doc, _ = decoder.raw_decode("\n".join(lines[index:]))
        except ValueError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


class OpenClawChannel(Channel):
    """Delivers through the running OpenClaw's own channel `<name>` (`--channel openclaw:<name>`)."""

    name = "openclaw"
    dedupes = False  # `openclaw message send` has no idempotency key: the waiter journals and resends at most once
    max_video_bytes = 50 * MB  # OpenClaw's own cap (24 MiB unless mediaMaxMb) answers for itself: a link then
    max_image_bytes = 10 * MB

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None) -> None:
        super().__init__(env, session)  # the sub-channel is ours to take, not the base class's to refuse
        if not variant:
            raise errors.InputError("The openclaw channel sends through one of OpenClaw's channels: "
                                    "use --channel openclaw:<name>, e.g. openclaw:whatsapp")
        if not _VARIANT.match(variant):
            raise errors.InputError(f"Invalid OpenClaw channel name '{variant[:40]}'")
        self.variant = variant

    def check_ready(self) -> None:
        if openclaw_binary(self.env) is None:
            raise errors.ConfigError("The openclaw command was not found on PATH (set LIBTV_OPENCLAW_BIN to its path); "
                                     f"it is needed to send through openclaw:{self.variant}")

    def normalize_target(self, chat_id: str) -> str:
        # OpenClaw reads its own target forms (channel:<id>, user:<id>, +E.164, ...): passed on as given.
        raw = (chat_id or "").strip()
        if raw.lower().startswith("openclaw:"):
            raw = raw[len("openclaw:"):].strip()
        if not raw or len(raw) > 256 or any(ord(c) < 32 for c in raw):
            raise errors.InputError(f"Invalid OpenClaw target '{raw[:60]}': expected the target as OpenClaw wrote it")
        return raw

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        with staged(path, file_name or path.name, self.env) as copy:
            return self._run(target, ["--media", str(copy)], "video")

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        with staged(path, path.name, self.env) as copy:
            return self._run(target, ["--media", str(copy)], "image")

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        return self._run(target, ["--message", text[:MAX_TEXT]], "text")

    def _run(self, target: str, what: List[str], kind: str) -> str:
        binary = openclaw_binary(self.env)
        if binary is None:
            raise errors.ConfigError("The openclaw command was not found (set LIBTV_OPENCLAW_BIN)")
        command = [binary, "message", "send", "--channel", self.variant, "--target", self.normalize_target(target),
                   *what, "--json"]
        timeout = self._timeout()
        try:
            done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", errors="replace",
                                  timeout=timeout, env=child_env(self.env), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SendInDoubt(f"openclaw message send ({self.variant}) did not answer within "
                              f"{timeout:g} s; the {kind} may have been sent") from None
        except OSError as err:
            raise errors.PermanentError(f"openclaw message send ({self.variant}) could not start: "
                                        f"{err.strerror or type(err).__name__}") from None
        doc = last_json(done.stdout) or last_json(done.stderr)
        if done.returncode == 0 and not _refused(doc):
            if doc is None:
                log.warning("openclaw: exit 0 without a JSON answer; taking the %s as sent", kind)
            found = _message_id(doc or {})
            log.info("openclaw: sent %s via %s to %s (%s)", kind, self.variant, target, found)
            return found
        if done.returncode < 0:  # killed by a signal mid-send: nobody knows whether it went out
            raise SendInDoubt(f"openclaw message send ({self.variant}) was killed (signal {-done.returncode})")
        reason = _error_text(doc) or _reason_line(done.stderr) or _last_line(done.stderr or done.stdout) \
            or f"exit {done.returncode}"
        raise _failure(f"openclaw message send ({self.variant}) failed: {scrub(reason)}", reason, kind,
                       done.returncode)

    def _timeout(self) -> float:
        from libtv_fsm.config import env_number

        value = env_number(self.env, "LIBTV_OPENCLAW_TIMEOUT_SECONDS", SEND_TIMEOUT_SECONDS)
        return value if value > 0 else SEND_TIMEOUT_SECONDS


def _failure(text: str, reason: str, kind: str, exit_code: int) -> errors.LibtvError:
    """The error a failed send is, by what OpenClaw said (CONTRACT section 7)."""
    reason = reason.strip()
    if _NOT_REACHED.search(reason) and not _QUEUED.match(reason):
        return errors.UnavailableError(text + " (nothing was sent)", code=str(exit_code))
    if kind != "text" and (_REFUSED_FILE.match(reason) or _TOO_LARGE.search(reason)):
        if _TOO_LARGE.search(reason):
            return TooLarge(text, reason="over OpenClaw's media size limit", code=str(exit_code))
        return FileRefused(text, reason="OpenClaw could not read the file", code=str(exit_code))
    if _PERMANENT.search(reason):
        return errors.PermanentError(text, code=str(exit_code))
    if _QUEUED.match(reason) or _IN_DOUBT.search(reason):
        return SendInDoubt(text + "; the gateway may still deliver it from its queue")
    return errors.PermanentError(text, code=str(exit_code))


def _refused(doc: Optional[Mapping[str, Any]]) -> bool:
    """An answer that says the send failed although the command exited 0."""
    if doc is None:
        return False
    payload = doc.get("payload")
    return doc.get("ok") is False or (isinstance(payload, dict) and payload.get("ok") is False)


def _message_id(doc: Mapping[str, Any]) -> str:
    for holder in (doc, doc.get("payload"), doc.get("result")):
        if isinstance(holder, dict):
            for key in ("messageId", "message_id", "id"):
                if isinstance(holder.get(key), (str, int)) and str(holder[key]):
                    return str(holder[key])
    return "openclaw"


def _error_text(doc: Optional[Mapping[str, Any]]) -> str:
    if not doc:
        return ""
    error = doc.get("error")
    if error is None and isinstance(doc.get("payload"), dict):
        error = doc["payload"].get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    return str(error or "").strip()


def _reason_line(stderr: str) -> str:
    # `[openclaw] Reason: <Kind>: ...` on stderr when there is no JSON answer.
    for line in (stderr or "").splitlines():
        if line.startswith("[openclaw] Reason:"):
            return line[len("[openclaw] Reason:"):].strip()
    return ""


def _last_line(text: str) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


__all__ = ["OpenClawChannel", "openclaw_binary", "last_json", "child_env", "state_dir", "media_root", "staged"]
