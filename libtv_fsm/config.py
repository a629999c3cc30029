"""The local configuration (`$NEXU_HOME/libtv.json`), key routing, and the hints added to a relayed message."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import attr

from libtv_fsm.errors import ConfigError, InputError

CONFIG_NAME = "libtv.json"
DEFAULT_RATIO = "16:9"

NEXU_GATEWAY = "nexu_gateway"
LIBTV_DIRECT = "libtv_direct"

# (key prefix, auth mode, default base URL, override env var) — CONTRACT section 1.
_ROUTES = (
    ("mgk_", NEXU_GATEWAY, "https://seedance.nexu.io/", "LIBTV_GATEWAY_URL"),
    ("sk-libtv-", LIBTV_DIRECT, "https://im.liblib.tv", "LIBTV_DIRECT_BASE_URL"),
)

# The key goes into an HTTP header: anything but visible ASCII could split or corrupt it.
_KEY_BODY = re.compile(r"[\x21-\x7e]+")
_RATIO = re.compile(r"([0-9]{1,2}):([0-9]{1,2})")
# The contract's test for "the message already names a ratio".
_NAMES_RATIO = re.compile(r"\b\d{1,2}:\d{1,2}\b")
MODEL_HINT = ", please use Seedance 2.0"
# "The message names a model" (CONTRACT section 4): a name not glued to other letters, so "want"
# and "swan" do not name Wan, while "Wan2.1", "seedance2.0" and "用wan生成" do (\b would miss those:
# digits and CJK characters are word characters).
_NAMES_MODEL = re.compile(r"(?<![a-z])(?:seedance|kling|wan|midjourney|seedream|nano[\s_-]?banana)(?![a-z])",
                          re.IGNORECASE | re.ASCII)
_SWITCH = {"": True, "1": True, "true": True, "yes": True, "on": True,
           "0": False, "false": False, "no": False, "off": False}


def mask_secret(secret: Optional[str]) -> str:
    """`****abcd` (the last 4 characters), or just `****` when showing 4 would reveal too much.

    The tail is shown only when at least 8 characters stay hidden, so a short or test key
    is never printed nearly whole.
    """
    if not secret or len(secret) < 12:
        return "****"
    return "****" + secret[-4:]


def _masked_repr(value: Optional[str]) -> str:
    return "None" if value is None else repr(mask_secret(value))


@attr.frozen
class Config:
    """What `libtv.json` holds that the library uses; unknown fields stay in the file."""

    # A Config in a log line or a traceback must not show the key.
    api_key: Optional[str] = attr.field(default=None, repr=_masked_repr)
    video_ratio: Optional[str] = None


@attr.frozen
class Route:
    """Where a key's requests go: `auth_mode` is "nexu_gateway" or "libtv_direct"; `base_url` has no trailing slash."""

    auth_mode: str
    base_url: str


def env_number(env: Mapping[str, str], name: str, default: Any, cast: Any = float) -> Any:
    """A numeric setting from the environment: ``default`` when unset; a `❌` InputError when not a number or negative."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise InputError(f"{name} must be a number, got {raw[:20]!r}") from None
    if value < 0:
        raise InputError(f"{name} must not be negative")
    return value


def nexu_home(env: Mapping[str, str] = os.environ) -> Path:
    """`NEXU_HOME`, else `~/.nexu`; absolute, so a waiter started elsewhere finds the same folder."""
    raw = (env.get("NEXU_HOME") or "").strip()
    return Path(raw or "~/.nexu").expanduser().absolute()


def config_path(home: Path) -> Path:
    """The config file inside a NEXU_HOME folder."""
    return Path(home) / CONFIG_NAME


def _read_raw(path: Path) -> Dict[str, Any]:
    """The file as a JSON object ({} when absent); ConfigError, never a traceback, when it is broken."""
    try:
        # utf-8-sig: a file saved by Windows Notepad starts with a BOM.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ConfigError(f"Cannot read config file {path}: {reason}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        lineno = getattr(err, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise ConfigError(f"Config file {path} is not valid JSON{where}: fix it or delete it and run `setup` again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a JSON object: fix it or delete it and run `setup` again")
    return data


def _text_field(data: Dict[str, Any], name: str, path: Path, fix: str) -> Optional[str]:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"Config file {path}: {name} must be a string; run `{fix}` or fix the file")
    return value.strip() or None


def load_config(home: Path) -> Config:
    """Read `libtv.json`: a missing file is an empty Config; a broken one is a ConfigError naming the fix."""
    path = config_path(home)
    data = _read_raw(path)
    api_key = _text_field(data, "apiKey", path, "update-key --api-key ...")
    ratio = _text_field(data, "videoRatio", path, "update-ratio --video-ratio W:H")
    if ratio is not None and _parse_ratio(ratio) is None:
        raise ConfigError(
            f"Invalid videoRatio {_quote(ratio)} in {path}: run `update-ratio --video-ratio W:H` (such as 16:9)"
        )
    return Config(api_key=api_key, video_ratio=_parse_ratio(ratio) if ratio else None)


def _write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`, 0600 from the first byte: the key is never readable by others."""
    from libtv_fsm.atomicfile import write_atomic

    write_atomic(path, text.encode("utf-8"), 0o600)


_FIELDS = {"api_key": "apiKey", "video_ratio": "videoRatio"}


def update_config(home: Path, **changes: Optional[str]) -> Path:
    """Change only the named fields (`api_key`, `video_ratio`; None removes one) and keep everything else.

    Values are validated before anything is written. Works even when another known field
    in the file is invalid, so `update-ratio` can repair a bad ratio and `update-key` a bad key.
    """
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise TypeError(f"update_config: unknown field(s) {sorted(unknown)}")
    clean: Dict[str, Optional[str]] = {}
    if changes.get("api_key") is not None:
        clean["apiKey"] = _valid_key(str(changes["api_key"]))
    elif "api_key" in changes:
        clean["apiKey"] = None
    if changes.get("video_ratio") is not None:
        clean["videoRatio"] = validate_ratio(str(changes["video_ratio"]))
    elif "video_ratio" in changes:
        clean["videoRatio"] = None

    home = Path(home)
    path = config_path(home)
    data = _read_raw(path)  # read-modify-write: users may have added fields of their own
    for name, value in clean.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    except OSError as err:
        raise ConfigError(f"Cannot write config file {path}: {err.strerror or type(err).__name__}") from None
    return path


def save_config(home: Path, config: Config) -> Path:
    """Write both known fields of `config` (a None field is removed from the file); unknown fields stay."""
    return update_config(home, api_key=config.api_key, video_ratio=config.video_ratio)


def _valid_key(api_key: str) -> str:
    key = api_key.strip()
    route_for_key(key, env={})  # raises the "Invalid API Key format" ConfigError
    return key


def route_for_key(api_key: str, env: Mapping[str, str] = os.environ) -> Route:
    """The auth mode and base URL a key's prefix selects; any other prefix is refused before any request."""
    key = (api_key or "").strip()
    for prefix, mode, default, var in _ROUTES:
        if key.startswith(prefix) and _KEY_BODY.fullmatch(key[len(prefix):]):
            return Route(auth_mode=mode, base_url=_base_url(env, var, default))
    raise ConfigError(
        f"Invalid API Key format: {mask_secret(key)} (expected a key starting with mgk_ or sk-libtv-)"
    )


def _base_url(env: Mapping[str, str], var: str, default: str) -> str:
    url = (env.get(var) or "").strip() or default
    if not re.match(r"https?://[^/\s]+", url):
        raise ConfigError(f"{var} must be an http(s) URL, got {_quote(url)}")
    # One canonical form; paths are then joined with exactly one slash.
    return url.rstrip("/")


def require_api_key(home: Path) -> str:
    """The configured key, or a ConfigError telling how to set one."""
    key = load_config(home).api_key
    if not key:
        raise ConfigError("No API key configured; run `setup --api-key ...`")
    return key


def _quote(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return json.dumps(shown, ensure_ascii=False)


def _parse_ratio(text: str) -> Optional[str]:
    match = _RATIO.fullmatch(text.strip())
    if match is None:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0:
        return None
    return f"{width}:{height}"  # canonical: "09:16" -> "9:16"


def validate_ratio(text: str) -> str:
    """A `W:H` ratio (each 1-2 digits, neither zero), in canonical form; InputError otherwise."""
    ratio = _parse_ratio(text or "")
    if ratio is None:
        raise InputError(f"Invalid video ratio {_quote(text or '')}: use W:H such as 16:9")
    return ratio


def effective_ratio(config: Config, env: Mapping[str, str] = os.environ) -> str:
    """`LIBTV_VIDEO_RATIO`, else the configured `videoRatio`, else 16:9."""
    from_env = (env.get("LIBTV_VIDEO_RATIO") or "").strip()
    if from_env:
        ratio = _parse_ratio(from_env)
        if ratio is None:
            raise InputError(f"Invalid video ratio {_quote(from_env)} in LIBTV_VIDEO_RATIO: use W:H such as 16:9")
        return ratio
    if config.video_ratio:
        return validate_ratio(config.video_ratio)
    return DEFAULT_RATIO


def ratio_source(config: Config, env: Mapping[str, str] = os.environ) -> str:
    """Where `effective_ratio` takes its value from: the env var, the config file, or the default."""
    if (env.get("LIBTV_VIDEO_RATIO") or "").strip():
        return "LIBTV_VIDEO_RATIO"
    if config.video_ratio:
        return CONFIG_NAME
    return "default"


def with_ratio_hint(message: str, ratio: str) -> str:
    """Append `, video ratio W:H` unless the message already names a ratio (the contract's regex)."""
    if _NAMES_RATIO.search(message):
        return message
    return f"{message.rstrip()}, video ratio {ratio}"


def names_a_model(message: str) -> bool:
    """Whether the user named a model themselves (seedance, kling, wan, midjourney, seedream, nano banana)."""
    return _NAMES_MODEL.search(message) is not None


def with_model_hint(message: str, auth_mode: str, enabled: bool = True) -> str:
    """Append `, please use Seedance 2.0` on the Nexu gateway route unless the message names a model.

    The direct route (`libtv_direct`) relays the user's words as they are: it is the user's own
    LibTV account, where the model is theirs to choose.
    """
    if not enabled or auth_mode != NEXU_GATEWAY or names_a_model(message):
        return message
    return f"{message.rstrip()}{MODEL_HINT}"


def model_hint_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """`LIBTV_MODEL_HINT`: on unless set to 0 (or false/no/off); anything unrecognised is an InputError."""
    raw = (env.get("LIBTV_MODEL_HINT") or "").strip()
    enabled = _SWITCH.get(raw.lower())
    if enabled is None:
        raise InputError(f"Invalid LIBTV_MODEL_HINT {_quote(raw)}: use 0 to turn the model hint off, 1 to keep it")
    return enabled


def relayed_message(text: str, auth_mode: str, ratio: str, model_hint: bool = True) -> str:
    """What is sent upstream for the user's ``text``: the model hint (gateway only), then the ratio hint."""
    return with_ratio_hint(with_model_hint(text, auth_mode, model_hint), ratio)
