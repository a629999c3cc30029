"""The home worker's socket: create-session handed to the running worker (the protocol is in handoff.py).

The worker runs the command's own submission code with the command's inputs, on a thread of its
own (not the step pool, so eight hanging polls cannot hold a submission back), over the
worker's warm HTTP connections. Nothing about a request is logged but its id and its outcome:
the environment it carries holds chat credentials.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from libtv_fsm.waiting import handoff, homefiles

GO_SECONDS = 10.0          # how long the worker waits for the client's go-ahead after "ready"
MAX_SUBMISSIONS = 16       # at once; beyond that a client is refused and submits by itself


class Listener:
    """Accepts create-session requests for ``worker`` on $NEXU_HOME/libtv-worker.sock (0600).

    ``worker`` has ``home``, ``http``, ``stopping`` and ``retire(why)``: the home worker, or a queue
    worker's stand-in (queue_handoff.py) on ``name`` = libtv-queue.sock. ``journal`` is the journal the
    worker serves (LIBTV_JOURNAL_URL, "" for the home's files): a command naming another is refused.
    """

    def __init__(self, worker: Any, log: Callable[[str], None], name: str = homefiles.SOCKET_NAME,
                 journal: str = "") -> None:
        self.worker = worker
        self.log = log
        self.path = homefiles.socket_path(worker.home, name)
        self.journal = journal
        self.identity = handoff.code_identity()
        self._sock: Optional[socket.socket] = None
        self._active = 0
        self._closed = False  # quiesced: every new request is told "stopping"
        self._count = threading.Lock()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    @property
    def active(self) -> int:
        """Submissions between "ready" and their answer: the worker does not leave while there are any."""
        return self._active

    def quiesce(self) -> bool:
        """Take no new submission; True once none is in progress (the worker may leave), else False."""
        with self._count:
            self._closed = self._active == 0
            return self._closed

    def open(self) -> None:
        """Listen (the caller holds the home lock, so a socket file left there is stale)."""
        with self._count:
            self._closed = False
        if self.path is None or self._sock is not None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            self.log(f"no create-session socket: {err}")
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600 from the start: the requests carry chat credentials
        try:
            sock.bind(self.path)
        except OSError as err:
            sock.close()
            self.log(f"no create-session socket: {err}")
            return
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), name="libtv-socket", daemon=True).start()

    def close(self) -> None:
        """Stop accepting; the socket file goes before the home lock does, so the next worker can bind."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        try:
            if self.path is not None:
                os.unlink(self.path)
        except OSError:
            pass

    def _accept(self, sock: socket.socket) -> None:
        while self._sock is sock:
            try:
                conn, _ = sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name="libtv-submit", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._handle(conn)
            except (OSError, ValueError) as err:
                self.log(f"create-session connection dropped: {type(err).__name__}")

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(handoff.READY_SECONDS)
        buffer = bytearray()
        request = handoff.read_line(conn, buffer)
        if not request or request.get("op") != "create-session" or request.get("proto") != handoff.PROTO:
            handoff.send_line(conn, {"status": "refused", "reason": "unknown request"})
            return
        rid = str(request.get("request") or "")[:32]
        if request.get("code") != self.identity:
            handoff.send_line(conn, {"status": "other-version"})
            self.log(f"create-session {rid} came from another version of the code; leaving once idle")
            self.worker.retire("another version of the code asked")
            return
        if not _same_home(str(request.get("home") or ""), self.worker.home):
            handoff.send_line(conn, {"status": "refused", "reason": "another home"})
            return
        sent_env = request.get("env")
        if not isinstance(sent_env, dict) or homefiles.journal_of(sent_env) != self.journal:
            handoff.send_line(conn, {"status": "refused", "reason": "another journal"})
            return
        with self._count:  # checked and counted at once: the worker leaves only when quiesce() says none runs
            if self._closed or self.worker.stopping:
                handoff.send_line(conn, {"status": "stopping"})
                return
            if self._active >= MAX_SUBMISSIONS:
                handoff.send_line(conn, {"status": "refused", "reason": "busy"})
                return
            self._active += 1
        try:
            handoff.send_line(conn, {"status": "ready"})
            conn.settimeout(GO_SECONDS)
            go = handoff.read_line(conn, buffer)
            if not go or go.get("go") != request.get("request"):
                self.log(f"create-session {rid}: the command did not go ahead; nothing sent")
                return
            code, out = run_submission(request.get("args") or {}, sent_env, self.worker.http,
                                       getattr(self.worker, "store", None))
            self.log(f"create-session {rid}: exit {code}")
            handoff.send_line(conn, {"status": "done", "code": code, "stdout": out})
        finally:
            with self._count:
                self._active -= 1


def _same_home(theirs: str, mine: str) -> bool:
    try:
        return bool(theirs) and os.path.samefile(theirs, mine)
    except OSError:
        return False


def run_submission(fields: Mapping[str, Any], sent_env: Mapping[str, str], http: Any,
                   store: Any = None) -> Tuple[int, str]:
    """create-session's own code with the command's arguments and environment: (exit code, stdout).

    ``store``: the worker's own store of the same home and journal, if it lends one (else one is opened).
    """
    import argparse
    import json

    from libtv_fsm.cli import failure_line, mask_keys
    from libtv_fsm.cli.session_commands import submit_request
    from libtv_fsm.errors import LibtvError

    # The worker's environment for what the command did not send (PATH, proxies), the command's for the rest.
    env: Dict[str, str] = {k: v for k, v in os.environ.items()
                           if not (k.startswith(handoff.ENV_PREFIXES) or k in handoff.ENV_NAMES)}
    env.update({str(k): str(v) for k, v in sent_env.items()})
    args = argparse.Namespace(**{name: _text(fields.get(name)) for name in ("message", "session_id", "channel", "chat_id")})
    try:
        payload = submit_request(args, env, http=http, store=store)
    except LibtvError as err:
        return err.exit_code, failure_line(mask_keys(str(err))) + "\n"
    except Exception as err:  # as the CLI's last line of defence: no traceback reaches the user
        return 1, failure_line(f"Unexpected error ({type(err).__name__}); set LIBTV_DEBUG=1 for details") + "\n"
    return 0, json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"


def _text(value: Any) -> Optional[str]:
    return None if value is None else str(value)
