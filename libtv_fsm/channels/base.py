"""The chat channel interface every platform implements, and the openclaw.json lookup they share."""
from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple

import requests

from libtv_fsm import errors

MB = 1024 * 1024


class PermissionDenied(errors.PermanentError):
    """The platform app lacks a permission (Feishu 99991672); ``grant_link`` lets an admin grant it."""

    def __init__(self, message: str, *, grant_link: Optional[str] = None,
                 status: Optional[int] = None, code: Optional[str] = None) -> None:
        super().__init__(message, status=status, code=code)
        self.grant_link = grant_link


class TooLarge(errors.PermanentError):
    """The platform refused a file for its size; the delivery step sends the URL instead."""


class Channel(ABC):
    """One chat platform: send a video, an image or a text to one target.

    Instances are cheap; credentials are read on first use (``check_ready`` reads them early so a
    submit can refuse at once). ``dedupes`` tells the waiter whether a retried send with the same
    ``dedupe_key`` is dropped by the platform (then a resend after a crash is safe) or whether it
    must journal the attempt and reconcile it (``find_sent``) before sending again.
    """

    name: ClassVar[str]
    dedupes: ClassVar[bool]
    max_video_bytes: ClassVar[int]
    max_image_bytes: ClassVar[int]

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None) -> None:
        if variant:
            # Only a delegating channel (openclaw:<ch>) takes a sub-name; others refuse it.
            raise errors.InputError(f"Channel '{self.name}' takes no sub-channel (got '{self.name}:{variant}')")
        self.env: Mapping[str, str] = env
        if session is None:
            from libtv_fsm.transport import new_session

            session = new_session()
        self.http: requests.Session = session

    @abstractmethod
    def normalize_target(self, chat_id: str) -> str:
        """The platform's own id for a target as the agent passed it; InputError on junk. Idempotent."""

    @abstractmethod
    def check_ready(self) -> None:
        """Raise ConfigError with a clear message when credentials are missing or unusable."""

    @abstractmethod
    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        """Upload and send a video file; returns the platform's message id."""

    @abstractmethod
    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        """Upload and send an image file; returns the platform's message id."""

    @abstractmethod
    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        """Send a plain text message; returns the platform's message id."""

    def find_sent(self, target: str, dedupe_key: str) -> Optional[str]:
        """The message id of an earlier send with this key, where the platform can tell; else None.

        Only channels that do not de-duplicate (Slack: the channel's recent files) override this.
        """
        return None


# ---- openclaw.json: where OpenClaw keeps every channel's credentials ----

def openclaw_config_candidates(env: Mapping[str, str]) -> List[Path]:
    """The places openclaw.json may be, in the order CONTRACT section 2 gives."""
    found: List[Path] = []
    if env.get("OPENCLAW_CONFIG"):
        found.append(Path(env["OPENCLAW_CONFIG"]).expanduser())
    if env.get("OPENCLAW_STATE_DIR"):
        found.append(Path(env["OPENCLAW_STATE_DIR"]).expanduser() / "openclaw.json")
    from libtv_fsm.config import nexu_home

    found.append(nexu_home(env) / "runtime" / "openclaw" / "state" / "openclaw.json")
    return found


def load_openclaw_config(env: Mapping[str, str]) -> Tuple[Optional[Path], Dict[str, Any]]:
    """The first openclaw.json that exists, parsed; (None, {}) when there is none."""
    for path in openclaw_config_candidates(env):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as err:
            raise errors.ConfigError(f"Cannot read {path}: {err.strerror or err}") from None
        try:
            data = json.loads(text)
        except ValueError:
            # OpenClaw's own file format is JSON5; hand-edited files carry comments and trailing commas.
            try:
                data = json.loads(_strip_json5(text))
            except ValueError as err:
                raise errors.ConfigError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise errors.ConfigError(f"{path} does not hold a JSON object")
        return path, data
    return None, {}


def _strip_json5(text: str) -> str:
    """Drop // and /* */ comments and trailing commas outside strings (enough for config files)."""
    out: List[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            chunk = text[i:j + 1]
            if c == "'":  # a JSON5 single-quoted string, rewritten as a JSON one
                chunk = '"' + re.sub(r'(?<!\\)"', '\\"', chunk[1:-1].replace("\\'", "'")) + '"'
            out.append(chunk)
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "]}":
                i += 1
                continue
            out.append(c)
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def channel_section(env: Mapping[str, str], name: str) -> Tuple[Optional[Path], Dict[str, Any]]:
    """``channels.<name>`` of openclaw.json (path, section); an empty section when absent."""
    path, data = load_openclaw_config(env)
    channels = data.get("channels")
    section = channels.get(name) if isinstance(channels, dict) else None
    return path, section if isinstance(section, dict) else {}


def iter_accounts(section: Mapping[str, Any]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(account id, account) pairs in file order: ``accounts`` as a map, or an older list."""
    accounts = section.get("accounts")
    if isinstance(accounts, dict):
        for key, value in accounts.items():
            if isinstance(value, dict):
                yield str(key), value
    elif isinstance(accounts, list):
        for index, value in enumerate(accounts):
            if isinstance(value, dict):
                yield str(value.get("id") or value.get("accountId") or index), value


def resolve_secret(value: Any, env: Mapping[str, str], where: str) -> str:
    """A credential as a plain string: itself, or an ``env`` SecretRef resolved; other sources refused."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        source = value.get("source")
        if source == "env":
            var = str(value.get("id") or "")
            return env.get(var, "").strip() if var else ""
        raise errors.ConfigError(
            f"{where} is a SecretRef with source '{source}', which this tool cannot read; "
            "use an 'env' SecretRef or set the credential in the environment")
    raise errors.ConfigError(f"{where} must be a string or a SecretRef object")


def is_disabled(account: Mapping[str, Any]) -> bool:
    """True only for an explicit ``enabled: false`` (a missing flag means enabled)."""
    return account.get("enabled") is False


def default_path_hint(env: Mapping[str, str]) -> str:
    """The openclaw.json locations, for a 'credentials not found' message."""
    return ", ".join(str(p) for p in openclaw_config_candidates(env))


__all__ = [
    "Channel", "PermissionDenied", "TooLarge", "MB", "channel_section", "iter_accounts",
    "resolve_secret", "load_openclaw_config", "openclaw_config_candidates", "is_disabled",
    "default_path_hint",
]
