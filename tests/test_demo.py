"""The README's first command: the demo submits two requests and the real detached waiters deliver them to the simulated chat."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT, _SCRUB


def test_the_demo_delivers_a_text_and_an_image_to_video_request_to_the_chat(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    proc = subprocess.run([sys.executable, "-m", "libtv_fsm.demo", "--home", str(tmp_path / "home")], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, encoding="utf-8", timeout=120)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # an image went up first, then two sessions, each delivered by its own detached waiter
    assert re.search(r'\$ libtv-video upload --file .*cat\.png\n\s+\{"url":"http://127\.0\.0\.1:\d+/cdn/uploads/', out)
    sessions = re.findall(r'"sessionId":"([^"]+)"', out)
    assert len(sessions) == 2 and len(set(sessions)) == 2
    received = re.findall(r"-> (\S+) \((chat_id|open_id)\): media", out)
    assert sorted(received) == [("oc_demo_group", "chat_id"), ("ou_demo_user", "open_id")], out
    for sid in sessions:
        assert f"$ libtv-video history {sid}" in out
    assert out.count("delivery_succeeded") == 2 and "✅ Both requests were delivered once" in out
    assert "Traceback" not in proc.stderr


def test_the_demo_command_installs_then_runs_the_demo():
    script = ROOT / "demo"
    assert os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert "pip install" in text and "-m libtv_fsm.demo" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_the_readme_gives_the_two_commands_and_links_the_benchmarks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Two commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in block.strip().splitlines()] == ["./demo", "bash .ci/run"]
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "## Benchmarks" in readme and "(bench/README.md)" in readme
