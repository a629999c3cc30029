"""The `openclaw` delegate: hand a file or a text to `openclaw message send`, for any channel OpenClaw runs."""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import requests

from libtv_fsm import errors
from libtv_fsm.channels.base import MB, Channel, SendInDoubt, TooLarge, scrub

log = logging.getLogger(__name__)

# Uploading a large video through a chat platform can take a while; past this the send is in doubt.
# LIBTV_OPENCLAW_TIMEOUT_SECONDS overrides it.
SEND_TIMEOUT_SECONDS = 300.0
_VARIANT = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# How a platform's size refusal reads in OpenClaw's error text ("Media exceeds 16MB limit", "file too large").
_TOO_LARGE = re.compile(r"too (large|big)|exceeds? .{0,20}(limit|size|MB)|size limit|file size|\b413\b", re.I)
MAX_TEXT = 4000


def openclaw_binary(env: Mapping[str, str]) -> Optional[str]:
    """The `openclaw` command: LIBTV_OPENCLAW_BIN (a path or a name), else `openclaw` on PATH."""
    wanted = (env.get("LIBTV_OPENCLAW_BIN") or "").strip() or "openclaw"
    return shutil.which(wanted, path=env.get("PATH")) or (wanted if Path(wanted).is_file() else None)


def last_json(stdout: str) -> Optional[Dict[str, Any]]:
    """The JSON object the command printed (logs may come before it): the whole output, else its last object line."""
    text = stdout.strip()
    candidates = [text] + [line.strip() for line in reversed(text.splitlines())]
    for candidate in candidates:
        if candidate.startswith("{"):
            try:
                doc = json.loads(candidate)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
    return None


class OpenClawChannel(Channel):
    """Delivers through the running OpenClaw's own channel `<name>` (`--channel openclaw:<name>`)."""

    name = "openclaw"
    dedupes = False  # `openclaw message send` has no idempotency key: the waiter journals and resends at most once
    max_video_bytes = 50 * MB
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
        return self._run(target, ["--media", str(path)], "video")

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        return self._run(target, ["--media", str(path)], "image")

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
                                  timeout=timeout, env=dict(self.env), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SendInDoubt(f"openclaw message send ({self.variant}) did not answer within "
                              f"{timeout:g} s; the {kind} may have been sent") from None
        except OSError as err:
            raise errors.PermanentError(f"openclaw message send ({self.variant}) could not start: "
                                        f"{err.strerror or type(err).__name__}") from None
        doc = last_json(done.stdout)
        if done.returncode == 0 and (doc is None or doc.get("ok") is not False):
            if doc is None:
                log.warning("openclaw: exit 0 without a JSON answer; taking the %s as sent", kind)
            found = _message_id(doc or {})
            log.info("openclaw: sent %s via %s to %s (%s)", kind, self.variant, target, found)
            return found
        if done.returncode < 0:  # killed by a signal mid-send: nobody knows whether it went out
            raise SendInDoubt(f"openclaw message send ({self.variant}) was killed (signal {-done.returncode})")
        lines = (done.stderr or done.stdout).strip().splitlines()
        error = _error_text(doc) or (lines[-1] if lines else f"exit {done.returncode}")
        text = f"openclaw message send ({self.variant}) failed: {scrub(error)}"
        if kind != "text" and _TOO_LARGE.search(error):
            raise TooLarge(text)
        raise errors.PermanentError(text, code=str(done.returncode))

    def _timeout(self) -> float:
        raw = (self.env.get("LIBTV_OPENCLAW_TIMEOUT_SECONDS") or "").strip()
        try:
            value = float(raw) if raw else SEND_TIMEOUT_SECONDS
        except ValueError:
            raise errors.InputError(f"LIBTV_OPENCLAW_TIMEOUT_SECONDS must be a number, got {raw[:20]!r}") from None
        return value if value > 0 else SEND_TIMEOUT_SECONDS


def _message_id(doc: Mapping[str, Any]) -> str:
    for holder in (doc, doc.get("result"), doc.get("payload")):
        if isinstance(holder, dict):
            for key in ("messageId", "message_id", "id"):
                if isinstance(holder.get(key), (str, int)) and str(holder[key]):
                    return str(holder[key])
    return "openclaw"


def _error_text(doc: Optional[Mapping[str, Any]]) -> str:
    if not doc:
        return ""
    error = doc.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code")
    return str(error or "").strip()


__all__ = ["OpenClawChannel", "openclaw_binary", "last_json"]
