"""CLI commands that edit or check the local configuration: setup, check, update-key, update-ratio, remove-key."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Dict, List

if TYPE_CHECKING:  # annotations only: nothing below is imported at start-up
    from pathlib import Path

    from libtv_fsm.config import Route

# libtv_fsm.config is imported inside each handler: `--help` and the other command
# groups should not pay for it, and this module must stay importable on its own.

_KEY_HELP = "an API key: mgk_... (Nexu gateway) or sk-libtv-... (LibTV direct)"
_RATIO_HELP = "video aspect ratio W:H, such as 16:9 or 9:16"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="save the API key and/or video ratio; with no flags, show the configuration",
                       description="Save the API key and/or the default video ratio in $NEXU_HOME/libtv.json.")
    p.add_argument("--api-key", metavar="K", help=_KEY_HELP)
    p.add_argument("--video-ratio", metavar="W:H", help=_RATIO_HELP)
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("check", help="validate the configuration",
                       description="Validate the configuration: key present, key format, route, video ratio.")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("update-key", help="replace the API key", description="Replace the API key; other settings are kept.")
    p.add_argument("--api-key", metavar="K", required=True, help=_KEY_HELP)
    p.set_defaults(func=cmd_update_key)

    p = sub.add_parser("update-ratio", help="set the default video ratio",
                       description="Set the default video ratio; other settings are kept.")
    p.add_argument("--video-ratio", metavar="W:H", required=True, help=_RATIO_HELP)
    p.set_defaults(func=cmd_update_ratio)

    p = sub.add_parser("remove-key", help="remove the API key", description="Remove the API key; other settings are kept.")
    p.set_defaults(func=cmd_remove_key)


def _key_lines(api_key: str) -> List[str]:
    """`API key` and `Auth mode` lines; an unusable stored key is reported, not fatal, in a listing."""
    from libtv_fsm.config import mask_secret, route_for_key
    from libtv_fsm.errors import ConfigError

    try:
        mode = route_for_key(api_key, env={}).auth_mode  # the mode depends on the key alone
    except ConfigError:
        mode = "none (Invalid API Key format; run `update-key --api-key ...`)"
    return [f"API key: {mask_secret(api_key)}", f"Auth mode: {mode}"]


def _report(home: Path) -> None:
    """Print the stored configuration in human lines."""
    from libtv_fsm.cli import say
    from libtv_fsm.config import effective_ratio, load_config, ratio_source

    config = load_config(home)

    if config.api_key:
        for line in _key_lines(config.api_key):
            say(line)
    else:
        say("API key: not set (run `setup --api-key ...`)")
    say(f"Video ratio: {effective_ratio(config)} ({_source_text(ratio_source(config))})")


def _source_text(source: str) -> str:
    return "default" if source == "default" else f"from {source}"


def cmd_setup(args: argparse.Namespace) -> int:
    from libtv_fsm.cli import say
    from libtv_fsm.config import config_path, load_config, nexu_home, update_config

    home = nexu_home()
    path = config_path(home)
    changes: Dict[str, str] = {}
    if args.api_key is not None:
        changes["api_key"] = args.api_key
    if args.video_ratio is not None:
        changes["video_ratio"] = args.video_ratio
    if changes:
        update_config(home, **changes)  # validates everything before writing anything
        say(f"✅ Configuration saved to {path}")
        _report(home)
        return 0
    config = load_config(home)
    if config == type(config)():
        say(f"No configuration yet ({path}).")
        say("Set it with: libtv-video setup --api-key <mgk_... or sk-libtv-...> [--video-ratio 16:9]")
        return 0
    say(f"Configuration in {path}:")
    _report(home)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import os

    from libtv_fsm.cli import say
    from libtv_fsm.config import (config_path, effective_ratio, load_config, mask_secret, nexu_home,
                                  ratio_source, require_api_key, route_for_key)

    home = nexu_home()
    path = config_path(home)
    # Everything local is validated before anything is printed, so a failure is just the `❌` line.
    config = load_config(home)
    api_key = require_api_key(home)
    route = route_for_key(api_key)
    ratio = effective_ratio(config)

    say(f"Config file: {path}")
    say(f"API key: {mask_secret(api_key)}")
    say(f"Auth mode: {route.auth_mode}")
    say(f"Base URL: {route.base_url}")
    say(f"Video ratio: {ratio} ({_source_text(ratio_source(config))})")
    if os.name == "posix":
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            say(f"⚠️ {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")

    _remote_status(route, api_key)  # the one place the upstream key check plugs in

    say("✅ Configuration OK")
    return 0


def _remote_status(route: Route, api_key: str) -> None:
    """Query and print the key's upstream status (gateway keys: `Remaining uses: R/M`).

    A key upstream refuses raises a LibtvError (AuthError, QuotaError, ExpiredError...),
    which `main` turns into the `❌` line. The direct API has no key-status call.
    """
    import os

    from libtv_fsm.cli import say

    if route.auth_mode != "nexu_gateway":
        say("Key status: not available for sk-libtv- keys (the direct API has no status call)")
        return
    from libtv_fsm.backends import open_backend

    status = open_backend(api_key, os.environ).key_status()
    say(f"Remaining uses: {status.remaining_uses}/{status.max_uses}")
    if status.expires_at:
        say(f"Expires at: {status.expires_at}")
    if status.remaining_uses <= 0:
        from libtv_fsm.errors import QuotaError

        raise QuotaError("Free trial uses exhausted")


def cmd_update_key(args: argparse.Namespace) -> int:
    from libtv_fsm.cli import say
    from libtv_fsm.config import mask_secret, nexu_home, route_for_key, update_config

    path = update_config(nexu_home(), api_key=args.api_key)
    key = args.api_key.strip()
    say(f"✅ API key updated: {mask_secret(key)}")
    say(f"Auth mode: {route_for_key(key, env={}).auth_mode}")
    say(f"Saved to {path}")
    return 0


def cmd_update_ratio(args: argparse.Namespace) -> int:
    import os

    from libtv_fsm.cli import say
    from libtv_fsm.config import nexu_home, update_config, validate_ratio

    ratio = validate_ratio(args.video_ratio)
    path = update_config(nexu_home(), video_ratio=ratio)
    say(f"✅ Video ratio set to {ratio}")
    say(f"Saved to {path}")
    override = os.environ.get("LIBTV_VIDEO_RATIO", "").strip()
    if override:
        say(f"Note: LIBTV_VIDEO_RATIO is set in this environment and takes precedence over {ratio}")
    return 0


def cmd_remove_key(args: argparse.Namespace) -> int:
    from libtv_fsm.cli import say
    from libtv_fsm.config import load_config, mask_secret, nexu_home, update_config

    home = nexu_home()
    previous = load_config(home).api_key
    if not previous:
        say("No API key was configured; nothing to remove.")
        return 0
    path = update_config(home, api_key=None)
    say(f"✅ API key {mask_secret(previous)} removed from {path}; other settings kept.")
    return 0
