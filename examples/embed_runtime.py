"""An agent runtime embedding libtv-fsm: submit, watch every state change, deliver to its own chat through a channel it registers.

Run it as it is (`python examples/embed_runtime.py`): it starts the loopback simulator in place
of LibTV. A real runtime passes its real key and drops the simulator.
"""
from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from libtv_fsm import SessionStore
from libtv_fsm.backends import open_backend
from libtv_fsm.channels import Channel, register_channel
from libtv_fsm.config import relayed_message
from libtv_fsm.events import Event
from libtv_fsm.journal import JsonlJournal
from libtv_fsm.submit import resolve_target, submit
from libtv_fsm.waiter import Waiter


class RuntimeInbox(Channel):
    """The runtime's own chat: results land in ``MESSAGES`` instead of a chat platform."""

    name = "inbox"
    dedupes = True  # a resend with the same key is dropped below, so a retry after a crash is safe
    max_video_bytes = 100 * 1024 * 1024
    max_image_bytes = 20 * 1024 * 1024
    MESSAGES: List[Dict[str, object]] = []
    _by_key: Dict[str, str] = {}

    def normalize_target(self, chat_id: str) -> str:
        return chat_id.strip()

    def check_ready(self) -> None:
        pass  # nothing to configure: the inbox lives in this process

    def _post(self, target: str, kind: str, body: object, dedupe_key: str) -> str:
        if dedupe_key not in self._by_key:
            self._by_key[dedupe_key] = f"msg-{len(self.MESSAGES) + 1}"
            self.MESSAGES.append({"room": target, "kind": kind, "body": body, "id": self._by_key[dedupe_key]})
        return self._by_key[dedupe_key]

    def send_video(self, target: str, path: Path, *, file_name: str, dedupe_key: str) -> str:
        return self._post(target, "video", f"{file_name} ({path.stat().st_size} bytes)", dedupe_key)

    def send_image(self, target: str, path: Path, *, dedupe_key: str) -> str:
        return self._post(target, "image", f"an image ({path.stat().st_size} bytes)", dedupe_key)

    def send_text(self, target: str, text: str, *, dedupe_key: str) -> str:
        return self._post(target, "text", text, dedupe_key)


class ObservedJournal(JsonlJournal):
    """The JSONL journal, telling the runtime about every event the moment it is written."""

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.store: Optional[SessionStore] = None
        self.seen: List[str] = []

    def append(self, session_id: str, events: Sequence[Event], expected_version: int) -> int:
        version = super().append(session_id, events, expected_version)
        state = self.store.replay(session_id).state if self.store else "?"
        for seq, event in enumerate(events, start=version - len(events) + 1):
            print(f"  {session_id}  #{seq:<3} {type(event).__name__:<18} -> {state}", flush=True)
        self.seen.append(state)
        return version


def run(home: Path, api_key: str, env: Dict[str, str], text: str, room: str) -> int:
    """Submit one request, wait for it in a thread (as a runtime's task would), deliver to the inbox."""
    register_channel("inbox", RuntimeInbox)
    journal = ObservedJournal(home)
    store = SessionStore(home, journal=journal)
    journal.store = store
    backend = open_backend(api_key, env)
    target = resolve_target("inbox", room, env, http=backend.session)
    # Relayed as the CLI does: the user's words, the Seedance hint on the gateway route, the ratio hint.
    relayed = relayed_message(text, backend.auth_mode, "16:9")
    session, _ = submit(store, backend, text, relayed, session_id=None, target=target)
    print(f"submitted {session.session_id}; the runtime goes on with its work while a thread waits", flush=True)

    codes: List[int] = []
    waiter = Waiter(store, session.session_id, api_key=api_key, env=env, http=backend.session,
                    log=lambda line: print(f"  waiter: {line}", flush=True))
    worker = threading.Thread(target=lambda: codes.append(waiter.run()), name="libtv-waiter")
    worker.start()
    worker.join(timeout=120)

    final = store.load(session.session_id)
    print(f"final state: {final.state}; results: {final.result_urls}")
    for message in RuntimeInbox.MESSAGES:
        print(f"inbox {message['room']}: {message['kind']} {message['body']} ({message['id']})")
    return 0 if codes == [0] and final.state == "delivered" else 1


def main(argv: Sequence[str]) -> int:
    from libtv_fsm.sim import Simulator

    with Simulator() as sim, tempfile.TemporaryDirectory(prefix="libtv-embed-") as tmp:
        home = Path(argv[0]) if argv else Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        env = dict(sim.env(), LIBTV_POLL_INTERVAL_SECONDS="0.1", LIBTV_MAX_POLL_INTERVAL_SECONDS="0.3",
                   LIBTV_DOWNLOAD_DIR=str(home / "downloads"))
        return run(home, sim.GATEWAY_KEY, env, "a lighthouse in a storm [sim:image+video]", "room-42")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
