"""Read every session of a NEXU_HOME through the embedding API and print its timeline."""
from __future__ import annotations

import sys

from libtv_fsm import SessionStore


def main(home: str) -> None:
    store = SessionStore(home)
    for session in store.sessions():
        print(f"{session.session_id}  {session.state}  results={len(session.result_urls)}  chat={session.delivery}")
        for entry in session.events:
            print(f"    #{entry.seq} {entry.type}{'' if entry.applied else '  (ignored: ' + entry.note + ')'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else __import__("os").path.expanduser("~/.nexu"))
