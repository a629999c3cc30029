"""Where a channel's credentials come from: the environment, else OpenClaw's openclaw.json (accounts, SecretRefs)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

import attrs

from libtv_fsm import errors


@attrs.frozen
class BotToken:
    """A bot token and the API base it belongs to; the token never shows in a repr."""

    token: str = attrs.field(repr=False)
    api_url: str
    source: str


def bot_token(env: Mapping[str, str], var: str, channel: str, key: str, missing: str) -> Tuple[str, str]:
    """(token, where it came from): ``var`` of the environment, else ``channels.<channel>.<key>`` of openclaw.json.

    ``where`` is "environment" for ``var``; ``missing`` starts the ConfigError when neither holds one.
    """
    token = (env.get(var) or "").strip()
    if token:
        return token, "environment"

    def read(account: Mapping[str, Any], where: str) -> Optional[str]:
        return resolve_secret(account.get(key), env, f"{where} {key}") or None

    try:
        found, where, _ = pick_account(env, channel, read)
    except errors.ConfigError as err:
        raise errors.ConfigError(f"{missing}; {err}") from None
    return found, where


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


T = TypeVar("T")


def pick_account(env: Mapping[str, str], channel: str,
                 read: Callable[[Mapping[str, Any], str], Optional[T]]) -> Tuple[T, str, Mapping[str, Any]]:
    """The credentials of ``channels.<channel>`` in openclaw.json: (what ``read`` made of them, where, account).

    ``read(account, where)`` returns None when an account has no credentials. The channel's own
    keys are its `default` account (OpenClaw moves them to ``accounts.default`` when a second
    account is added); ``defaultAccount`` picks one by id, else the first enabled account with
    credentials wins. ConfigError, naming the file, when nothing usable is there.
    """
    path, section = channel_section(env, channel)
    if path is None:
        raise errors.ConfigError(f"openclaw.json not found (looked for: {default_path_hint(env)})")
    if is_disabled(section):
        raise errors.ConfigError(f"channels.{channel} is disabled (enabled: false) in {path}")
    accounts = list(iter_accounts(section))
    if "default" not in dict(accounts):
        accounts.insert(0, ("default", section))
    default = section.get("defaultAccount")
    for key, account in accounts:
        if default and key != str(default):
            continue
        where = f"{path} (channels.{channel}" + (")" if account is section else f", account '{key}')")
        if is_disabled(account):
            if default:
                raise errors.ConfigError(f"{channel} defaultAccount '{key}' is disabled in {path}")
            continue
        found = read(account, where)
        if found is not None:
            return found, where, account
        if default:
            raise errors.ConfigError(f"{channel} defaultAccount '{key}' in {path} has no credentials")
    if default:
        raise errors.ConfigError(f"{channel} defaultAccount '{default}' is not among channels.{channel}.accounts in {path}")
    raise errors.ConfigError(f"no enabled account with credentials under channels.{channel} in {path}")


def override_url(env: Mapping[str, str], var: str, fallback: str) -> str:
    """A base URL from ``var`` (the simulator's way in), else ``fallback``; http(s) only, no trailing slash."""
    value = (env.get(var) or "").strip() or fallback
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise errors.ConfigError(f"{var}: '{value[:100]}' is not an http(s) URL")
    return value.rstrip("/")


__all__ = [
    "BotToken", "bot_token", "openclaw_config_candidates", "load_openclaw_config", "channel_section", "iter_accounts",
    "resolve_secret", "is_disabled", "default_path_hint", "pick_account", "override_url",
]
