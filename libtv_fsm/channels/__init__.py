"""The channel registry: built-in chat platforms plus any registered under the `libtv_fsm.channels` entry point group."""
from __future__ import annotations

import importlib
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import requests

from libtv_fsm import errors
from libtv_fsm.channels.base import Channel, PermissionDenied, TooLarge

ENTRY_POINT_GROUP = "libtv_fsm.channels"

# name -> "module:attribute"; imported only when the channel is asked for.
_BUILTINS: Dict[str, str] = {
    "feishu": "libtv_fsm.channels.feishu:FeishuChannel",
    "telegram": "libtv_fsm.channels.telegram:TelegramChannel",
    "slack": "libtv_fsm.channels.slack:SlackChannel",
    "discord": "libtv_fsm.channels.discord:DiscordChannel",
    "wecom": "libtv_fsm.channels.wecom:WecomChannel",
    # Delegates to the running OpenClaw: `openclaw:<its channel>` (WhatsApp, WeCom bot mode, plugins).
    "openclaw": "libtv_fsm.channels.openclaw:OpenClawChannel",
}
_ALIASES: Dict[str, str] = {"lark": "feishu"}
# Channels an embedding runtime registered in this process (register_channel).
_REGISTERED: Dict[str, Callable[..., Any]] = {}


def register_channel(name: str, factory: Callable[..., Channel]) -> None:
    """Make ``factory`` the channel called ``name`` in this process (an embedding runtime's own chat).

    ``factory`` takes the same keywords as a plugin's (see :func:`get_channel`). Built-in names
    cannot be taken. Only this process sees it: a detached waiter finds built-ins and entry points,
    so a runtime that registers a channel here runs the :class:`~libtv_fsm.waiter.Waiter` itself.
    """
    key = (name or "").strip().lower()
    if not key or ":" in key or key in _BUILTINS or key in _ALIASES:
        raise errors.InputError(f"Cannot register a channel named '{name}'")
    _REGISTERED[key] = factory


def _entry_points() -> Dict[str, Any]:
    """Third-party channels by name (built-ins win a name clash: a plugin cannot replace Feishu)."""
    from importlib import metadata

    try:
        found = metadata.entry_points()
        if hasattr(found, "select"):
            group = list(found.select(group=ENTRY_POINT_GROUP))
        else:  # Python 3.9: a dict of group -> entry points
            group = list(found.get(ENTRY_POINT_GROUP, ()))  # type: ignore[union-attr,unused-ignore]  # mypy reads it as 3.10+
    except Exception:  # a broken installed distribution must not take the built-ins down
        return {}
    plugins: Dict[str, Any] = {}
    for ep in group:
        name = ep.name.strip().lower()
        if name and name not in _BUILTINS and name not in _ALIASES:
            plugins.setdefault(name, ep)
    return plugins


def channel_names() -> List[str]:
    """Every name `--channel` accepts: built-ins, their aliases, then plugins, sorted."""
    return sorted(set(_BUILTINS) | set(_ALIASES) | set(_REGISTERED) | set(_entry_points()))


def _split(name: str) -> Tuple[str, Optional[str]]:
    # `openclaw:whatsapp` selects a sub-channel of a delegating channel.
    base, _, variant = (name or "").strip().lower().partition(":")
    return _ALIASES.get(base, base), (variant.strip() or None)


def _factory(name: str) -> Optional[Callable[..., Any]]:
    if name in _BUILTINS:
        module, _, attr = _BUILTINS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    if name in _REGISTERED:
        return _REGISTERED[name]
    ep = _entry_points().get(name)
    if ep is None:
        return None
    try:
        return ep.load()
    except Exception as err:
        raise errors.ConfigError(f"Channel '{name}' (plugin {ep.value}) failed to load: {type(err).__name__}: {err}") from None


def get_channel(name: str, env: Mapping[str, str] = os.environ,
                session: Optional[requests.Session] = None) -> Channel:
    """The channel called ``name`` (case-insensitive; `lark` is Feishu), ready to use with ``env``.

    A plugin's entry point names a Channel subclass (or any callable returning a Channel) taking
    ``env=``, ``session=`` and, for a `name:sub` channel such as `openclaw:whatsapp`, ``variant=``.
    """
    base, variant = _split(name)
    factory = _factory(base) if base else None
    if factory is None:
        raise errors.InputError(f"Unknown channel '{name}'; known: {', '.join(channel_names())}")
    kwargs: Dict[str, Any] = {"env": env, "session": session}
    if variant is not None:
        kwargs["variant"] = variant
    channel = factory(**kwargs)
    if not isinstance(channel, Channel):
        raise errors.ConfigError(f"Channel '{base}' did not give a libtv_fsm Channel ({type(channel).__name__})")
    return channel


__all__ = ["Channel", "PermissionDenied", "TooLarge", "channel_names", "get_channel", "register_channel",
           "ENTRY_POINT_GROUP"]
