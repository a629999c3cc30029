"""Ours against the peer (the stdlib-only libtv-video skill Nexu ships), side by side in one run, as Nexu runs a skill.

Both run as `python3 scripts/libtv_video.py ...` on a bare python3 venv (nothing installed, not even
pip): ours from a skill folder built from this checkout (`python -m libtv_fsm.skill build`), the
peer's script as Nexu bundles it. Both talk to the loopback simulator; nothing leaves 127.0.0.1
(every other host goes to a dead proxy on 127.0.0.1:9).

The peer is never part of this repository. Get it from a Nexu checkout (a bare git dir works):

  mkdir -p /tmp/peer/scripts
  for f in libtv_video.py feishu_send_video.py; do
    git -C /path/to/nexu show HEAD:apps/desktop/static/bundled-skills/libtv-video/scripts/$f > /tmp/peer/scripts/$f
  done

Usage: PEER_SCRIPT=/tmp/peer/scripts/libtv_video.py python bench/peer_compare.py [--runs 15] [--sessions 20]
                                                   [--against FOLDER]   (an older build, timed in the same rounds)
       python bench/peer_compare.py /tmp/peer/scripts/libtv_video.py
Prints a markdown table and writes bench/latest-peer.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Row, clean_env, home_pids, markdown, memory, percentile, stop  # noqa: E402

# Targets of issue 14 (ours / peer).
TARGET_MEMORY = 0.25
TARGET_CREATE_WORKER = 0.8
TARGET_CREATE_NO_WORKER = 4.0
HERE = Path(__file__).resolve().parent
# Anything not on loopback goes to a port nobody listens on: the peer's Feishu helper has
# open.feishu.cn hard-coded, and a benchmark must never reach it.
DEAD_PROXY = "http://127.0.0.1:9"
HOW_TO_GET_PEER = ("set PEER_SCRIPT to the peer's scripts/libtv_video.py (bench/peer_compare.py's docstring "
                   "says how to take it from a Nexu checkout)")


# -- processes ----------------------------------------------------------------------------------


def settle(home: Path, before: Set[int], timeout: float, until: Optional[Callable[[], bool]] = None) -> int:
    """Wait (at most ``timeout`` s) for what a command left behind in ``home`` to finish, then stop the rest.

    Finished means: every process started since ``before`` has exited, or ``until()`` holds (a
    process meant to stay, a worker, is stopped then). Returns how many had to be stopped.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = home_pids(home) - before
        if not left or (until is not None and until()):
            break
        time.sleep(0.05)
    return stop(home_pids(home) - before)


# -- the two skills -------------------------------------------------------------------------------


class Side:
    """One skill as Nexu runs it: a command prefix, its environment, its home."""

    def __init__(self, name: str, argv: Sequence[str], env: Dict[str, str], home: Path) -> None:
        self.name, self.argv, self.env, self.home = name, list(argv), env, home

    def run(self, *args: str, check: bool = True) -> Tuple[float, str]:
        """Wall seconds to the command's exit (a detached child it spawns is not waited for), and its stdout."""
        start = time.perf_counter()
        proc = subprocess.run(self.argv + list(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, cwd=str(self.home))
        took = time.perf_counter() - start
        if check and proc.returncode != 0:
            raise RuntimeError(f"{self.name} {args[:1]} failed ({proc.returncode}): {proc.stdout[-400:]!r} "
                               f"{proc.stderr[-800:]!r}")
        return took, proc.stdout.decode("utf-8", "replace")


def bare_python(where: Path) -> Path:
    """A venv with nothing installed (not even pip) from the system python3, as in tests/peer/run_nexu_suite.sh."""
    base = os.environ.get("BARE_PYTHON") or getattr(sys, "_base_executable", None) or "python3"
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python3"
    if subprocess.run([str(python), "-c", "import requests"], stderr=subprocess.DEVNULL).returncode == 0:
        raise RuntimeError(f"the bare venv {where} can import requests: it would not measure a bare python3")
    return python


def build_folder(out: Path) -> Path:
    """Our skill folder, built from this checkout by the interpreter running the bench (it has libtv-fsm installed)."""
    subprocess.run([sys.executable, "-m", "libtv_fsm.skill", "build", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out / "scripts" / "libtv_video.py"


def skill_env(home: Path, python: Path, extra: Dict[str, str]) -> Dict[str, str]:
    """clean_env without anything of the dev venv, with HOME and every non-loopback request kept in the sandbox.

    PYTHONDONTWRITEBYTECODE goes too: Nexu copies a skill into the user's (writable) skills
    folder, where Python caches the byte code after the first run; with it set, every run would
    compile the package and its vendored dependencies again (a cost of its own, see "no byte-code cache").
    """
    env = clean_env(home)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE"):
        env.pop(var, None)
    env.update(extra)
    env["PATH"] = os.pathsep.join([str(python.parent), "/usr/bin", "/bin"])
    env["HOME"] = str(home / "userhome")  # the peer downloads to ~/Downloads/libtv_results
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[var] = DEAD_PROXY
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def peer_script(arg: Optional[str]) -> Optional[Path]:
    raw = arg or os.environ.get("PEER_SCRIPT", "")
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise SystemExit(f"❌ PEER_SCRIPT {path} not found; {HOW_TO_GET_PEER}")
    return path


def knows_worker(side: Side) -> bool:
    """Whether our CLI has the home worker (CONTRACT 8) yet."""
    return subprocess.run(side.argv + ["worker", "--help"], env=side.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# -- the measurements -----------------------------------------------------------------------------


def _ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}x" if peer > 0 else "n/a"


def _messages_to(sim: object, chat: str) -> int:
    """Chat messages the simulated Feishu accepted for ``chat``."""
    with sim.lock:  # type: ignore[attr-defined]
        return sum(1 for r in sim.requests  # type: ignore[attr-defined]
                   if r.path == "/open-apis/im/v1/messages" and r.status == 200
                   and isinstance(r.json, dict) and r.json.get("receive_id") == chat)


def measure_create(sides: List[Side], runs: int, sim: object, worker_side: Optional[Side],
                   starts_worker: Set[str]) -> Tuple[Dict[str, List[float]], Dict[str, int]]:
    """Interleaved rounds of create-session on every side; each one's background work settles before the next command.

    A side in ``starts_worker`` leaves a worker behind that would idle for minutes: it is stopped
    once the round's result reached the chat, so the next round again finds none running.
    """
    times: Dict[str, List[float]] = {s.name: [] for s in sides}
    stopped: Dict[str, int] = {s.name: 0 for s in sides}
    resident: Dict[str, Set[int]] = {}
    if worker_side is not None:
        # A worker kept running for the whole phase: create-session finds it alive and starts nothing.
        subprocess.Popen(worker_side.argv + ["worker", "--idle-exit", "600"], env=worker_side.env, cwd=str(worker_side.home),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        time.sleep(1.0)
        resident[worker_side.name] = home_pids(worker_side.home)
    for i in range(-1, runs):  # round -1 warms up (compiles our folder's byte code), not counted
        order = sides if i % 2 == 0 else list(reversed(sides))
        for side in order:
            chat = f"oc_create_{sides.index(side)}"
            before = resident.get(side.name, set()) | home_pids(side.home)
            sent = _messages_to(sim, chat)
            took, _ = side.run("create-session", f"create {i} [sim:now]", "--channel", "feishu", "--chat-id", chat)
            if i >= 0:
                times[side.name].append(took)
            until = (lambda c=chat, k=sent: _messages_to(sim, c) > k) if side.name in starts_worker else None
            left = settle(side.home, before, timeout=20.0, until=until)
            if until is None:
                stopped[side.name] += left
    for side in sides:
        stopped[side.name] += stop(home_pids(side.home))
    return times, stopped


def measure_in_flight(side: Side, sim: object, sessions: int, ready: float, spread: float, tag: str) -> Dict[str, object]:
    """``sessions`` create-session calls, each session ready ``ready``..+``spread`` s later; sample the home's processes."""
    from libtv_fsm.sim.scenarios import Scenario

    sim_ = sim  # the Simulator (typed loosely: the bench must import without the package on its path)
    names = [f"{tag}{i}" for i in range(sessions)]
    for i, name in enumerate(names):
        sim_.scenarios[name] = Scenario(ready_after_seconds=ready + spread * i / max(sessions - 1, 1))  # type: ignore[attr-defined]
    chats = [f"oc_{tag}_{i:03d}" for i in range(sessions)]
    started = time.monotonic()
    # One after another, as an agent runs them: the peer's session file has no lock, and two of
    # its create-session at once can lose one's entry ("submitted session was not persisted").
    for i in range(sessions):
        side.run("create-session", f"clip {i} [sim:{names[i]}]", "--channel", "feishu", "--chat-id", chats[i])
    submit_seconds = time.monotonic() - started
    peak = (0, 0.0, 0.0, 0.0)
    deadline = time.monotonic() + ready + spread + 60
    all_sent: Optional[float] = None
    while time.monotonic() < deadline:
        pids = home_pids(side.home)
        sample = memory(pids)
        if sample[1] > peak[1]:
            peak = sample
        # Done when every process is gone, or 5 s after every chat got its result (a worker stays).
        if all_sent is None and all(_messages_to(sim, chat) for chat in chats):
            all_sent = time.monotonic()
        if not pids or (all_sent is not None and time.monotonic() - all_sent > 5):
            break
        time.sleep(0.5)
    stopped = stop(home_pids(side.home))
    return {"peak": peak, "submit_seconds": submit_seconds, "stopped": stopped, "names": names, "chats": chats}


def detection(sim: object, names: List[str], chats: List[str]) -> Tuple[List[float], List[float], List[int]]:
    """Per session: ready -> the poll that saw the result, ready -> its chat message at the simulated Feishu, polls made."""
    with sim.lock:  # type: ignore[attr-defined]
        mine = [s for s in sim.sessions.values()  # type: ignore[attr-defined]
                if any(f"[sim:{n}]" in s.messages[0]["content"] for n in names)]
        requests = list(sim.requests)  # type: ignore[attr-defined]
    sent_at: Dict[str, float] = {}
    for r in requests:
        if r.path == "/open-apis/im/v1/messages" and r.status == 200 and isinstance(r.json, dict):
            sent_at.setdefault(r.json.get("receive_id"), r.at)
    seen, sent, polls = [], [], []
    for s in mine:
        turn = s.turns[-1]
        ready_at = turn.started_at + turn.scenario.ready_after_seconds
        gets = sorted(r.at for r in requests if r.method == "GET" and r.status == 200
                      and r.path.endswith(f"/session/{s.id}"))
        polls.append(len(gets))
        first = next((t for t in gets if t >= ready_at), None)
        if first is not None:
            seen.append(first - ready_at)
        chat = next(c for n, c in zip(names, chats) if f"[sim:{n}]" in s.messages[0]["content"])
        if chat in sent_at:
            sent.append(sent_at[chat] - ready_at)
    return seen, sent, polls


def _latency(values: List[float]) -> str:
    if not values:
        return "none"
    return (f"mean {statistics.mean(values):.2f} s, median {statistics.median(values):.2f} s, "
            f"p95 {percentile(values, 0.95):.2f} s (n={len(values)})")


def measure(peer: Path, runs: int = 15, sessions: int = 20, ready: float = 30.0, spread: float = 5.0,
            against: Sequence[Path] = ()) -> List[Row]:
    """The table's rows; ``against``: other built skill folders (older commits) timed in the same create-session rounds."""
    from libtv_fsm.sim import Simulator
    from libtv_fsm.sim.scenarios import Scenario

    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="libtv-peer-bench.") as tmp_, Simulator() as sim:
        tmp = Path(tmp_)
        sim.set_key(Simulator.GATEWAY_KEY, remaining_uses=100_000, max_uses=100_000)
        sim.scenarios["now"] = Scenario(ready_after_seconds=0.0)
        python = bare_python(tmp / "venv")
        ours_script = build_folder(tmp / "skill")
        # A copy that never gets a __pycache__: a read-only folder, or PYTHONDONTWRITEBYTECODE=1.
        shutil.copytree(tmp / "skill", tmp / "skill-nocache")
        # Both poll every second, fixed (the peer reads a whole number of seconds; ours is capped at
        # its first interval): the schedules are equal, so detection compares the rest of the path.
        polling = {"LIBTV_POLL_INTERVAL_SECONDS": "1", "LIBTV_MAX_POLL_INTERVAL_SECONDS": "1",
                   "LIBTV_MAX_POLLS": "600", "LIBTV_WAIT_TIMEOUT_SECONDS": "600"}
        homes: List[Path] = []

        def side(name: str, script: Path, extra: Dict[str, str]) -> Side:
            home = tmp / f"home-{len(homes)}"
            (home / "userhome").mkdir(parents=True)
            homes.append(home)
            s = Side(name, [str(python), str(script)], skill_env(home, python, {**polling, **extra}), home)
            s.run("setup", "--api-key", Simulator.GATEWAY_KEY)
            return s

        # The peer joins paths as base + path: its base has no trailing slash. It gets no Feishu
        # credentials: its helper posts to open.feishu.cn (hard-coded), which cannot be pointed at
        # the simulator, so it stops at "credentials not found" before any request.
        peer_env = {"LIBTV_GATEWAY_URL": sim.url}
        ours_env = dict(sim.env())
        try:
            peer_side = side("peer", peer, peer_env)
            ours_side = side("ours", ours_script, ours_env)
            has_worker = knows_worker(ours_side)
            create_sides = [peer_side, ours_side]
            worker_side = None
            if has_worker:
                worker_side = side("ours, worker running", ours_script, ours_env)
                create_sides.append(worker_side)
                # Today's path, one detached waiter per session, kept by name (CONTRACT 8).
                create_sides.append(side("ours, LIBTV_WAITER=process", ours_script, {**ours_env, "LIBTV_WAITER": "process"}))
            nocache = side("ours, no byte-code cache", tmp / "skill-nocache" / "scripts" / "libtv_video.py",
                           {**ours_env, "PYTHONDONTWRITEBYTECODE": "1"})
            create_sides.append(nocache)
            against_sides = [side(f"ours@{folder}", Path(folder).resolve() / "scripts" / "libtv_video.py", ours_env)
                             for folder in against]
            create_sides += against_sides
            # With the worker built, create-session with none running starts one (CONTRACT 8).
            starts_worker = {ours_side.name, nocache.name} if has_worker else set()
            times, stopped = measure_create(create_sides, runs, sim, worker_side, starts_worker)
            peer_ms = statistics.median(times["peer"]) * 1000
            rows.append(Row("peer `create-session` (spawns its waiter)", f"{peer_ms:.1f} ms",
                            note=f"median of {runs} interleaved rounds, to the command's exit"))
            ours_ms = statistics.median(times["ours"]) * 1000
            what = "ours `create-session`, no worker running (" + (
                "starts the worker)" if has_worker else "spawns a detached waiter)")
            rows.append(Row(what, f"{ours_ms:.1f} ms = {_ratio(ours_ms, peer_ms)} the peer's",
                            f"<= {TARGET_CREATE_NO_WORKER:g}x", ours_ms / peer_ms <= TARGET_CREATE_NO_WORKER,
                            f"median of {runs}; built skill folder on a bare python3"))
            if "ours, LIBTV_WAITER=process" in times:
                q_ms = statistics.median(times["ours, LIBTV_WAITER=process"]) * 1000
                rows.append(Row("ours `create-session`, LIBTV_WAITER=process (spawns a detached waiter)",
                                f"{q_ms:.1f} ms = {_ratio(q_ms, peer_ms)} the peer's", note=f"median of {runs}, same rounds"))
            if worker_side is not None:
                w_ms = statistics.median(times[worker_side.name]) * 1000
                rows.append(Row("ours `create-session`, worker running", f"{w_ms:.1f} ms = {_ratio(w_ms, peer_ms)} the peer's",
                                f"<= {TARGET_CREATE_WORKER:g}x", w_ms / peer_ms <= TARGET_CREATE_WORKER, f"median of {runs}"))
            else:
                rows.append(Row("ours `create-session`, worker running", "not built yet (no `worker` command)",
                                f"<= {TARGET_CREATE_WORKER:g}x", None, "measured here once `libtv-video worker` exists"))
            n_ms = statistics.median(times[nocache.name]) * 1000
            rows.append(Row("ours `create-session`, no byte-code cache (read-only folder or PYTHONDONTWRITEBYTECODE=1)",
                            f"{n_ms:.1f} ms = {_ratio(n_ms, peer_ms)} the peer's",
                            note=f"median of {runs}, same rounds; every run compiles the package and vendor/"))
            for folder in against:
                a_ms = statistics.median(times[f"ours@{folder}"]) * 1000
                rows.append(Row(f"ours `create-session` from the folder {folder} (no worker running)",
                                f"{a_ms:.1f} ms = {_ratio(a_ms, peer_ms)} the peer's", note=f"median of {runs}, same rounds"))
            if any(stopped.values()):
                rows.append(Row("create-session rounds: background processes still alive after 20 s and stopped",
                                ", ".join(f"{k} {v}" for k, v in stopped.items())))

            # Memory and detection: the peer's 20 waiters, then ours, against the same simulator.
            flights = {}
            for n, s in enumerate([peer_side, ours_side, *against_sides]):
                flights[s.name] = measure_in_flight(s, sim, sessions, ready, spread, f"f{n}x")
            peer_mem, ours_mem = flights["peer"]["peak"], flights["ours"]["peak"]
            for name, (n, rss, pss, uss) in (("peer", peer_mem), ("ours", ours_mem)):
                f = flights[name]
                rows.append(Row(f"{name}: {sessions} sessions in flight, all background processes (peak sample, {n} alive)",
                                f"RSS {rss:.0f} MiB ({rss / max(n, 1):.1f}/process); PSS {pss:.0f}; USS {uss:.0f}",
                                note=f"/proc/<pid>/smaps_rollup of every process with NEXU_HOME=its home; "
                                     f"create-session x{sessions} took {f['submit_seconds']:.1f} s"
                                     + (f"; {f['stopped']} stopped at the end" if f["stopped"] else "")))
            for s in against_sides:
                n, rss, pss, uss = flights[s.name]["peak"]  # type: ignore[misc]
                rows.append(Row(f"{s.name}: {sessions} sessions in flight (peak sample, {n} alive)",
                                f"RSS {rss:.0f} MiB ({rss / max(n, 1):.1f}/process); PSS {pss:.0f}; USS {uss:.0f}",
                                note=f"RSS {_ratio(rss, peer_mem[1])} the peer's"))
            ok = peer_mem[1] > 0 and ours_mem[1] / peer_mem[1] <= TARGET_MEMORY
            rows.append(Row(f"memory of {sessions} sessions in flight, ours / peer",
                            f"RSS {_ratio(ours_mem[1], peer_mem[1])}; PSS {_ratio(ours_mem[2], peer_mem[2])}; "
                            f"USS {_ratio(ours_mem[3], peer_mem[3])}", f"<= {TARGET_MEMORY:g}x (RSS)", ok,
                            "peak samples every 0.5 s"))
            seen: Dict[str, List[float]] = {}
            for name in ("peer", "ours"):
                f = flights[name]
                seen[name], sent, polls = detection(sim, f["names"], f["chats"])  # type: ignore[arg-type]
                rows.append(Row(f"{name}: ready -> the poll that saw the result", _latency(seen[name]),
                                note=f"polls per session: mean {statistics.mean(polls):.1f}; both poll every 1 s (fixed)"))
                if name == "ours":
                    rows.append(Row("ours: ready -> chat message at the simulated Feishu", _latency(sent),
                                    note="the peer's cannot be measured: its Feishu helper posts to open.feishu.cn "
                                         "(hard-coded, no base URL setting)"))
            if seen["peer"] and seen["ours"]:
                p, o = statistics.mean(seen["peer"]), statistics.mean(seen["ours"])
                rows.append(Row("detection (ready -> poll that saw it), ours / peer", f"{_ratio(o, p)} (means)",
                                note="a fixed 1 s schedule alone gives a mean of 0.5 s whatever the code: with "
                                     f"n={sessions} a gap under ~0.2 s is the polls' phase, not the code"))
        finally:
            for home in homes:
                stop(home_pids(home))
    return rows


def table(rows: List[Row], started: float, runs: int) -> str:
    command = f"`{' '.join(['python bench/peer_compare.py', *sys.argv[1:]])}`" + (
        ", PEER_SCRIPT from the environment" if os.environ.get("PEER_SCRIPT") else "")
    return markdown(rows, command, started)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("peer", nargs="?", help="the peer's scripts/libtv_video.py (else PEER_SCRIPT)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--ready", type=float, default=30.0, help="first session ready this many s after creation")
    ap.add_argument("--spread", type=float, default=5.0, help="the last one this many s later")
    ap.add_argument("--against", action="append", default=[], metavar="FOLDER",
                    help="another built skill folder (say, of an older commit) in the create-session rounds")
    a = ap.parse_args()
    peer = peer_script(a.peer)
    if peer is None:
        print(f"❌ No peer to compare with: {HOW_TO_GET_PEER}")
        return 2
    started = time.monotonic()
    text = table(measure(peer, a.runs, a.sessions, a.ready, a.spread, [Path(f) for f in a.against]), started, a.runs)
    print(text)
    (HERE / "latest-peer.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
