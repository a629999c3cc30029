"""Human touches of the CLI: --version, --help with examples, transfer progress on a terminal only."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Tuple

import pytest

from conftest import ENTRY_POINTS, Cli
from libtv_fsm import __version__
from libtv_fsm.cli.progress import Progress
from libtv_fsm.sim import Simulator

pty = pytest.importorskip("pty")


def run_with_terminal_stderr(cli: Cli, *args: str) -> Tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (as in a user's shell) and stdout on a pipe."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(ENTRY_POINTS["module"] + list(args), env=cli.env, cwd=str(cli.home),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        out = proc.stdout.read().decode("utf-8") if proc.stdout else ""
        code = proc.wait(timeout=60)
    finally:
        os.close(master)
    return code, out, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def skill(cli: Cli, sim: Simulator) -> Cli:
    cli.env.update(sim.env())
    assert cli("setup", "--api-key", sim.GATEWAY_KEY).code == 0
    return cli


def test_version_and_help_with_examples(cli: Cli) -> None:
    ran = cli("--version")
    assert ran.code == 0 and ran.out.strip() == f"libtv-video {__version__}"
    ran = cli("--help")
    assert ran.code == 0 and "examples:" in ran.out and "create-session" in ran.out and "--chat-id" in ran.out


def test_upload_shows_progress_on_a_terminal_and_nothing_otherwise(skill: Cli, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 300_000)
    code, out, err = run_with_terminal_stderr(skill, "upload", "--file", str(clip))
    assert code == 0 and out.strip().startswith('{"url"') and len(out.strip().splitlines()) == 1, (out, err)
    assert "Uploading clip.mp4" in err and "(100%)" in err
    piped = skill("upload", "--file", str(clip))
    assert piped.code == 0 and piped.err == "" and piped.lines == [piped.last]


def test_download_results_shows_progress_on_a_terminal_and_nothing_otherwise(skill: Cli, sim: Simulator,
                                                                             tmp_path: Path) -> None:
    urls = [sim.cdn_put(f"claw/result{i}.mp4", 200_000) for i in range(2)]
    code, out, err = run_with_terminal_stderr(skill, "download-results", "--urls", *urls, "--output-dir",
                                              str(tmp_path / "a"))
    assert code == 0 and len(out.strip().splitlines()) == 1, (out, err)
    assert "Downloading" in err and "2/2 file(s)" in err and "0.4 MB" in err
    piped = skill("download-results", "--urls", *urls, "--output-dir", str(tmp_path / "b"))
    assert piped.code == 0 and piped.err == "" and piped.json()["total"] == 2


class _Terminal:
    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_redraws_at_most_every_interval_and_ends_its_line() -> None:
    now = [0.0]
    term = _Terminal()
    progress = Progress("Uploading a.mp4", total=4 * 1048576, stream=term, interval=0.5,  # type: ignore[arg-type]
                        clock=lambda: now[0])
    progress.sent(1048576, 4 * 1048576)
    progress.sent(2 * 1048576, 4 * 1048576)  # too soon: not drawn
    now[0] = 1.0
    progress.sent(4 * 1048576, 4 * 1048576)
    progress.finish()
    assert term.text.count("\r") == 3 and term.text.endswith("(100%)\x1b[K\n")
    assert "1.0 / 4.0 MB (25%)" in term.text and "2.0 / 4.0" not in term.text


def test_progress_is_silent_when_not_a_terminal() -> None:
    stream: Any = _Terminal()
    stream.isatty = lambda: False
    progress = Progress("Downloading", files=1, stream=stream)
    progress.advance(10)
    progress.file_done()
    progress.finish()
    assert stream.text == "" and not progress.enabled
