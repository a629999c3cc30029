"""The channel registry (built-ins, the lark alias, entry-point plugins) and the shared openclaw.json lookup."""
from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest

from libtv_fsm import errors
from libtv_fsm.channels import Channel, channel_names, get_channel
from libtv_fsm.channels.accounts import load_openclaw_config, openclaw_config_candidates, resolve_secret
from libtv_fsm.channels.feishu import FeishuChannel

PLUGIN_SOURCE = '''
"""A third-party channel, installed as a distribution with an entry point."""
from libtv_fsm.channels.base import Channel


class DemoChannel(Channel):
    name = "demo"
    dedupes = False
    max_video_bytes = 50 * 1024 * 1024
    max_image_bytes = 10 * 1024 * 1024

    def __init__(self, env, session=None, variant=None):
        self.variant = variant  # a delegating channel takes a sub-channel
        super().__init__(env, session)

    def normalize_target(self, chat_id):
        return chat_id

    def check_ready(self):
        pass

    def send_video(self, target, path, *, file_name, dedupe_key):
        return "v"

    def send_image(self, target, path, *, dedupe_key):
        return "i"

    def send_text(self, target, text, *, dedupe_key):
        return "t"


class Impostor(DemoChannel):
    name = "feishu"


def not_a_channel(env, session=None):
    return object()
'''


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path holding a module and its dist-info with entry points, as pip would install it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "libtv_demo_channel.py").write_text(PLUGIN_SOURCE, encoding="utf-8")
    info = site / "libtv_demo_channel-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: libtv-demo-channel\nVersion: 0.1\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [libtv_fsm.channels]
        demo = libtv_demo_channel:DemoChannel
        feishu = libtv_demo_channel:Impostor
        junk = libtv_demo_channel:not_a_channel
        broken = libtv_demo_channel_missing:Nothing
        """), encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("libtv_demo_channel", None)


ENV: Dict[str, str] = {"FEISHU_APP_ID": "cli_x", "FEISHU_APP_SECRET": "secret_x"}


def test_feishu_is_built_in_and_lark_is_its_alias() -> None:
    assert {"feishu", "lark"} <= set(channel_names())
    assert isinstance(get_channel("feishu", ENV), FeishuChannel)
    assert isinstance(get_channel(" Lark ", ENV), FeishuChannel)


def test_an_unknown_channel_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(errors.InputError) as err:
        get_channel("carrier-pigeon", ENV)
    assert str(err.value).startswith("Unknown channel 'carrier-pigeon'; known: ")
    assert "feishu" in str(err.value) and "lark" in str(err.value)
    with pytest.raises(errors.InputError):
        get_channel("", ENV)


def test_feishu_takes_no_sub_channel() -> None:
    with pytest.raises(errors.InputError, match="no sub-channel"):
        get_channel("feishu:whatsapp", ENV)


def test_a_channel_registered_by_entry_point_is_found_without_editing_the_package(plugin_dir: Path) -> None:
    assert "demo" in channel_names()
    channel = get_channel("demo", ENV)
    assert isinstance(channel, Channel) and channel.name == "demo" and channel.dedupes is False
    assert channel.send_text("x", "hi", dedupe_key="k") == "t"
    assert get_channel("demo:whatsapp", ENV).variant == "whatsapp"  # type: ignore[attr-defined]


def test_a_plugin_cannot_replace_a_built_in_channel(plugin_dir: Path) -> None:
    assert isinstance(get_channel("feishu", ENV), FeishuChannel)


def test_a_plugin_that_is_not_a_channel_or_does_not_load_is_a_clear_config_error(plugin_dir: Path) -> None:
    with pytest.raises(errors.ConfigError, match="did not give a libtv_fsm Channel"):
        get_channel("junk", ENV)
    with pytest.raises(errors.ConfigError, match="failed to load"):
        get_channel("broken", ENV)


# ---- openclaw.json lookup shared by every channel ----

def test_openclaw_json_is_looked_for_in_contract_order(tmp_path: Path) -> None:
    env = {"OPENCLAW_CONFIG": str(tmp_path / "a.json"), "OPENCLAW_STATE_DIR": str(tmp_path / "state"),
           "NEXU_HOME": str(tmp_path / "nexu")}
    assert openclaw_config_candidates(env) == [
        tmp_path / "a.json", tmp_path / "state" / "openclaw.json",
        tmp_path / "nexu" / "runtime" / "openclaw" / "state" / "openclaw.json"]
    assert load_openclaw_config(env) == (None, {})
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "openclaw.json").write_text(json.dumps({"from": "state"}), encoding="utf-8")
    assert load_openclaw_config(env)[1] == {"from": "state"}
    (tmp_path / "a.json").write_text(json.dumps({"from": "explicit"}), encoding="utf-8")
    assert load_openclaw_config(env)[1] == {"from": "explicit"}


def test_openclaw_json_with_comments_and_trailing_commas_is_read(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text(textwrap.dedent("""\
        // written by hand
        {
          /* the chat */ "channels": {"feishu": {"domain": "https://open.feishu.cn/x//y", "note": 'it\\'s',},},
        }
        """), encoding="utf-8")
    _, data = load_openclaw_config({"OPENCLAW_CONFIG": str(path), "NEXU_HOME": str(tmp_path)})
    assert data == {"channels": {"feishu": {"domain": "https://open.feishu.cn/x//y", "note": "it's"}}}


def test_a_broken_openclaw_json_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(errors.ConfigError, match="openclaw.json is not valid JSON"):
        load_openclaw_config({"OPENCLAW_CONFIG": str(path), "NEXU_HOME": str(tmp_path)})


def test_secret_refs_resolve_from_the_environment_and_other_sources_are_refused() -> None:
    env = {"MY_TOKEN": "tok-1"}
    assert resolve_secret(" plain ", env, "x") == "plain"
    assert resolve_secret({"source": "env", "provider": "default", "id": "MY_TOKEN"}, env, "x") == "tok-1"
    assert resolve_secret({"source": "env", "id": "UNSET"}, env, "x") == ""
    with pytest.raises(errors.ConfigError, match="source 'file'"):
        resolve_secret({"source": "file", "id": "/run/secret"}, env, "channels.telegram.botToken")
