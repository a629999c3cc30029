"""Discord: a bot token, messages with an attachment or text, de-duplicated by an enforced nonce."""
from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import requests

from libtv_fsm import __version__, errors
from libtv_fsm.channels.accounts import BotToken, bot_token, override_url
from libtv_fsm.channels.base import MB, RateLimit, TooLarge, UploadChannel, exchange, scrub

log = logging.getLogger(__name__)

API_URL = "https://discord.com/api/v10"
# Discord asks every bot for this shape of User-Agent (its edge refuses unknown clients).
USER_AGENT = f"DiscordBot (https://pypi.org/project/libtv-fsm/, {__version__})"
_SNOWFLAKE = re.compile(r"^\d{5,21}$")
MAX_CONTENT = 2000
MAX_NONCE = 25
TOO_LARGE_CODE = 40005
AUTH_FAILED = 401


class DiscordCredentials(BotToken):
    """The bot token and the API base; the token never shows in a repr."""


def resolve_credentials(env: Mapping[str, str]) -> DiscordCredentials:
    """DISCORD_BOT_TOKEN, else channels.discord.token of openclaw.json."""
    api_url = override_url(env, "LIBTV_DISCORD_API_URL", API_URL)
    token, where = bot_token(env, "DISCORD_BOT_TOKEN", "discord", "token",
                             "No Discord bot token: set DISCORD_BOT_TOKEN, or channels.discord.token in openclaw.json")
    return DiscordCredentials(_bare(token), api_url, where)


def _bare(token: str) -> str:
    # Some configs keep the header form; the header is built here.
    return token[4:].strip() if token.startswith("Bot ") else token


def nonce_for(dedupe_key: str) -> str:
    """The message nonce: at most 25 characters, the same for every resend of one delivery."""
    return hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:MAX_NONCE]


def parse_target(chat_id: str) -> str:
    """A channel's snowflake for `channel:<id>` or a bare id, `user:<id>` for a person (a DM is opened first)."""
    raw = (chat_id or "").strip()
    shown = raw[:60]
    if raw.lower().startswith("discord:"):
        raw = raw[len("discord:"):].strip()
    kind = "channel"
    for prefix in ("channel:", "user:"):
        if raw.lower().startswith(prefix):
            kind, raw = prefix[:-1], raw[len(prefix):].strip()
    mention = re.match(r"^<@!?(\d+)>$", raw)
    if mention:
        kind, raw = "user", mention.group(1)
    if not _SNOWFLAKE.match(raw):
        raise errors.InputError(f"Invalid Discord target '{shown}': expected channel:<id>, user:<id> or a bare "
                                "channel id (a numeric snowflake)")
    return raw if kind == "channel" else "user:" + raw


class DiscordChannel(UploadChannel[DiscordCredentials]):
    """Posts as a Discord bot through the HTTP API."""

    name = "discord"
    dedupes = True  # `nonce` + `enforce_nonce`: a repeat within minutes returns the first message
    max_video_bytes = 10 * MB  # a server without boosts; bigger files are refused 413 and go as a link
    max_image_bytes = 10 * MB

    def __init__(self, env: Mapping[str, str], session: Optional[requests.Session] = None,
                 variant: Optional[str] = None, sleep: Optional[Callable[[float], None]] = None) -> None:
        super().__init__(env, session, variant, sleep)
        self._dms: Dict[str, str] = {}

    def load_credentials(self) -> DiscordCredentials:
        return resolve_credentials(self.env)

    def normalize_target(self, chat_id: str) -> str:
        return parse_target(chat_id)

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        channel = self._channel(target)
        payload = {"content": text[:MAX_CONTENT], "nonce": nonce_for(dedupe_key), "enforce_nonce": True,
                   "allowed_mentions": {"parse": []}}  # a relayed text never pings @everyone
        data = self._api("POST", f"/channels/{channel}/messages", "send message", sent_message=True,
                         body=lambda: {"json": payload})
        return _require_id(data, "send message")

    def _send_file(self, target: str, path: Path, name: str, dedupe_key: str) -> str:
        from requests_toolbelt import MultipartEncoder

        channel = self._channel(target)
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        payload = {"content": "", "attachments": [{"id": 0, "filename": name}], "nonce": nonce_for(dedupe_key),
                   "enforce_nonce": True, "allowed_mentions": {"parse": []}}

        def body() -> Dict[str, Any]:
            encoder = MultipartEncoder(fields={"payload_json": (None, json.dumps(payload), "application/json"),
                                               "files[0]": (name, path.open("rb"), mime)})
            return {"data": encoder, "headers": {"Content-Type": encoder.content_type}}

        data = self._api("POST", f"/channels/{channel}/messages", "file upload", sent_message=True, body=body)
        log.info("discord: sent %s to channel %s", name, channel)
        return _require_id(data, "file upload")

    def _channel(self, target: str) -> str:
        """The channel to post in: the target itself, or the bot's DM channel with a user."""
        normalized = parse_target(target)
        if not normalized.startswith("user:"):
            return normalized
        user = normalized[5:]
        if user not in self._dms:
            data = self._api("POST", "/users/@me/channels", "open DM", body=lambda: {"json": {"recipient_id": user}})
            self._dms[user] = _require_id(data, "open DM")
        return self._dms[user]

    def _api(self, method: str, path: str, what: str, *, body: Callable[[], Dict[str, Any]],
             sent_message: bool = False) -> Dict[str, Any]:
        creds = self.credentials
        url = creds.api_url + path
        limits = RateLimit("Discord", self.pause)
        while True:
            kwargs = body()
            headers = {"Authorization": f"Bot {creds.token}", "User-Agent": USER_AGENT}
            headers.update(kwargs.pop("headers", {}))
            response, parsed = exchange(self.http, "Discord", method, url, what, sent_message=sent_message,
                                        headers=headers, **kwargs)
            status, retry_header = response.status_code, response.headers.get("Retry-After")
            parsed = parsed if isinstance(parsed, dict) else {}
            if status == 429:
                limits.wait(parsed.get("retry_after", retry_header), what)
                continue
            if 200 <= status < 300:
                return parsed
            code = parsed.get("code")
            message = scrub(parsed.get("message") or f"HTTP {status}", creds.token)
            text = f"Discord {what} failed: {message} (HTTP {status}" + (f", code {code})" if code else ")")
            if status == 413 or code == TOO_LARGE_CODE:
                raise TooLarge(text, status=status, code=str(code))
            if status >= 500 or status == 408:
                raise errors.UnavailableError(text, status=status, code=str(code))
            if status == AUTH_FAILED:
                raise errors.AuthError(f"Discord refused the bot token from {creds.source}: {message}", status=status)
            raise errors.PermanentError(text, status=status, code=None if code is None else str(code))


def _require_id(data: Mapping[str, Any], what: str) -> str:
    value = data.get("id")
    if not isinstance(value, (str, int)) or not str(value):
        raise errors.BadResponse(f"Discord {what}: the answer has no id")
    return str(value)


__all__ = ["DiscordChannel", "DiscordCredentials", "resolve_credentials", "parse_target", "nonce_for"]
