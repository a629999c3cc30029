"""The configuration module: key routing, the ratio and model hints, masking and the safe writing of libtv.json."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libtv_fsm import config as cfg
from libtv_fsm.config import (
    CONFIG_NAME, LIBTV_DIRECT, NEXU_GATEWAY, Config, Route, effective_ratio, load_config, mask_secret,
    model_hint_enabled, names_a_model, nexu_home, relayed_message, require_api_key, route_for_key, save_config,
    update_config, validate_ratio, with_model_hint, with_ratio_hint,
)
from libtv_fsm.errors import ConfigError, InputError

GATEWAY_KEY = "mgk_live_0123456789abcdef"
DIRECT_KEY = "sk-libtv-0123456789abcdefWXYZ"
POSIX = os.name == "posix"


def write_raw(home: Path, data: Any) -> Path:
    path = home / CONFIG_NAME
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- NEXU_HOME -------------------------------------------------------------------------------

def test_nexu_home_comes_from_the_environment(tmp_path: Path) -> None:
    assert nexu_home({"NEXU_HOME": str(tmp_path / "h")}) == tmp_path / "h"


def test_nexu_home_defaults_to_dot_nexu_in_the_user_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    assert nexu_home({}) == tmp_path / ".nexu"
    assert nexu_home({"NEXU_HOME": "  "}) == tmp_path / ".nexu"
    assert nexu_home({"NEXU_HOME": "~/elsewhere"}) == tmp_path / "elsewhere"


# --- routing ---------------------------------------------------------------------------------

def test_an_mgk_key_goes_to_the_nexu_gateway() -> None:
    assert route_for_key(GATEWAY_KEY, env={}) == Route("nexu_gateway", "https://seedance.nexu.io")


def test_an_sk_libtv_key_goes_to_the_direct_api() -> None:
    assert route_for_key(DIRECT_KEY, env={}) == Route("libtv_direct", "https://im.liblib.tv")


def test_whitespace_around_a_pasted_key_is_ignored() -> None:
    assert route_for_key(f"  {DIRECT_KEY}\n", env={}).auth_mode == "libtv_direct"


@pytest.mark.parametrize("key", [
    "", "   ", "mgk", "mgk_", "sk-libtv-", "MGK_0123456789abcdef", "SK-LIBTV-0123456789abcdef",
    "sk-0123456789abcdef0123", "sk_libtv-0123456789abcdef", "libtv-0123456789abcdef", "x" + GATEWAY_KEY,
    "mgk_01234567 89abcdef", "mgk_0123456789\r\nX-Evil: 1", "sk-libtv-ключ0123456789",
])
def test_any_other_key_format_is_refused_with_the_key_masked(key: str) -> None:
    with pytest.raises(ConfigError) as err:
        route_for_key(key, env={})
    text = str(err.value)
    assert text.startswith("Invalid API Key format")
    if len(key.strip()) >= 12:  # shorter ones are bare prefixes the hint itself names
        assert key.strip() not in text


@pytest.mark.parametrize("given_url", ["http://127.0.0.1:8123", "http://127.0.0.1:8123/", "http://127.0.0.1:8123//"])
def test_gateway_base_url_override_with_or_without_trailing_slash(given_url: str) -> None:
    route = route_for_key(GATEWAY_KEY, env={"LIBTV_GATEWAY_URL": given_url})
    assert route.base_url == "http://127.0.0.1:8123"


@pytest.mark.parametrize("given_url", ["http://127.0.0.1:9/direct", "http://127.0.0.1:9/direct/"])
def test_direct_base_url_override_with_or_without_trailing_slash(given_url: str) -> None:
    route = route_for_key(DIRECT_KEY, env={"LIBTV_DIRECT_BASE_URL": given_url})
    assert route.base_url == "http://127.0.0.1:9/direct"


def test_each_key_only_follows_its_own_override() -> None:
    env = {"LIBTV_GATEWAY_URL": "http://127.0.0.1:1", "LIBTV_DIRECT_BASE_URL": "http://127.0.0.1:2"}
    assert route_for_key(GATEWAY_KEY, env=env).base_url == "http://127.0.0.1:1"
    assert route_for_key(DIRECT_KEY, env=env).base_url == "http://127.0.0.1:2"
    # The other mode's override never redirects a key.
    assert route_for_key(DIRECT_KEY, env={"LIBTV_GATEWAY_URL": "http://127.0.0.1:1"}).base_url == "https://im.liblib.tv"
    assert route_for_key(GATEWAY_KEY, env={"LIBTV_DIRECT_BASE_URL": "http://127.0.0.1:2"}).base_url == "https://seedance.nexu.io"


def test_an_empty_override_means_the_default() -> None:
    assert route_for_key(GATEWAY_KEY, env={"LIBTV_GATEWAY_URL": " "}).base_url == "https://seedance.nexu.io"


@pytest.mark.parametrize("bad_url", ["seedance.nexu.io", "ftp://127.0.0.1", "http://"])
def test_an_override_that_is_not_an_http_url_is_a_clear_error(bad_url: str) -> None:
    with pytest.raises(ConfigError, match="LIBTV_GATEWAY_URL must be an http"):
        route_for_key(GATEWAY_KEY, env={"LIBTV_GATEWAY_URL": bad_url})


# --- masking ---------------------------------------------------------------------------------

@pytest.mark.parametrize("secret, shown", [
    (None, "****"), ("", "****"), ("abc", "****"), ("mgk_1234567", "****"),
    ("mgk_12345678", "****5678"), (GATEWAY_KEY, "****cdef"), (DIRECT_KEY, "****WXYZ"),
])
def test_mask_secret_shows_at_most_the_last_four(secret: Any, shown: str) -> None:
    assert mask_secret(secret) == shown


@given(st.text(alphabet=st.characters(blacklist_characters="*"), min_size=1, max_size=80))
def test_a_masked_secret_never_contains_the_secret(secret: str) -> None:
    assert secret not in mask_secret(secret)


def test_a_config_repr_never_shows_the_key() -> None:
    assert GATEWAY_KEY not in repr(Config(api_key=GATEWAY_KEY, video_ratio="16:9"))


# --- ratio -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical", [
    ("16:9", "16:9"), ("9:16", "9:16"), ("1:1", "1:1"), ("21:9", "21:9"), ("99:99", "99:99"),
    (" 4:3 ", "4:3"), ("09:16", "9:16"),
])
def test_valid_ratios(text: str, canonical: str) -> None:
    assert validate_ratio(text) == canonical


@pytest.mark.parametrize("text", [
    "", "16x9", "16:", ":9", "0:9", "9:0", "00:1", "100:1", "1:100", "16:9:1", "a:b", "-1:2", "1.5:1",
    "16 : 9", "１６:９",
])
def test_invalid_ratios_are_refused_with_the_expected_format(text: str) -> None:
    with pytest.raises(InputError) as err:
        validate_ratio(text)
    assert str(err.value).startswith("Invalid video ratio")
    assert str(err.value).endswith("use W:H such as 16:9")


@given(st.integers(1, 99), st.integers(1, 99))
def test_every_two_digit_ratio_is_accepted(width: int, height: int) -> None:
    assert validate_ratio(f"{width}:{height}") == f"{width}:{height}"


def test_ratio_precedence_env_then_config_then_default() -> None:
    assert effective_ratio(Config(), env={}) == "16:9"
    assert effective_ratio(Config(video_ratio="9:16"), env={}) == "9:16"
    assert effective_ratio(Config(video_ratio="9:16"), env={"LIBTV_VIDEO_RATIO": "4:3"}) == "4:3"
    assert effective_ratio(Config(video_ratio="9:16"), env={"LIBTV_VIDEO_RATIO": " "}) == "9:16"


def test_an_invalid_ratio_in_the_environment_is_an_input_error() -> None:
    with pytest.raises(InputError, match="LIBTV_VIDEO_RATIO"):
        effective_ratio(Config(video_ratio="9:16"), env={"LIBTV_VIDEO_RATIO": "wide"})


@pytest.mark.parametrize("message, expected", [
    ("a cat surfing", "a cat surfing, video ratio 16:9"),
    ("a cat surfing \n", "a cat surfing, video ratio 16:9"),
    ("a cat surfing, vertical 9:16", "a cat surfing, vertical 9:16"),
    ("a 21:9 cinematic shot", "a 21:9 cinematic shot"),
    ("meet at 10:30 pm", "meet at 10:30 pm"),  # the contract's regex counts a time as a ratio
    # ...but not one glued to a word: \b needs a boundary after the digits.
    ("meet at 10:30pm", "meet at 10:30pm, video ratio 16:9"),
    ("version 123:456 build", "version 123:456 build, video ratio 16:9"),
])
def test_the_ratio_hint_is_added_unless_the_message_names_a_ratio(message: str, expected: str) -> None:
    assert with_ratio_hint(message, "16:9") == expected


@given(st.text(max_size=60), st.sampled_from(["16:9", "9:16", "1:1", "21:9"]))
def test_the_ratio_hint_is_added_once(message: str, ratio: str) -> None:
    once = with_ratio_hint(message, ratio)
    assert with_ratio_hint(once, ratio) == once
    assert cfg._NAMES_RATIO.search(once)


# --- the Seedance model hint (CONTRACT section 4) ------------------------------------------------

HINT = ", please use Seedance 2.0"
MODEL_NAMES = ["seedance", "kling", "wan", "midjourney", "seedream", "nano banana", "nanobanana"]


def test_a_gateway_message_naming_no_model_asks_for_seedance_before_the_ratio_hint() -> None:
    assert relayed_message("a cat surfing", NEXU_GATEWAY, "16:9") == "a cat surfing, please use Seedance 2.0, video ratio 16:9"
    assert relayed_message("a cat surfing \n", NEXU_GATEWAY, "9:16") == "a cat surfing, please use Seedance 2.0, video ratio 9:16"
    assert relayed_message("a cat 9:16", NEXU_GATEWAY, "16:9") == "a cat 9:16, please use Seedance 2.0"


@pytest.mark.parametrize("message", [
    "a cat surfing with Seedance", "SEEDANCE 2.0 please: a dog", "use kling for a dog", "Kling2.1 a fox",
    "a fox, model: Wan", "wan2.2 a heron", "用wan生成一段视频", "midjourney style poster", "a Seedream poster",
    "Nano Banana portrait", "nanobanana portrait", "nano-banana portrait", "seedance-2.0 a cat",
])
def test_a_message_naming_a_model_gets_no_model_hint(message: str) -> None:
    assert with_model_hint(message, NEXU_GATEWAY) == message
    assert relayed_message(message, NEXU_GATEWAY, "16:9") == with_ratio_hint(message, "16:9")


@pytest.mark.parametrize("message", [
    "I want a swan", "Taiwan at night", "a wand", "wander the streets", "sewanee river", "klingon ship",
    "seedances", "banana on a nano scale",
])
def test_words_that_merely_contain_a_model_name_do_not_count(message: str) -> None:
    assert not names_a_model(message)
    assert with_model_hint(message, NEXU_GATEWAY) == message.rstrip() + HINT


def test_the_direct_route_never_gets_the_model_hint() -> None:
    assert relayed_message("a cat surfing", LIBTV_DIRECT, "16:9") == "a cat surfing, video ratio 16:9"


def test_the_model_hint_can_be_turned_off() -> None:
    assert relayed_message("a cat surfing", NEXU_GATEWAY, "16:9", model_hint=False) == "a cat surfing, video ratio 16:9"


@pytest.mark.parametrize("value, enabled", [
    (None, True), ("", True), (" ", True), ("1", True), ("true", True), ("yes", True), ("on", True),
    ("0", False), (" 0 ", False), ("false", False), ("No", False), ("off", False),
])
def test_libtv_model_hint_is_on_unless_set_to_0(value: Any, enabled: bool) -> None:
    assert model_hint_enabled({} if value is None else {"LIBTV_MODEL_HINT": value}) is enabled


def test_an_unrecognised_libtv_model_hint_is_an_input_error() -> None:
    with pytest.raises(InputError, match="LIBTV_MODEL_HINT"):
        model_hint_enabled({"LIBTV_MODEL_HINT": "seedance"})


@given(st.text(max_size=60), st.sampled_from([NEXU_GATEWAY, LIBTV_DIRECT]), st.booleans())
def test_the_model_hint_is_added_at_most_once_and_only_on_the_gateway(message: str, mode: str, on: bool) -> None:
    hinted = with_model_hint(message, mode, on)
    assert with_model_hint(hinted, mode, on) == hinted
    added = mode == NEXU_GATEWAY and on and not names_a_model(message)
    assert hinted == (message.rstrip() + HINT if added else message)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
       st.sampled_from(MODEL_NAMES), st.text(max_size=20), st.sampled_from([str.lower, str.upper, str.title]))
def test_a_model_name_set_apart_from_other_letters_anywhere_means_no_hint(before: str, name: str, after: str, case) -> None:
    message = f"{before} {case(name)} {after}"
    assert with_model_hint(message, NEXU_GATEWAY) == message


# --- reading libtv.json ----------------------------------------------------------------------

def test_no_file_is_an_empty_config(home: Path) -> None:
    assert load_config(home) == Config()
    assert load_config(home / "does-not-exist") == Config()


def test_a_file_saved_with_a_bom_is_read(home: Path) -> None:
    (home / CONFIG_NAME).write_bytes(b"\xef\xbb\xbf" + json.dumps({"apiKey": GATEWAY_KEY}).encode())
    assert load_config(home).api_key == GATEWAY_KEY


@pytest.mark.parametrize("content", [
    "{", "not json", "[1, 2]", '"a string"', '{"apiKey": 5}', '{"apiKey": ["x"]}', '{"videoRatio": 16}',
    '{"videoRatio": "wide"}', b"\xff\xfe\x00garbage",
])
def test_a_broken_file_is_a_config_error_naming_the_file(home: Path, content: Any) -> None:
    path = home / CONFIG_NAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(home)
    assert str(path) in str(err.value)


def test_a_config_path_that_cannot_be_read_is_a_config_error(home: Path) -> None:
    (home / CONFIG_NAME).mkdir()
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_config(home)
    with pytest.raises(ConfigError, match="Cannot read config file"):
        update_config(home, video_ratio="1:1")


def test_require_api_key(home: Path) -> None:
    with pytest.raises(ConfigError) as err:
        require_api_key(home)
    assert str(err.value) == "No API key configured; run `setup --api-key ...`"
    write_raw(home, {"apiKey": "  ", "videoRatio": "1:1"})
    with pytest.raises(ConfigError):
        require_api_key(home)
    write_raw(home, {"apiKey": GATEWAY_KEY})
    assert require_api_key(home) == GATEWAY_KEY


# --- writing libtv.json ----------------------------------------------------------------------

def test_save_then_load_round_trips_and_omits_none(home: Path) -> None:
    path = save_config(home, Config(api_key=f" {DIRECT_KEY} ", video_ratio="09:16"))
    assert path == home / CONFIG_NAME
    assert json.loads(path.read_text()) == {"apiKey": DIRECT_KEY, "videoRatio": "9:16"}
    assert load_config(home) == Config(api_key=DIRECT_KEY, video_ratio="9:16")
    save_config(home, Config(video_ratio="1:1"))
    assert json.loads(path.read_text()) == {"videoRatio": "1:1"}


def test_save_creates_a_private_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "a" / "nexu"
    save_config(home, Config(api_key=GATEWAY_KEY))
    assert load_config(home).api_key == GATEWAY_KEY
    if POSIX:
        assert mode_of(home) == 0o700


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0, 0o022, 0o277])
def test_the_file_is_exactly_0600_whatever_the_umask(home: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        save_config(home, Config(api_key=GATEWAY_KEY))
    finally:
        os.umask(old)
    assert mode_of(home / CONFIG_NAME) == 0o600


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_the_temp_file_is_private_from_its_first_byte(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key must not be world-readable even between create and rename: no chmod-after-create."""
    real_open = os.open
    created: List[Tuple[str, int, int]] = []

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT:
            created.append((str(path), flags, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(cfg.os, "open", spy)
    old = os.umask(0)
    try:
        save_config(home, Config(api_key=GATEWAY_KEY))
    finally:
        os.umask(old)
    assert len(created) == 1
    tmp_name, flags, mode_at_creation = created[0]
    assert Path(tmp_name).parent == home
    assert flags & os.O_EXCL
    assert mode_at_creation == 0o600


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
def test_an_old_world_readable_file_becomes_private_on_the_next_save(home: Path) -> None:
    path = write_raw(home, {"apiKey": GATEWAY_KEY})
    path.chmod(0o644)
    update_config(home, video_ratio="1:1")
    assert mode_of(path) == 0o600


def test_the_write_is_synced_before_it_replaces_the_old_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(cfg.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(cfg.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    save_config(home, Config(api_key=GATEWAY_KEY))
    assert calls.index("fsync") < calls.index("replace")
    assert sorted(p.name for p in home.iterdir()) == [CONFIG_NAME]  # no temp file left behind


def test_a_failed_write_leaves_the_old_file_whole(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_raw(home, {"apiKey": GATEWAY_KEY, "videoRatio": "9:16"})
    before = path.read_bytes()

    def disk_full(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cfg.os, "replace", disk_full)
    with pytest.raises(ConfigError, match="Cannot write config file"):
        update_config(home, api_key=DIRECT_KEY)
    assert path.read_bytes() == before
    assert sorted(p.name for p in home.iterdir()) == [CONFIG_NAME]


def test_fields_the_user_added_are_kept(home: Path) -> None:
    extra: Dict[str, Any] = {"note": "mine", "apiKey": GATEWAY_KEY, "nested": {"a": [1, 2]}, "videoRatio": "9:16"}
    path = write_raw(home, extra)
    update_config(home, api_key=DIRECT_KEY)
    save_config(home, Config(api_key=None, video_ratio="1:1"))
    data = json.loads(path.read_text())
    assert data == {"note": "mine", "nested": {"a": [1, 2]}, "videoRatio": "1:1"}
    assert list(data) == ["note", "nested", "videoRatio"]  # the user's order too


@pytest.mark.parametrize("change, error", [
    ({"api_key": "sk-0123456789abcdef"}, ConfigError),
    ({"api_key": ""}, ConfigError),
    ({"video_ratio": "16x9"}, InputError),
    ({"api_key": DIRECT_KEY, "video_ratio": "0:1"}, InputError),  # one bad value: nothing written
])
def test_invalid_values_write_nothing(home: Path, change: Dict[str, str], error: type) -> None:
    path = write_raw(home, {"apiKey": GATEWAY_KEY, "videoRatio": "9:16"})
    before = path.read_bytes()
    with pytest.raises(error):
        update_config(home, **change)
    assert path.read_bytes() == before


def test_update_can_repair_a_file_that_does_not_load(home: Path) -> None:
    write_raw(home, {"apiKey": GATEWAY_KEY, "videoRatio": "wide"})
    with pytest.raises(ConfigError, match="update-ratio"):
        load_config(home)
    update_config(home, video_ratio="16:9")
    assert load_config(home) == Config(api_key=GATEWAY_KEY, video_ratio="16:9")


def test_a_corrupt_file_is_not_overwritten(home: Path) -> None:
    path = write_raw(home, '{"apiKey": "mgk_0123456789abcdef", ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        update_config(home, video_ratio="1:1")
    assert path.read_text() == '{"apiKey": "mgk_0123456789abcdef", '
