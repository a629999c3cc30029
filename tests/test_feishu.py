"""The Feishu/Lark channel: where its credentials come from, its targets, and real sends against the simulator."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Dict, List

import pytest

from libtv_fsm import errors
from libtv_fsm.channels import PermissionDenied, TooLarge, get_channel
from libtv_fsm.channels.feishu import FeishuChannel, grant_link, resolve_credentials
from libtv_fsm.transport import new_session, retry_policy

PREWARM = {"__nexu_internal_feishu_prewarm__": {"enabled": False, "appId": "nexu-feishu-prewarm",
                                                "appSecret": "nexu-feishu-prewarm", "connectionMode": "websocket"}}


def write_openclaw(path: Path, feishu: Dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"channels": {"feishu": feishu, "slack": {"botToken": "xoxb-no"}}}), encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    """No Feishu variables, and a NEXU_HOME of its own."""
    return {"NEXU_HOME": str(tmp_path / "nexu")}


def nexu_openclaw(env: Dict[str, str]) -> Path:
    return Path(env["NEXU_HOME"]) / "runtime" / "openclaw" / "state" / "openclaw.json"


# ---- credentials ----

def test_environment_credentials_win_over_openclaw_json(env: Dict[str, str]) -> None:
    write_openclaw(nexu_openclaw(env), {"accounts": {"a": {"enabled": True, "appId": "cli_file", "appSecret": "s"}}})
    creds = resolve_credentials(dict(env, FEISHU_APP_ID="cli_env", FEISHU_APP_SECRET="sec_env"))
    assert (creds.app_id, creds.app_secret, creds.base_url) == ("cli_env", "sec_env", "https://open.feishu.cn")
    with pytest.raises(errors.ConfigError, match="must be set together"):
        resolve_credentials(dict(env, FEISHU_APP_ID="cli_env"))


def test_openclaw_json_is_found_at_openclaw_config_then_state_dir_then_nexu_home(env: Dict[str, str], tmp_path: Path) -> None:
    account = {"enabled": True, "appSecret": "s"}
    write_openclaw(nexu_openclaw(env), {"accounts": {"n": dict(account, appId="cli_nexu")}})
    assert resolve_credentials(env).app_id == "cli_nexu"
    write_openclaw(tmp_path / "state" / "openclaw.json", {"accounts": {"s": dict(account, appId="cli_state")}})
    env["OPENCLAW_STATE_DIR"] = str(tmp_path / "state")
    assert resolve_credentials(env).app_id == "cli_state"
    write_openclaw(tmp_path / "custom.json", {"accounts": {"c": dict(account, appId="cli_custom")}})
    env["OPENCLAW_CONFIG"] = str(tmp_path / "custom.json")
    assert resolve_credentials(env).app_id == "cli_custom"


def test_first_enabled_real_account_is_taken_skipping_disabled_and_the_prewarm_placeholder(env: Dict[str, str]) -> None:
    accounts: Dict[str, Any] = dict(PREWARM)
    accounts["off"] = {"enabled": False, "appId": "cli_off", "appSecret": "s_off"}
    accounts["empty"] = {"enabled": True, "appId": "cli_empty", "appSecret": ""}
    accounts["real"] = {"enabled": True, "appId": "cli_real", "appSecret": "s_real"}
    accounts["later"] = {"enabled": True, "appId": "cli_later", "appSecret": "s_later"}
    write_openclaw(nexu_openclaw(env), {"enabled": True, "accounts": accounts})
    creds = resolve_credentials(env)
    assert (creds.app_id, creds.app_secret) == ("cli_real", "s_real")
    assert "account 'real'" in creds.source


def test_the_older_list_form_of_accounts_is_read(env: Dict[str, str]) -> None:
    write_openclaw(nexu_openclaw(env), {"accounts": [
        {"id": "off", "enabled": False, "appId": "cli_off", "appSecret": "s"},
        {"id": "on", "enabled": True, "appId": "cli_on", "appSecret": "s_on", "domain": "lark"}]})
    creds = resolve_credentials(env)
    assert (creds.app_id, creds.base_url) == ("cli_on", "https://open.larksuite.com")


def test_default_account_is_taken_when_set(env: Dict[str, str]) -> None:
    accounts = {"first": {"enabled": True, "appId": "cli_first", "appSecret": "s1"},
                "chosen": {"enabled": True, "appId": "cli_chosen", "appSecret": "s2"}}
    write_openclaw(nexu_openclaw(env), {"defaultAccount": "chosen", "accounts": accounts})
    assert resolve_credentials(env).app_id == "cli_chosen"
    write_openclaw(nexu_openclaw(env), {"defaultAccount": "gone", "accounts": accounts})
    with pytest.raises(errors.ConfigError, match="defaultAccount 'gone'"):
        resolve_credentials(env)


def test_only_placeholder_or_disabled_accounts_mean_no_credentials(env: Dict[str, str]) -> None:
    write_openclaw(nexu_openclaw(env), {"accounts": dict(PREWARM, off={"enabled": False, "appId": "a", "appSecret": "b"})})
    with pytest.raises(errors.ConfigError, match="No enabled Feishu account"):
        resolve_credentials(env)


@pytest.mark.parametrize("placeholder", [
    {"__nexu_internal_feishu_prewarm__": {"enabled": True, "appId": "cli_p", "appSecret": "s_p"}},
    {"warm": {"appId": "nexu-feishu-prewarm", "appSecret": "nexu-feishu-prewarm"}},
])
def test_the_prewarm_placeholder_is_skipped_even_when_not_marked_disabled(env: Dict[str, str], placeholder: Any) -> None:
    accounts = dict(placeholder, real={"appId": "cli_real", "appSecret": "s_real"})
    write_openclaw(nexu_openclaw(env), {"accounts": accounts})
    assert resolve_credentials(env).app_id == "cli_real"


def test_missing_credentials_say_where_they_were_looked_for(env: Dict[str, str]) -> None:
    channel = get_channel("feishu", env)
    with pytest.raises(errors.ConfigError) as err:
        channel.check_ready()
    assert "FEISHU_APP_ID" in str(err.value) and "openclaw.json" in str(err.value)


@pytest.mark.parametrize("account_domain, channel_domain, expected", [
    (None, None, "https://open.feishu.cn"),
    ("feishu", "lark", "https://open.feishu.cn"),
    ("lark", None, "https://open.larksuite.com"),
    (None, "lark", "https://open.larksuite.com"),
    ("https://feishu.example.test/", None, "https://feishu.example.test"),
])
def test_domain_per_account_or_per_channel(env: Dict[str, str], account_domain: Any, channel_domain: Any,
                                           expected: str) -> None:
    account = {"enabled": True, "appId": "cli_a", "appSecret": "s"}
    if account_domain:
        account["domain"] = account_domain
    section: Dict[str, Any] = {"accounts": {"a": account}}
    if channel_domain:
        section["domain"] = channel_domain
    write_openclaw(nexu_openclaw(env), section)
    assert resolve_credentials(env).base_url == expected
    assert resolve_credentials(dict(env, LIBTV_FEISHU_BASE_URL="http://127.0.0.1:9/")).base_url == "http://127.0.0.1:9"


def test_a_bad_domain_and_secret_refs(env: Dict[str, str]) -> None:
    write_openclaw(nexu_openclaw(env), {"accounts": {"a": {"appId": "cli_a", "appSecret": "s", "domain": "ftp://x"}}})
    with pytest.raises(errors.ConfigError, match="domain 'ftp://x'"):
        resolve_credentials(env)
    ref = {"source": "env", "provider": "default", "id": "LARK_SECRET"}
    write_openclaw(nexu_openclaw(env), {"accounts": {"a": {"appId": "cli_a", "appSecret": ref}}})
    assert resolve_credentials(dict(env, LARK_SECRET="from-env")).app_secret == "from-env"
    with pytest.raises(errors.ConfigError, match="No enabled Feishu account"):
        resolve_credentials(env)  # the variable is not set


def test_the_app_secret_never_shows_in_a_repr() -> None:
    creds = resolve_credentials({"FEISHU_APP_ID": "cli_a", "FEISHU_APP_SECRET": "very-secret-value"})
    assert "very-secret-value" not in repr(creds)


# ---- targets ----

@pytest.mark.parametrize("raw, normalized, receiver", [
    ("ou_abc123", "ou_abc123", ("open_id", "ou_abc123")),
    ("oc_group9", "oc_group9", ("chat_id", "oc_group9")),
    (" user:ou_abc123 ", "ou_abc123", ("open_id", "ou_abc123")),
    ("chat:oc_group9", "oc_group9", ("chat_id", "oc_group9")),
    ("feishu:oc_group9", "oc_group9", ("chat_id", "oc_group9")),
    ("user:custom_id", "user:custom_id", ("open_id", "custom_id")),
    ("chat:7012345", "chat:7012345", ("chat_id", "7012345")),
])
def test_targets_pick_open_id_or_chat_id(raw: str, normalized: str, receiver: Any) -> None:
    channel = FeishuChannel({})
    assert channel.normalize_target(raw) == normalized
    assert channel.normalize_target(normalized) == normalized  # idempotent: the waiter may normalize again
    assert channel._receiver(normalized) == receiver


@pytest.mark.parametrize("junk", ["", "   ", "12345", "user:", "oc_a/../b", "telegram:123", "oc_" + "x" * 200, "ou_a b"])
def test_junk_targets_are_refused(junk: str) -> None:
    with pytest.raises(errors.InputError, match="Invalid Feishu chat id"):
        FeishuChannel({}).normalize_target(junk)


# ---- against the simulator ----

@pytest.fixture
def feishu(sim: Any) -> FeishuChannel:
    channel = get_channel("feishu", sim.env())
    assert isinstance(channel, FeishuChannel)
    return channel


def small_file(tmp_path: Path, name: str, size: int = 2048) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\x00" * size)
    return path


def test_video_goes_as_media_image_as_image_text_as_text_with_one_token(sim: Any, feishu: FeishuChannel,
                                                                          tmp_path: Path) -> None:
    video, image = small_file(tmp_path, "clip.mp4"), small_file(tmp_path, "pic.png")
    ids = [feishu.send_video("oc_group1", video, file_name="clip.mp4", dedupe_key="k1"),
           feishu.send_image("ou_user1", image, dedupe_key="k2"),
           feishu.send_text("user:ou_user1", "hello", dedupe_key="k3")]
    for n in range(5):
        ids.append(feishu.send_text("oc_group1", f"more {n}", dedupe_key=f"more-{n}"))
    msgs: List[Dict[str, Any]] = sim.feishu.messages
    assert [m["message_id"] for m in msgs] == ids
    assert [(m["msg_type"], m["receive_id_type"], m["receive_id"]) for m in msgs[:3]] == [
        ("media", "chat_id", "oc_group1"), ("image", "open_id", "ou_user1"), ("text", "open_id", "ou_user1")]
    assert msgs[0]["content"]["file_key"] == sim.feishu.uploads[0]["key"]
    assert sim.feishu.uploads[0]["file_type"] == "mp4" and sim.feishu.uploads[0]["file_name"] == "clip.mp4"
    assert sim.feishu.uploads[0]["size"] == 2048
    assert msgs[1]["content"]["image_key"] == sim.feishu.uploads[1]["key"]
    assert msgs[2]["content"] == {"text": "hello"}
    assert [m["uuid"] for m in msgs[:3]] == ["k1", "k2", "k3"]
    assert sim.feishu.tokens_issued == 1, "the tenant token is fetched once and reused"


def test_the_same_dedupe_key_sends_one_message(sim: Any, feishu: FeishuChannel, tmp_path: Path) -> None:
    video = small_file(tmp_path, "clip.mp4")
    first = feishu.send_video("oc_group1", video, file_name="clip.mp4", dedupe_key="same")
    again = feishu.send_video("oc_group1", video, file_name="clip.mp4", dedupe_key="same")
    assert first == again and len(sim.feishu.messages) == 1


def test_a_long_dedupe_key_is_shortened_to_feishus_50_characters(sim: Any, feishu: FeishuChannel) -> None:
    feishu.send_text("oc_group1", "a", dedupe_key="x" * 80)
    feishu.send_text("oc_group1", "a", dedupe_key="x" * 80)
    assert len(sim.feishu.messages) == 1 and len(sim.feishu.messages[0]["uuid"]) <= 50


def test_a_revoked_token_is_fetched_again_once(sim: Any, feishu: FeishuChannel) -> None:
    feishu.send_text("oc_group1", "a", dedupe_key="a")
    sim.feishu.revoke_tokens()
    feishu.send_text("oc_group1", "b", dedupe_key="b")
    assert sim.feishu.tokens_issued == 2 and len(sim.feishu.messages) == 2


def test_a_token_near_its_expiry_is_replaced(sim: Any) -> None:
    now = [1000.0]
    channel = FeishuChannel(sim.env(), clock=lambda: now[0])
    channel.send_text("oc_group1", "a", dedupe_key="a")
    now[0] += 7200 - 400  # still more than the margin left: reused
    channel.send_text("oc_group1", "b", dedupe_key="b")
    assert sim.feishu.tokens_issued == 1
    now[0] += 200  # inside the last five minutes: a fresh one
    channel.send_text("oc_group1", "c", dedupe_key="c")
    assert sim.feishu.tokens_issued == 2


def test_missing_scope_is_permission_denied_with_the_grant_link(sim: Any, feishu: FeishuChannel, tmp_path: Path) -> None:
    sim.feishu.deny_scope = True
    with pytest.raises(PermissionDenied) as err:
        feishu.send_video("oc_group1", small_file(tmp_path, "clip.mp4"), file_name="clip.mp4", dedupe_key="k")
    assert err.value.grant_link == sim.feishu.grant_link()
    assert err.value.grant_link in str(err.value) and not err.value.transient
    assert sim.feishu.messages == []


def test_grant_link_falls_back_to_the_url_in_msg() -> None:
    link = "https://open.feishu.cn/app/cli_a/auth?q=im:resource&op_from=openapi"
    assert grant_link({"code": 99991672, "msg": f"缺少权限，点击链接申请并开通任一权限即可：{link}。"}) == link
    assert grant_link({"code": 99991672, "msg": "no link here"}) is None


def test_a_file_over_the_limit_is_too_large_before_any_upload(sim: Any, feishu: FeishuChannel, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as fh:
        fh.truncate(feishu.max_image_bytes + 1)
    with pytest.raises(TooLarge):
        feishu.send_image("oc_group1", big, dedupe_key="k")
    assert sim.requests_to("/open-apis/im/v1/images") == []


def test_platform_errors_are_permanent_and_outages_transient(sim: Any, feishu: FeishuChannel) -> None:
    with pytest.raises(errors.PermanentError) as err:
        feishu.send_text("chat:ou_wrongtype", "a", dedupe_key="a")  # an ou_ id sent as chat_id
    assert "code 230001" in str(err.value) and not err.value.transient
    sim.inject("/open-apis/im/v1/messages", "503")
    with pytest.raises(errors.UnavailableError):
        feishu.send_text("oc_group1", "a", dedupe_key="a")
    sim.inject("/open-apis/im/v1/messages", "html")
    with pytest.raises(errors.BadResponse):
        feishu.send_text("oc_group1", "a", dedupe_key="a")


def test_unreachable_feishu_is_a_network_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = FeishuChannel({"FEISHU_APP_ID": "cli_a", "FEISHU_APP_SECRET": "s3cr3t-value",
                             "LIBTV_FEISHU_BASE_URL": f"http://127.0.0.1:{port}"},
                            session=new_session(retry_policy(total=0)))  # no connect retries: keep it fast
    with pytest.raises(errors.NetworkError) as err:
        channel.send_text("oc_group1", "a", dedupe_key="a")
    assert "s3cr3t-value" not in str(err.value)


def test_wrong_credentials_are_an_auth_error_without_the_secret(sim: Any) -> None:
    channel = FeishuChannel(dict(sim.env(), FEISHU_APP_SECRET="wrong-secret-123"))
    with pytest.raises(errors.AuthError) as err:
        channel.send_text("oc_group1", "a", dedupe_key="a")
    assert "wrong-secret-123" not in str(err.value) and "code 10014" in str(err.value)


def test_neither_secret_nor_token_reaches_the_log(sim: Any, feishu: FeishuChannel, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    feishu.send_video("oc_group1", small_file(tmp_path, "clip.mp4"), file_name="clip.mp4", dedupe_key="k")
    token = feishu._token
    assert token and token not in caplog.text and sim.FEISHU_APP_SECRET not in caplog.text
