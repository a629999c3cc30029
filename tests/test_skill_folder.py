"""The built skill folder runs on a bare python3 (and under `uv run`) from any directory, with nothing installed."""
from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import ROOT, Cli, Ran, legacy_sessions, point_at_sim
from libtv_fsm import SessionStore, skill
from libtv_fsm import events as ev
from waiting import wait_for

GROUP = "oc_skill_folder_group"
# What a bare interpreter must not carry into the run: the test environment's own packages.
_LEAKS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONWARNINGS")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The skill folder, built by the real build command into a temporary directory."""
    out = tmp_path_factory.mktemp("built") / "libtv-video"
    proc = subprocess.run([sys.executable, "-m", "libtv_fsm.skill", "build", str(out)], capture_output=True,
                          text=True, timeout=120, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def fresh_venv(base_python: str, where: Path) -> str:
    """A virtualenv with nothing installed, not even pip; returns its interpreter."""
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = subprocess.run([str(python), "-c", "import requests"], capture_output=True, text=True)
    assert probe.returncode != 0, "the fresh virtualenv can import requests: not bare"
    return str(python)


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_venv(sys.executable, tmp_path_factory.mktemp("bare") / "venv")


def min_python(folder: Path) -> tuple:
    text = (folder / "vendor" / skill.MANIFEST).read_text(encoding="utf-8")
    found = re.search(r"^requires-python >=(\d+)\.(\d+)$", text, re.MULTILINE)
    assert found, text
    return int(found.group(1)), int(found.group(2))


class FolderCli(Cli):
    """The folder's script run by a given command (`python`, or `uv run ...`), with nothing leaking in."""

    def __init__(self, home: Path, command: List[str], cwd: Path) -> None:
        super().__init__(home)
        self.command = command
        self.cwd = cwd
        for name in _LEAKS:
            self.env.pop(name, None)
        self.env["PYTHONNOUSERSITE"] = "1"

    def __call__(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 60, **_: object) -> Ran:
        full = dict(self.env)
        full.update(env or {})
        proc = subprocess.run(self.command + [str(a) for a in args], env=full, capture_output=True, text=True,
                              timeout=timeout, cwd=str(self.cwd), stdin=subprocess.DEVNULL, encoding="utf-8")
        return Ran(proc)


def exercise(cli: FolderCli, sim) -> None:  # type: ignore[no-untyped-def]
    """setup, check, create-session, then the detached waiter delivers to the chat: all through the folder."""
    point_at_sim(cli, sim)
    ran = cli("check")
    assert ran.code == 0 and "Remaining uses: 10/10" in ran.out, ran
    ran = cli("create-session", "a cat surfing at sunset", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0 and len(ran.lines) == 1, ran
    out = ran.json()
    assert out["deliverable"] is True, out
    sid, home = out["sessionId"], cli.home
    wait_for(lambda: SessionStore(home).replay(sid).state == "delivered", 30, "the waiter to deliver")
    assert [m["msg_type"] for m in sim.feishu.messages if m["receive_id"] == GROUP] == ["media"]
    history = cli("history", sid, "--json")
    assert history.code == 0 and history.json()["state"] == "delivered", history

    from libtv_fsm.recovery import waiter_running

    wait_for(lambda: not waiter_running(SessionStore(home), sid), 30, "the waiter to exit")
    log = (home / f"libtv-waiter-{sid}.log").read_text(encoding="utf-8")
    assert "delivered" in log and "Traceback" not in log and "Warning" not in log, log
    assert "Traceback" not in ran.err and "Warning" not in ran.err, ran


def test_the_folder_holds_the_skill_and_pure_python_copies_of_every_dependency(folder: Path) -> None:
    assert (folder / "SKILL.md").is_file() and (folder / "libtv_fsm" / "cli" / "__init__.py").is_file()
    assert {p.name for p in (folder / "scripts").iterdir()} >= {"libtv_video.py", "feishu_send_video.py"}
    vendor = folder / "vendor"
    for module in ("transitions", "attr", "cattrs", "requests", "urllib3", "filelock", "tenacity", "requests_toolbelt",
                   "idna", "certifi"):
        assert (vendor / module).is_dir() or (vendor / f"{module}.py").is_file(), module
    compiled = [p for p in folder.rglob("*") if p.suffix in (".so", ".pyd", ".dylib", ".pyc")]
    assert compiled == []
    infos = sorted(vendor.glob("*.dist-info"))
    assert infos and all(any(re.search("LICEN[CS]E", p.name) for p in info.rglob("*")) for info in infos)
    for info in infos:  # the versions the tests ran with, nothing else
        name, version = info.name[: -len(".dist-info")].rsplit("-", 1)
        assert metadata.version(name) == version


def test_the_built_folder_runs_on_a_bare_python_from_another_directory(folder, bare_python, sim, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "nexu"
    home.mkdir()
    exercise(FolderCli(home, [bare_python, str(folder / "scripts" / "libtv_video.py")], elsewhere), sim)


def test_the_gateway_address_in_the_folders_script_is_the_one_it_uses(folder, bare_python, sim, tmp_path):
    """Nexu's guide has the agent change the skill's gateway by editing GATEWAY_URL in scripts/libtv_video.py:
    the edited line is what `check`, create-session and the worker it starts talk to; LIBTV_GATEWAY_URL still wins."""
    copy = tmp_path / "libtv-video"
    shutil.copytree(folder, copy)
    script = copy / "scripts" / "libtv_video.py"
    text = script.read_text(encoding="utf-8")
    line = 'GATEWAY_URL = "https://seedance.nexu.io/"'
    assert text.count(line) == 1, "the folder's script does not carry the production gateway address"
    script.write_text(text.replace(line, f'GATEWAY_URL = "{sim.env()["LIBTV_GATEWAY_URL"]}/"'), encoding="utf-8")
    home = tmp_path / "nexu"
    home.mkdir()
    cli = FolderCli(home, [bare_python, str(script)], tmp_path)
    point_at_sim(cli, sim)
    del cli.env["LIBTV_GATEWAY_URL"]
    # Were the edit ignored, the production default would be next: any host but loopback goes to a closed proxy.
    cli.env.update({"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"})
    ran = cli("check")
    assert ran.code == 0 and "Remaining uses: 10/10" in ran.out, ran
    ran = cli("create-session", "a fox in the snow", "--channel", "feishu", "--chat-id", GROUP)
    assert ran.code == 0, ran
    sid = ran.json()["sessionId"]
    wait_for(lambda: SessionStore(home).replay(sid).state == "delivered", 30, "the worker to deliver")
    closed = cli("check", env={"LIBTV_GATEWAY_URL": "http://127.0.0.1:9"})
    assert closed.code != 0 and closed.lines[-1].startswith("❌"), closed


def test_a_legacy_sessions_file_is_imported_through_the_folder_and_nothing_is_lost(folder, bare_python, tmp_path):
    home = tmp_path / "nexu"
    home.mkdir()
    legacy = legacy_sessions(GROUP)
    original = json.dumps(legacy, indent=2).encode("utf-8")
    (home / "libtv-sessions.json").write_bytes(original)
    cli = FolderCli(home, [bare_python, str(folder / "scripts" / "libtv_video.py")], tmp_path)
    ran = cli("recover", "--json", env={"LIBTV_SKIP_BACKGROUND_WAITER": "1"})  # no key: nothing re-checked
    assert ran.code == 0, ran
    states = {s["session_id"]: s["state"] for s in ran.json()["sessions"]}
    assert states == {"old-delivered": "delivered", "old-completed": "completed", "old-failed": "failed",
                      "old-timeout": "timeout"}
    backups = list(home.glob("libtv-sessions.json.legacy-*.bak"))
    assert len(backups) == 1 and backups[0].read_bytes() == original
    rebuilt = {r["session_id"]: r for r in json.loads((home / "libtv-sessions.json").read_text(encoding="utf-8"))}
    for record in legacy:
        again = rebuilt[record["session_id"]]
        for field, value in record.items():
            if field == "updated_at" and record["status"] == "completed":
                continue  # a rebuilt record's updated_at is its last event's time
            if field.endswith("_at"):  # the same instant, written with microseconds
                value, again[field] = ev.parse_time(value), ev.parse_time(again[field])
            assert again.get(field) == value, (record["session_id"], field, again)


def _python39() -> Optional[str]:
    """A Python 3.9 interpreter on this machine, if there is one (pyenv keeps them out of PATH)."""
    candidates = [shutil.which("python3.9")] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 9)"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def test_on_python_3_9_the_folder_runs_or_says_which_python_it_needs(folder, sim, tmp_path):
    python39 = _python39()
    if python39 is None:
        pytest.skip("no Python 3.9 on this machine")
    bare39 = fresh_venv(python39, tmp_path / "venv39")
    home = tmp_path / "nexu"
    home.mkdir()
    cli = FolderCli(home, [bare39, str(folder / "scripts" / "libtv_video.py")], tmp_path)
    needed = min_python(folder)
    if needed > (3, 9):
        # Built from dependencies that need a newer Python (CI pins ones that run on 3.9): one clear line.
        ran = cli("check")
        assert ran.code == 1 and ran.lines == [ran.last] and ran.last.startswith("❌ ") and "Python >= 3." in ran.last
        assert "Traceback" not in ran.err
        return
    exercise(cli, sim)


# --- uv run --------------------------------------------------------------------------------------


def _uv() -> Optional[str]:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    return found if Path(found).is_file() else None


def _wheel_tag(dist: metadata.Distribution) -> str:
    tags = [t.split("-") for t in re.findall(r"^Tag:\s*(\S+)\s*$", dist.read_text("WHEEL") or "", re.MULTILINE)]
    return "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3)) if tags else "py3-none-any"


def wheelhouse(out: Path) -> Path:
    """Wheels of the installed runtime dependencies, rebuilt from their installed files (uv then needs no index)."""
    out.mkdir(parents=True, exist_ok=True)
    chosen = skill.plan(skill.source_root())
    names = list(chosen.dists) + [line.split()[0] for line in chosen.left_out]
    for name in names:
        dist = metadata.distribution(name)
        files = skill.runtime_files(dist)
        info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
        record = []
        with zipfile.ZipFile(out / f"{info[: -len('.dist-info')]}-{_wheel_tag(dist)}.whl", "w") as wheel:
            for path in files:
                data = Path(str(dist.locate_file(str(path)))).read_bytes()
                wheel.writestr(str(path), data)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                record.append(f"{path},sha256={digest},{len(data)}")
            wheel.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return out


def test_uv_run_works_on_the_folder_and_on_the_checkout(folder, bare_python, sim, tmp_path):
    uv = _uv()
    if uv is None:
        if os.environ.get("CI"):
            pytest.fail("uv is not installed: .ci/run installs it")
        pytest.skip("uv is not installed")
    wheels = wheelhouse(tmp_path / "wheels")
    # Offline against wheels made from this environment: the test downloads nothing.
    uv_run = [uv, "run", "--quiet", "--offline", "--no-index", "--find-links", str(wheels), "--python", bare_python]
    uv_env = {"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
    home = tmp_path / "nexu"
    home.mkdir()
    cli = FolderCli(home, uv_run + [str(folder / "scripts" / "libtv_video.py")], tmp_path)
    cli.env.update(uv_env)
    exercise(cli, sim)

    checkout = FolderCli(tmp_path / "nexu-checkout", uv_run + [str(ROOT / "scripts" / "libtv_video.py")], tmp_path)
    checkout.home.mkdir()
    checkout.env.update(uv_env)
    ran = checkout("setup", "--api-key", sim.GATEWAY_KEY)
    assert ran.code == 0 and "nexu_gateway" in ran.out, ran


def test_the_script_declares_the_projects_dependencies_inline(folder: Path) -> None:
    text = (ROOT / "scripts" / "libtv_video.py").read_text(encoding="utf-8")
    block = re.search(r"^# /// script\n((?:#.*\n)+?)# ///$", text, re.MULTILINE)
    assert block, "no PEP 723 block"
    body = "\n".join(line[2:] for line in block.group(1).splitlines())
    inline = re.findall(r'^\s+"([^"]+)",?$', body, re.MULTILINE)
    assert inline == skill.project_requirements(ROOT)[0]
    assert 'requires-python = ">=3.9"' in body


# --- SKILL.md ------------------------------------------------------------------------------------


def _frontmatter() -> Dict[str, str]:
    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head = text.split("---\n", 2)[1]
    # OpenClaw's embedded parser reads single-line keys only, and metadata as one line of JSON.
    fields = dict(line.split(": ", 1) for line in head.splitlines())
    assert all(re.fullmatch(r"[a-z]+", key) for key in fields), fields
    return fields


def test_skill_md_has_openclaw_frontmatter() -> None:
    fields = _frontmatter()
    assert fields["name"] == "libtv-video"
    description = json.loads(fields["description"])
    for phrase in ("make a video", "animate this photo", "生成视频", "Use when"):
        assert phrase in description
    openclaw = json.loads(fields["metadata"])["openclaw"]
    assert openclaw["emoji"] and "python3" in openclaw["requires"]["anyBins"]
    assert [(i["kind"], i["package"]) for i in openclaw["install"]] == [("uv", "libtv-fsm")]
    # primaryEnv names the variable a runtime fills with the skill's key: only if the CLI reads it.
    if "primaryEnv" in openclaw:
        assert openclaw["primaryEnv"] in (ROOT / "libtv_fsm" / "config.py").read_text(encoding="utf-8")


def test_skill_md_names_every_command_and_runs_them_from_base_dir() -> None:
    from libtv_fsm.cli import build_parser

    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in commands:
        assert f"`{command}" in text, command
    runs = re.findall(r"(?:^|`)((?:python3|uv run) \S+)", text, re.MULTILINE)
    assert runs and all(run.endswith(" {baseDir}/scripts/libtv_video.py") for run in runs), runs


def test_building_over_an_existing_folder_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "libtv-video"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    build = [sys.executable, "-m", "libtv_fsm.skill", "build", str(out)]
    refused = subprocess.run(build, capture_output=True, text=True, cwd=str(ROOT))
    assert refused.returncode == 1 and refused.stdout.startswith("❌ ") and "--force" in refused.stdout
    assert (out / "mine.txt").read_text() == "keep me"
    forced = subprocess.run(build + ["--force"], capture_output=True, text=True, cwd=str(ROOT))
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert not (out / "mine.txt").exists() and (out / "SKILL.md").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["libtv-video"]  # no staging folder left behind
