"""What `create-session` imports, run from a built skill folder on a bare python3 against the simulator (`-X importtime`).

Usage: python bench/importtime.py [--runs 7] [--top 10] [--peer PATH] [--against FOLDER ...]   (PEER_SCRIPT works too)
Each run is one `python3 -X importtime scripts/libtv_video.py create-session ...` (no waiter
spawned: the imports are the same, the spawn module is imported either way). Figures are
medians over the runs, in ms: the top modules by cumulative time, and the self time summed
per top-level package (what cutting a package would save). With a peer, its total is shown too;
with --against, another skill folder (e.g. built from an older commit) takes turns with ours in
the same runs, so a before/after comparison sees the same machine load. A module loaded with
importlib.import_module (the CLI's command groups, the chat channels) is not listed itself
(CPython times only the import statement), only what it imports.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from peer_compare import bare_python, build_folder, peer_script, skill_env  # noqa: E402

_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


def parse(text: str) -> List[Tuple[str, int, int, int]]:
    """(module, self us, cumulative us, depth) per line of `-X importtime` output."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            out.append((m.group(4), int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2))
    return out


def profile(python: Path, targets: Dict[str, Tuple[Path, Dict[str, str]]], runs: int) -> Dict[str, Dict[str, object]]:
    """Per target (a label: its script and environment), the medians over ``runs``, the targets taking turns each run."""
    selfs: Dict[str, Dict[str, List[int]]] = {t: defaultdict(list) for t in targets}
    cumul: Dict[str, Dict[str, List[int]]] = {t: defaultdict(list) for t in targets}
    totals: Dict[str, List[int]] = {t: [] for t in targets}
    modules: Dict[str, List[str]] = {}
    for i in range(runs + 1):  # the first run compiles byte code: not counted
        for label, (script, env) in (targets.items() if i % 2 else reversed(list(targets.items()))):
            proc = subprocess.run([str(python), "-X", "importtime", str(script), "create-session", f"{label} {i} [sim:now]",
                                   "--channel", "feishu", "--chat-id", "oc_importtime"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            if proc.returncode != 0 or b'"status"' not in proc.stdout:
                raise RuntimeError(f"{label} create-session failed: {proc.stdout[-400:]!r}")
            rows = parse(proc.stderr.decode("utf-8", "replace"))
            if i == 0:
                continue
            modules[label] = [r[0] for r in rows]
            totals[label].append(sum(r[1] for r in rows))
            for name, self_us, cum_us, _depth in rows:
                selfs[label][name].append(self_us)
                cumul[label][name].append(cum_us)
    return {t: {"modules": modules[t], "total": statistics.median(totals[t]) / 1000,
                "self": {k: statistics.median(v) / 1000 for k, v in selfs[t].items()},
                "cumulative": {k: statistics.median(v) / 1000 for k, v in cumul[t].items()}} for t in targets}


def report(found: Dict[str, object], top: int, show: Sequence[str] = ()) -> str:
    cumulative: Dict[str, float] = found["cumulative"]  # type: ignore[assignment]
    own: Dict[str, float] = found["self"]  # type: ignore[assignment]
    lines = [f"all imports (sum of self times): {found['total']:.1f} ms, {len(found['modules'])} modules",  # type: ignore[arg-type]
             "", f"top {top} by cumulative time (ms, median):"]
    for name in sorted(cumulative, key=lambda k: -cumulative[k])[:top]:
        lines.append(f"  {cumulative[name]:7.1f}  {name}")
    if show:
        lines += ["", "asked for (cumulative ms, median; - = not imported):"]
        lines += [f"  {cumulative[n]:7.1f}  {n}" if n in cumulative else f"        -  {n}" for n in show]
    packages: Dict[str, float] = defaultdict(float)
    for name, ms in own.items():
        packages[name.split(".")[0] if not name.startswith("libtv_fsm") else ".".join(name.split(".")[:2])] += ms
    lines += ["", "self time by top-level package (ms, median; libtv_fsm by module):"]
    for name in sorted(packages, key=lambda k: -packages[k])[:20]:
        lines.append(f"  {packages[name]:7.1f}  {name}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--peer", help="the peer's scripts/libtv_video.py (else PEER_SCRIPT; optional)")
    ap.add_argument("--module", action="append", default=[], metavar="NAME", help="also show this module's cumulative time")
    ap.add_argument("--against", action="append", default=[], metavar="FOLDER",
                    help="another built skill folder (say, of an older commit) profiled in the same runs")
    a = ap.parse_args()
    peer: Optional[Path] = peer_script(a.peer)
    from libtv_fsm.sim import Simulator
    from libtv_fsm.sim.scenarios import Scenario

    with tempfile.TemporaryDirectory(prefix="libtv-importtime.") as tmp_, Simulator() as sim:
        tmp = Path(tmp_)
        sim.set_key(Simulator.GATEWAY_KEY, remaining_uses=100_000, max_uses=100_000)
        sim.scenarios["now"] = Scenario(ready_after_seconds=0.0)
        python = bare_python(tmp / "venv")
        scripts = {"ours": build_folder(tmp / "skill")}
        for folder in a.against:
            scripts[f"ours@{folder}"] = Path(folder).resolve() / "scripts" / "libtv_video.py"
        if peer is not None:
            scripts["peer"] = peer
        targets: Dict[str, Tuple[Path, Dict[str, str]]] = {}
        for n, (label, script) in enumerate(scripts.items()):
            home = tmp / f"home-{n}"
            (home / "userhome").mkdir(parents=True)
            upstream = {"LIBTV_GATEWAY_URL": sim.url} if label == "peer" else sim.env()
            env = skill_env(home, python, {**upstream, "LIBTV_SKIP_BACKGROUND_WAITER": "1"})
            subprocess.run([str(python), str(script), "setup", "--api-key", Simulator.GATEWAY_KEY], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            targets[label] = (script, env)
        found = profile(python, targets, a.runs)
        for label, script in scripts.items():
            print(f"== {label}: {python.name} -X importtime {script} create-session ...")
            print(report(found[label], a.top, a.module) if label != "peer" else
                  f"all imports (sum of self times): {found[label]['total']:.1f} ms, {len(found[label]['modules'])} modules")  # type: ignore[arg-type]
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
