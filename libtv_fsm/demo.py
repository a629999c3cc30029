"""`python -m libtv_fsm.demo`: text-to-video and image-to-video on the loopback simulator, delivered to a simulated Feishu chat."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import libtv_fsm
from libtv_fsm.sim import Simulator
from libtv_fsm.sim.cdn import CdnFile

GROUP = "oc_demo_group"      # a group chat: results go to the group
USER = "ou_demo_user"        # a direct chat: results go to the sender
REQUESTS = (
    ("text-to-video", "a cat surfing at sunset, cinematic", GROUP),
    ("image-to-video", "animate this photo: the cat paddles out and catches a wave {url}", USER),
)
# Variables of the caller's shell that would point the demo at real services or another home.
_SCRUB = ("LIBTV_", "FEISHU_", "OPENCLAW_", "NEXU_")


class Demo:
    """One run: a simulator, a fresh NEXU_HOME, and the real CLI (with its real detached waiters) against them."""

    def __init__(self, home: Path, sim: Simulator, out: Any = sys.stdout) -> None:
        self.home = home
        self.sim = sim
        self.out = out
        self.started = time.monotonic()
        package_parent = str(Path(libtv_fsm.__file__).resolve().parent.parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
        env.update(sim.env())
        env.update({
            "NEXU_HOME": str(home), "LIBTV_DOWNLOAD_DIR": str(home / "downloads"),
            # Seconds, not the minutes of a real generation: poll fast.
            "LIBTV_POLL_INTERVAL_SECONDS": "0.2", "LIBTV_MAX_POLL_INTERVAL_SECONDS": "0.5",
            "LIBTV_WAIT_TIMEOUT_SECONDS": "120", "PYTHONIOENCODING": "utf-8",
            "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p),
        })
        self.env = env

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def cli(self, *args: str, show: bool = True) -> List[str]:
        """Run `libtv-video ARGS` for real; its stdout lines (shown indented)."""
        shown = " ".join(a if " " not in a else json.dumps(a, ensure_ascii=False) for a in args)
        if show:
            self.say(f"$ libtv-video {shown}")
        proc = subprocess.run([sys.executable, "-m", "libtv_fsm", *args], env=self.env, cwd=str(self.home),
                              capture_output=True, text=True, encoding="utf-8", stdin=subprocess.DEVNULL, timeout=60)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if show:
            for line in lines:
                self.say(f"  {line}")
        if proc.returncode != 0:
            raise RuntimeError(f"`libtv-video {shown}` failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return lines

    def run(self, timeout: float) -> int:
        self.say(f"libtv-fsm {libtv_fsm.__version__} demo: simulator on {self.sim.url}, NEXU_HOME={self.home}")
        self.say()
        self.cli("setup", "--api-key", self.sim.GATEWAY_KEY)
        self.cli("check")
        photo = self.home / "cat.png"
        photo.write_bytes(CdnFile("cat.png", 4096).read())  # a real (1x1) PNG
        url = json.loads(self.cli("upload", "--file", str(photo))[-1])["url"]
        sessions: Dict[str, str] = {}
        for kind, text, chat in REQUESTS:
            self.say()
            self.say(f"# {kind}, from the chat {chat}:")
            out = json.loads(self.cli("create-session", text.format(url=url), "--channel", "feishu",
                                      "--chat-id", chat)[-1])
            sessions[out["sessionId"]] = kind
        self.say()
        self.say("# create-session returned at once; the detached waiters poll and deliver:")
        if not self.watch(sessions, timeout):
            self.say(f"❌ Not delivered within {timeout:.0f} s; see {self.home}/libtv-waiter-*.log")
            return 1
        self.show_chat()
        for sid, kind in sessions.items():
            self.say()
            self.say(f"# The timeline of the {kind} session, replayed from its journal:")
            self.cli("history", sid)
        self.wait_for_waiters(list(sessions))
        self.say()
        self.say(f"✅ Both requests were delivered once, in {time.monotonic() - self.started:.1f} s.")
        return 0

    def watch(self, sessions: Dict[str, str], timeout: float) -> bool:
        """Print each state change as the journals record it; True once every session is delivered."""
        from libtv_fsm.store import SessionStore

        store = SessionStore(self.home)
        shown: Dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for sid, kind in sessions.items():
                state = store.replay(sid).state
                if shown.get(sid) != state:
                    shown[sid] = state
                    self.say(f"  [{time.monotonic() - self.started:5.1f} s] {kind:<15} {sid}  {state}")
            if all(state == "delivered" for state in shown.values()):
                return True
            time.sleep(0.1)
        return False

    def show_chat(self) -> None:
        self.say()
        self.say("# What the simulated Feishu chat received:")
        with self.sim.lock:
            uploads = {u["key"]: u for u in self.sim.feishu.uploads}
            messages = list(self.sim.feishu.messages)
        for message in messages:
            content = message["content"]
            upload = uploads.get(content.get("file_key") or content.get("image_key") or "")
            what = (f"{upload['file_name']} ({upload['size']:,} bytes)" if upload
                    else json.dumps(content, ensure_ascii=False)[:120])
            self.say(f"  -> {message['receive_id']} ({message['receive_id_type']}): {message['msg_type']:<5} {what}")

    def wait_for_waiters(self, sids: Sequence[str], timeout: float = 15.0) -> None:
        """Let the waiters finish (they keep a local copy after delivering) before the home goes away."""
        from libtv_fsm.recovery import waiter_running
        from libtv_fsm.store import SessionStore

        store = SessionStore(self.home)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(waiter_running(store, sid) for sid in sids):
            time.sleep(0.1)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libtv_fsm.demo", description=__doc__)
    parser.add_argument("--home", type=Path, help="NEXU_HOME to use and keep (default: a temporary one, removed)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for delivery (default 60)")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")  # the ✅ on a C locale
    home = args.home.absolute() if args.home else Path(tempfile.mkdtemp(prefix="libtv-demo-"))
    home.mkdir(parents=True, exist_ok=True)
    sim = Simulator().start()
    sim.default_scenario = sim.default_scenario.copy(polls_before_result=2)
    try:
        return Demo(home, sim).run(args.timeout)
    except RuntimeError as err:
        print(f"❌ {err}", flush=True)
        return 1
    finally:
        sim.stop()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
