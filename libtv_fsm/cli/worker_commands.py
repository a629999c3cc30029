"""CLI command of the home worker: `libtv-video worker` (CONTRACT section 8)."""
from __future__ import annotations

import argparse
import os
from typing import Mapping, Optional

IDLE_EXIT_ENV = "LIBTV_WORKER_IDLE_EXIT"
DEFAULT_IDLE_EXIT = 600.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="foreground: wait on and deliver every unfinished session of this home")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help=f"exit after this long with nothing to serve (default {DEFAULT_IDLE_EXIT:g}, or ${IDLE_EXIT_ENV})")
    p.add_argument("--concurrency", type=int, default=8, metavar="N", help="steps (HTTP calls) at once (default 8)")
    # A worker started to take over from an older one waits this long for it to let go (internal).
    p.add_argument("--await-lock", type=float, default=0.0, help=argparse.SUPPRESS)
    p.set_defaults(func=worker)


def idle_exit(flag: Optional[float], env: Mapping[str, str]) -> float:
    from libtv_fsm.config import env_number
    from libtv_fsm.errors import InputError

    value = flag if flag is not None else env_number(env, IDLE_EXIT_ENV, DEFAULT_IDLE_EXIT)
    if value < 0:
        raise InputError("--idle-exit must not be negative")
    return value


def worker(args: argparse.Namespace) -> int:
    import sys

    from libtv_fsm.cli.session_commands import journal_url, open_store
    from libtv_fsm.errors import InputError

    if args.concurrency < 1:
        raise InputError("--concurrency must be at least 1")

    if journal_url(os.environ):
        # A database journal: serve its task queue (CONTRACT section 9); any number, on any host.
        import logging

        from libtv_fsm.waiting.queue import run_queue_workers

        # procrastinate reports a job that raised through logging: into this process's stderr (its log).
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return run_queue_workers(os.environ, args.concurrency)
    from libtv_fsm.waiting.worker import serve

    seconds = idle_exit(args.idle_exit, os.environ)
    store = open_store()
    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    return serve(store, os.environ, concurrency=args.concurrency, idle_exit=seconds, await_lock=args.await_lock,
                 echo=echo)
