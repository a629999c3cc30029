"""create-session imports what a submission needs, not what only reading journals back needs (issue 14's import diet)."""
from __future__ import annotations

import subprocess
from typing import Set

from conftest import ENTRY_POINTS, Cli, point_at_sim

# Imported by nothing create-session does on a well-formed journal. Still imported today, by the
# journal and the store rather than by the submission (see bench/README.md): filelock (and through
# it asyncio), transitions.
NOT_FOR_A_SUBMISSION = ("cattrs",)


def _imports(cli: Cli, *args: str) -> Set[str]:
    """The modules one CLI run imported (`-X importtime` lists each the first time it is imported)."""
    script = ENTRY_POINTS["script"]
    env = dict(cli.env, LIBTV_SKIP_BACKGROUND_WAITER="1")
    proc = subprocess.run([script[0], "-X", "importtime", *script[1:], *args], env=env, cwd=str(cli.home),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and '"status":"submitted"' in proc.stdout, proc
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_create_session_submits_without_importing_the_converter(cli, sim):
    point_at_sim(cli, sim)
    for _ in range(2):  # a new home, then one with a journal and a read model to refresh
        imported = _imports(cli, "create-session", "a cat surfing", "--channel", "feishu", "--chat-id", "oc_group")
        assert {"requests", "libtv_fsm.events", "libtv_fsm.store"} <= imported  # it did submit and journal
        assert not imported & set(NOT_FOR_A_SUBMISSION), sorted(imported & set(NOT_FOR_A_SUBMISSION))
