"""The config commands through the real CLI: setup, check, update-key, update-ratio, remove-key."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pytest

if TYPE_CHECKING:  # the fixtures' types; conftest is not a module to import at run time
    from conftest import Cli, Ran

GATEWAY_KEY = "mgk_live_0123456789abcdef"
DIRECT_KEY = "sk-libtv-0123456789abcdefWXYZ"
BAD_KEY = "sk-openai-0123456789secret"
POSIX = os.name == "posix"


def config_file(home: Path) -> Path:
    return home / "libtv.json"


def write_config(home: Path, data: Any) -> bytes:
    path = config_file(home)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path.read_bytes()


def read_config(home: Path) -> Any:
    return json.loads(config_file(home).read_text(encoding="utf-8"))


def assert_ok(ran: Ran) -> None:
    assert ran.code == 0, ran
    assert not any(line.startswith("❌") for line in ran.lines), ran
    assert "Traceback" not in ran.err, ran


def assert_failed(ran: Ran, starts: str) -> None:
    """One `❌` line, last, carrying the message; a non-zero exit; no traceback."""
    assert ran.code != 0, ran
    assert ran.last.startswith(f"❌ {starts}"), ran
    assert sum(line.startswith("❌") for line in ran.lines) == 1, ran
    assert "Traceback" not in ran.out + ran.err, ran


def assert_key_hidden(ran: Ran, key: Optional[str] = None) -> None:
    for secret in (key, GATEWAY_KEY, DIRECT_KEY, BAD_KEY):
        if secret:
            assert secret not in ran.out and secret not in ran.err, ran


# --- setup -----------------------------------------------------------------------------------

def test_setup_without_config_says_how_to_set_it(any_cli: Cli) -> None:
    ran = any_cli("setup")
    assert_ok(ran)
    assert "No configuration yet" in ran.out
    assert "setup --api-key" in ran.out
    assert not config_file(any_cli.home).exists()


def test_setup_saves_a_gateway_key_masked_with_its_route(any_cli: Cli) -> None:
    ran = any_cli("setup", "--api-key", GATEWAY_KEY)
    assert_ok(ran)
    assert "****cdef" in ran.out
    assert "Auth mode: nexu_gateway" in ran.out
    assert "Video ratio: 16:9 (default)" in ran.out
    assert_key_hidden(ran)
    assert read_config(any_cli.home) == {"apiKey": GATEWAY_KEY}
    if POSIX:
        assert stat.S_IMODE(config_file(any_cli.home).stat().st_mode) == 0o600


def test_setup_saves_a_direct_key_and_a_ratio(any_cli: Cli) -> None:
    ran = any_cli("setup", "--api-key", f"  {DIRECT_KEY} ", "--video-ratio", "9:16")
    assert_ok(ran)
    assert "Auth mode: libtv_direct" in ran.out
    assert "Video ratio: 9:16 (from libtv.json)" in ran.out
    assert_key_hidden(ran)
    assert read_config(any_cli.home) == {"apiKey": DIRECT_KEY, "videoRatio": "9:16"}

    shown = any_cli("setup")  # no flags: the current configuration, key still masked
    assert_ok(shown)
    assert "****WXYZ" in shown.out and "Auth mode: libtv_direct" in shown.out and "9:16" in shown.out
    assert_key_hidden(shown)


@pytest.mark.parametrize("args, starts", [
    (("--api-key", BAD_KEY), "Invalid API Key format"),
    (("--api-key", ""), "Invalid API Key format"),
    (("--video-ratio", "16x9"), "Invalid video ratio"),
    (("--api-key", DIRECT_KEY, "--video-ratio", "0:9"), "Invalid video ratio"),  # nothing half-saved
])
def test_setup_with_bad_input_fails_and_writes_nothing(cli: Cli, args: tuple, starts: str) -> None:
    before = write_config(cli.home, {"apiKey": GATEWAY_KEY, "videoRatio": "4:3", "mine": True})
    ran = cli("setup", *args)
    assert_failed(ran, starts)
    assert_key_hidden(ran)
    assert config_file(cli.home).read_bytes() == before


def test_setup_with_bad_input_fails_through_every_entry_point(any_cli: Cli) -> None:
    ran = any_cli("setup", "--api-key", BAD_KEY)
    assert_failed(ran, "Invalid API Key format")
    assert_key_hidden(ran)
    assert not config_file(any_cli.home).exists()


def test_setup_lists_a_stored_key_of_the_wrong_format_without_failing(cli: Cli) -> None:
    write_config(cli.home, {"apiKey": BAD_KEY})
    ran = cli("setup")
    assert_ok(ran)
    assert "API key: ****cret" in ran.lines
    assert any(line.startswith("Auth mode: none (Invalid API Key format") for line in ran.lines), ran
    assert_key_hidden(ran)


def test_setup_keeps_fields_the_user_added(cli: Cli) -> None:
    write_config(cli.home, {"mine": {"x": 1}, "videoRatio": "1:1"})
    assert_ok(cli("setup", "--api-key", GATEWAY_KEY))
    assert read_config(cli.home) == {"mine": {"x": 1}, "videoRatio": "1:1", "apiKey": GATEWAY_KEY}


# --- check -----------------------------------------------------------------------------------

def test_check_reports_the_local_configuration_and_the_keys_remaining_uses(any_cli: Cli, sim: Any) -> None:
    write_config(any_cli.home, {"apiKey": GATEWAY_KEY, "videoRatio": "9:16"})
    sim.set_key(GATEWAY_KEY, remaining_uses=7, max_uses=10)
    ran = any_cli("check", env={"LIBTV_GATEWAY_URL": sim.url + "/"})
    assert_ok(ran)
    assert "Auth mode: nexu_gateway" in ran.lines
    assert "API key: ****cdef" in ran.lines
    assert f"Base URL: {sim.url}" in ran.lines
    assert "Remaining uses: 7/10" in ran.lines
    assert [r.headers.get("X-API-KEY") for r in sim.requests_to("/api/v1/key/status")] == [GATEWAY_KEY]
    assert "Video ratio: 9:16 (from libtv.json)" in ran.lines
    assert f"Config file: {config_file(any_cli.home)}" in ran.lines
    assert_key_hidden(ran)


def test_check_of_a_direct_key_shows_its_route_and_no_invented_remote_status(cli: Cli) -> None:
    write_config(cli.home, {"apiKey": DIRECT_KEY})
    ran = cli("check", env={"LIBTV_VIDEO_RATIO": "21:9", "LIBTV_DIRECT_BASE_URL": ""})  # "" = the default
    assert_ok(ran)
    assert "Auth mode: libtv_direct" in ran.lines
    assert "Base URL: https://im.liblib.tv" in ran.lines
    assert "Video ratio: 21:9 (from LIBTV_VIDEO_RATIO)" in ran.lines
    assert "Remaining uses" not in ran.out
    assert_key_hidden(ran)


@pytest.mark.parametrize("content, env, starts", [
    (None, {}, "No API key configured; run `setup --api-key ...`"),
    ({"videoRatio": "9:16"}, {}, "No API key configured"),
    ({"apiKey": BAD_KEY}, {}, "Invalid API Key format: ****cret"),
    ('{"apiKey": "mgk_0123', {}, "Config file"),
    ({"apiKey": 12345}, {}, "Config file"),
    ({"apiKey": GATEWAY_KEY, "videoRatio": "wide"}, {}, "Invalid videoRatio"),
    ({"apiKey": GATEWAY_KEY}, {"LIBTV_VIDEO_RATIO": "wide"}, "Invalid video ratio"),
    ({"apiKey": GATEWAY_KEY}, {"LIBTV_GATEWAY_URL": "seedance.nexu.io"}, "LIBTV_GATEWAY_URL must be"),
])
def test_check_fails_with_one_clear_line(cli: Cli, content: Any, env: dict, starts: str) -> None:
    if content is not None:
        write_config(cli.home, content)
    ran = cli("check", env=env)
    assert_failed(ran, starts)
    assert_key_hidden(ran)


@pytest.mark.parametrize("error, words", [
    ("invalid", "Invalid API Key"), ("exhausted", "Free trial uses exhausted"), ("expired", "Key expired"),
    ("unavailable", "Service temporarily unavailable"),
])
def test_check_relays_what_upstream_says_of_the_key(cli: Cli, sim: Any, error: str, words: str) -> None:
    write_config(cli.home, {"apiKey": GATEWAY_KEY})
    sim.set_key(GATEWAY_KEY, error=error)
    ran = cli("check", env={"LIBTV_GATEWAY_URL": sim.url})
    assert_failed(ran, words)
    assert_key_hidden(ran)


def test_check_fails_through_every_entry_point(any_cli: Cli) -> None:
    assert_failed(any_cli("check"), "No API key configured")
    write_config(any_cli.home, "{ not json")
    assert_failed(any_cli("check"), f"Config file {config_file(any_cli.home)} is not valid JSON")


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_check_warns_about_a_config_file_others_can_read(cli: Cli, sim: Any) -> None:
    write_config(cli.home, {"apiKey": GATEWAY_KEY})
    config_file(cli.home).chmod(0o644)
    ran = cli("check", env={"LIBTV_GATEWAY_URL": sim.url})
    assert_ok(ran)
    assert any("readable by other users" in line for line in ran.lines), ran


# --- update-key / update-ratio / remove-key --------------------------------------------------

def test_update_key_replaces_only_the_key(any_cli: Cli) -> None:
    write_config(any_cli.home, {"apiKey": GATEWAY_KEY, "videoRatio": "9:16", "mine": 1})
    ran = any_cli("update-key", "--api-key", DIRECT_KEY)
    assert_ok(ran)
    assert "****WXYZ" in ran.out and "Auth mode: libtv_direct" in ran.out
    assert_key_hidden(ran)
    assert read_config(any_cli.home) == {"apiKey": DIRECT_KEY, "videoRatio": "9:16", "mine": 1}


@pytest.mark.parametrize("args, starts", [
    (("update-key", "--api-key", BAD_KEY), "Invalid API Key format"),
    (("update-key",), "the following arguments are required: --api-key"),
    (("update-ratio", "--video-ratio", "100:1"), "Invalid video ratio"),
    (("update-ratio", "--video-ratio", "9/16"), "Invalid video ratio"),
    (("update-ratio",), "the following arguments are required: --video-ratio"),
])
def test_edits_with_bad_input_fail_and_write_nothing(any_cli: Cli, args: tuple, starts: str) -> None:
    before = write_config(any_cli.home, {"apiKey": GATEWAY_KEY, "videoRatio": "4:3"})
    ran = any_cli(*args)
    assert_failed(ran, starts)
    assert_key_hidden(ran)
    assert config_file(any_cli.home).read_bytes() == before


def test_update_ratio_sets_the_ratio_and_keeps_the_key(any_cli: Cli) -> None:
    write_config(any_cli.home, {"apiKey": GATEWAY_KEY})
    ran = any_cli("update-ratio", "--video-ratio", "09:16")
    assert_ok(ran)
    assert "✅ Video ratio set to 9:16" in ran.lines
    assert read_config(any_cli.home) == {"apiKey": GATEWAY_KEY, "videoRatio": "9:16"}
    assert "Video ratio: 9:16 (from libtv.json)" in any_cli("check").lines


def test_update_ratio_mentions_an_environment_override(cli: Cli) -> None:
    ran = cli("update-ratio", "--video-ratio", "1:1", env={"LIBTV_VIDEO_RATIO": "4:3"})
    assert_ok(ran)
    assert "LIBTV_VIDEO_RATIO" in ran.out
    assert read_config(cli.home) == {"videoRatio": "1:1"}


def test_update_ratio_repairs_a_bad_stored_ratio(cli: Cli, sim: Any) -> None:
    write_config(cli.home, {"apiKey": GATEWAY_KEY, "videoRatio": "wide"})
    assert_failed(cli("check"), "Invalid videoRatio")
    assert_ok(cli("update-ratio", "--video-ratio", "16:9"))
    assert_ok(cli("check", env={"LIBTV_GATEWAY_URL": sim.url}))


def test_remove_key_removes_only_the_key(any_cli: Cli) -> None:
    write_config(any_cli.home, {"apiKey": GATEWAY_KEY, "videoRatio": "9:16", "mine": 1})
    ran = any_cli("remove-key")
    assert_ok(ran)
    assert "****cdef" in ran.out and "removed" in ran.out
    assert_key_hidden(ran)
    assert read_config(any_cli.home) == {"videoRatio": "9:16", "mine": 1}

    again = any_cli("remove-key")
    assert_ok(again)
    assert "No API key was configured" in again.out
    assert_failed(any_cli("check"), "No API key configured")


def test_remove_key_without_a_config_file_changes_nothing(cli: Cli) -> None:
    ran = cli("remove-key")
    assert_ok(ran)
    assert "No API key was configured" in ran.out
    assert not config_file(cli.home).exists()


def test_commands_create_a_missing_nexu_home(cli: Cli, tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "nexu"
    ran = cli("update-key", "--api-key", GATEWAY_KEY, env={"NEXU_HOME": str(fresh)})
    assert_ok(ran)
    assert json.loads((fresh / "libtv.json").read_text()) == {"apiKey": GATEWAY_KEY}


def test_a_key_pasted_without_its_flag_is_not_echoed(cli):
    key = "mgk_live_0123456789abcdef"
    ran = cli("setup", key)
    assert ran.code == 2 and ran.lines[-1].startswith("❌ ") and key not in ran.out + ran.err, ran


def test_each_command_named_first_builds_its_own_modules_parser_and_the_same_command():
    """main() registers only the module of the command it is given: the map must name every command's own module."""
    from libtv_fsm.cli import _COMMANDS, build_parser

    def commands(parser):
        return next(a for a in parser._actions if a.dest == "command").choices

    everything = commands(build_parser())
    assert set(_COMMANDS) == set(everything), "a command is missing from cli._COMMANDS (or one there no longer exists)"
    for name in everything:
        alone = commands(build_parser(name))
        assert name in alone and alone[name].format_usage() == everything[name].format_usage(), name
    assert commands(build_parser("--help")).keys() == everything.keys()
