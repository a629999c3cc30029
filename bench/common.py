"""What every benchmark shares: a clean environment, CLI subprocesses, a home full of sessions, one table row."""
from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

CLI = [sys.executable, "-m", "libtv_fsm"]
BASELINE = [sys.executable, "-c", "import json, urllib.request"]
_SCRUB = ("LIBTV_", "OPENCLAW_", "FEISHU_", "NEXU_", "TELEGRAM_", "SLACK_", "DISCORD_", "WECOM_")


class Row(dict):
    """One line of the table: what, the figure, the target, PASS/FAIL (or INFO), how it was measured."""

    def __init__(self, what: str, figure: str, target: str = "", ok: Optional[bool] = None, note: str = "") -> None:
        super().__init__(what=what, figure=figure, target=target,
                         verdict="INFO" if ok is None else ("PASS" if ok else "FAIL"), note=note)


def markdown(rows: Sequence[Row], command: str, started: float) -> str:
    """The verdict table every bench prints, headed by where, when and how long it was measured."""
    import platform

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, in {time.monotonic() - started:.0f} s ({command}).",
        "",
        "| verdict | what | figure | target | how |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["verdict"], r["what"], r["figure"], r["target"], r["note"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def schedule_main(measure: Any, sessions: int, ready: float) -> int:
    """The command line of a bench that submits sessions on a short poll schedule (waiters, worker_scale)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=sessions)
    ap.add_argument("--ready", type=float, default=ready)
    ap.add_argument("--spread", type=float, default=10.0)
    ap.add_argument("--first", type=float, default=1.0)
    ap.add_argument("--cap", type=float, default=4.0)
    a = ap.parse_args()
    for row in measure(a.sessions, a.ready, a.spread, a.first, a.cap):
        print(f"{row['verdict']:<5} {row['what']}\n      {row['figure']}   target: {row['target']}   ({row['note']})")
    return 0


def open_store(home: Any, url: Optional[str] = None) -> Any:
    """The SessionStore of ``home``: its JSONL files, or the database ``url`` names (the rest of the home stays local)."""
    from libtv_fsm.store import SessionStore

    return SessionStore.from_url(url, home) if url else SessionStore(home)


class pg_schema:
    """A new schema in the database ``base`` names, dropped on exit; ``with pg_schema(base) as url`` gives a URL into it."""

    def __init__(self, base: str, prefix: str = "bench_") -> None:
        import uuid

        self.base, self.name = base, prefix + uuid.uuid4().hex[:8]

    def __enter__(self) -> str:
        import psycopg

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pg import schema_url  # the tests' way of pointing every connection at one schema

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        return schema_url(self.base, self.name)

    def __exit__(self, *exc: Any) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {self.name} CASCADE")


def database_url(ap: Any) -> Optional[str]:
    """Parse ``ap`` with a --url option (default LIBTV_TEST_DATABASE_URL); None, after saying how to get one, if unset."""
    ap.add_argument("--url", default=os.environ.get("LIBTV_TEST_DATABASE_URL"),
                    help="postgresql://... (default $LIBTV_TEST_DATABASE_URL)")
    url = ap.parse_args().url
    if not url:
        print("set LIBTV_TEST_DATABASE_URL or --url (eval \"$(tests/toolchain/postgres.sh start)\")", file=sys.stderr)
    return url


def clean_env(home: Path, **extra: str) -> Dict[str, str]:
    """The developer's environment without anything that could point the CLI elsewhere; no upstream reachable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    for var in ("LIBTV_GATEWAY_URL", "LIBTV_DIRECT_BASE_URL", "LIBTV_FEISHU_BASE_URL"):
        env[var] = "http://127.0.0.1:9"
    env["NEXU_HOME"] = str(home)
    env["LIBTV_DOWNLOAD_DIR"] = str(home / "downloads")
    env.update(extra)
    return env


def run(args: Sequence[str], env: Dict[str, str], cwd: Optional[Path] = None) -> float:
    """Wall seconds of one subprocess, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.run(list(args), env=env, cwd=str(cwd) if cwd else None, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{args[2:]} failed ({proc.returncode}): {proc.stdout[-400:]!r} {proc.stderr[-800:]!r}")
    return took


def median_ms(times: List[float]) -> float:
    return statistics.median(times) * 1000


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def fill_home(home: Path, count: int, in_flight: int = 0, run_locks: bool = True) -> List[str]:
    """``count`` sessions (the last ``in_flight`` of them still waiting), written as journal files directly.

    One template journal, serialized once through the real converter, is stamped per session:
    10,000 journal appends with an fsync each would take minutes and measure the disk, not us.
    """
    from libtv_fsm import events as ev
    from libtv_fsm.journal import JOURNAL_DIR

    at = ev.now() - timedelta(days=1)
    url = "https://libtv-res.liblib.art/claw/SID.mp4"
    done: List[ev.Event] = [
        ev.Submitted(at=at, project_uuid="proj-SID", project_url="https://www.liblib.tv/canvas?projectId=proj-SID",
                     text="a cat surfing SID", message="a cat surfing SID, video ratio 16:9", auth_mode="nexu_gateway",
                     delivery=ev.Delivery("feishu", "oc_group_SID")),
        ev.WaiterStarted(at=at, pid=4242),
        *[ev.PollAnswered(at=at, after_seq=1, last_seq=1, new_messages=0) for _ in range(4)],
        ev.PollAnswered(at=at, after_seq=1, last_seq=3, new_messages=2, urls=(url,), last_result_seq=2, last_assistant_seq=3),
        ev.Completed(at=at, urls=(url,)),
        ev.DeliveryAttempted(at=at, url=url, channel="feishu", chat_id="oc_group_SID"),
        ev.DeliverySucceeded(at=at, url=url, sent_as="video", message_id="om_SID"),
        ev.Delivered(at=at),
        ev.Downloaded(at=at, url=url, path="/tmp/SID.mp4"),
    ]
    waiting = done[:3]

    def text(events: List[Any]) -> str:
        lines = []
        for seq, event in enumerate(events, start=1):
            record = {"seq": seq}
            record.update(ev.to_record(event))
            lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        return "\n".join(lines) + "\n"

    final_text, waiting_text = text(done), text(waiting)
    root = home / JOURNAL_DIR
    root.mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(count):
        sid = f"sess-{i:05d}"
        body = (waiting_text if i >= count - in_flight else final_text).replace("SID", sid)
        # Creation times one second apart, so "newest first" has work to do.
        body = body.replace(ev.format_time(at), ev.format_time(at + timedelta(seconds=i)))
        (root / f"{sid}.jsonl").write_text(body, encoding="utf-8")
        (root / f"{sid}.jsonl.lock").touch()
        if run_locks:
            (root / f"{sid}.run.lock").touch()
        ids.append(sid)
    return ids


# -- processes started in a home (detached waiters, the home worker) ---------------------------------


def home_pids(home: Path) -> Set[int]:
    """Every live process whose environment says NEXU_HOME=<home>: the waiters (ours and the peer's) and their children."""
    needle = b"\0NEXU_HOME=" + os.fsencode(str(home)) + b"\0"
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = b"\0" + Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            found.add(int(name))
    return found


def memory(pids: Iterable[int]) -> Tuple[int, float, float, float]:
    """(processes, summed RSS, PSS, USS in MiB) from /proc/<pid>/smaps_rollup."""
    count, rss, pss, uss = 0, 0, 0, 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # gone meanwhile
        field = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
        if "Rss" not in field:
            continue  # a zombie has no mappings
        count += 1
        rss += field["Rss"]
        pss += field["Pss"]
        uss += field["Private_Clean"] + field["Private_Dirty"]
    return count, rss / 1024, pss / 1024, uss / 1024


def stop(pids: Iterable[int], grace: float = 3.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds, the given processes (only those, by pid); how many were alive."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            alive.append(pid)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.05)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return len(alive)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
