"""CLI commands about sessions and their journals: create-session, wait-and-deliver, recover, history."""
from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Mapping

from libtv_fsm.cli import emit_json, say

# A worker started while an older one is leaving waits this long for it to let go (its steps in
# progress end within their HTTP deadlines).
SUCCESSOR_WAIT_SECONDS = 600.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create-session", help="submit a request; a background waiter delivers the result to the chat")
    p.add_argument("message", metavar="MESSAGE", nargs="?", help="the user's request, verbatim")
    p.add_argument("--session-id", help="continue this session (a new turn)")
    p.add_argument("--channel", help="chat channel the request came from: feishu, telegram, slack, discord, wecom, openclaw:<name>")
    p.add_argument("--chat-id", help="chat to deliver to, as the inbound metadata names it "
                                     "(Feishu: a group's oc_ id, or the sender's ou_ id)")
    p.set_defaults(func=create_session)

    p = sub.add_parser("wait-and-deliver", help="blocking: poll to a final state, deliver, exit")
    p.add_argument("--session-id", required=True)
    p.add_argument("--project-id", help="the session's project (for a session this machine has no journal of)")
    p.set_defaults(func=wait_and_deliver)

    p = sub.add_parser("recover", help="list every session; re-check unfinished ones; restart lost waiters")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=recover)

    p = sub.add_parser("history", help="the replayed event timeline of one session")
    p.add_argument("session_id", metavar="SESSION_ID")
    p.add_argument("--json", action="store_true", help="one JSON document instead of human lines")
    p.set_defaults(func=history)


def journal_url(env: Mapping[str, str] = os.environ) -> str:
    """LIBTV_JOURNAL_URL: when set, every command keeps its journal in that database (CONTRACT section 9)."""
    return env.get("LIBTV_JOURNAL_URL", "").strip()


def open_store(env: Mapping[str, str] = os.environ) -> Any:
    """The SessionStore of NEXU_HOME, with a legacy libtv-sessions.json imported on first use.

    With LIBTV_JOURNAL_URL set, its journal is that database and the rest (key, logs) stays in NEXU_HOME;
    the legacy file belongs to the JSONL journal then and is left alone (`journal import` moves a home).
    """
    from libtv_fsm import events as ev
    from libtv_fsm.config import nexu_home
    from libtv_fsm.legacy import import_legacy
    from libtv_fsm.store import SessionStore

    if journal_url(env):
        return SessionStore.from_url(journal_url(env), nexu_home(env))
    store = SessionStore(nexu_home(env))
    import_legacy(store, ev.now())
    return store


def _backend(store: Any, env: Mapping[str, str] = os.environ, http: Any = None) -> Any:
    from libtv_fsm.backends import open_backend
    from libtv_fsm.config import require_api_key

    return open_backend(require_api_key(store.home), env, session=http)


def create_session(args: argparse.Namespace) -> int:
    import sys

    from libtv_fsm.waiting.homefiles import worker_mode

    successor = False
    mode = worker_mode(os.environ)
    if (args.message or "").strip() and mode in ("worker", "queue"):
        # The home's worker (or a queue worker of this home), when up, does the submission: this
        # process then imports nothing heavy.
        from libtv_fsm.waiting.handoff import create_through_worker

        outcome = create_through_worker({"message": args.message, "session_id": args.session_id,
                                         "channel": args.channel, "chat_id": args.chat_id}, os.environ)
        if outcome.answer is not None:
            code, out = outcome.answer
            sys.stdout.write(out)
            sys.stdout.flush()
            return code
        successor = outcome.successor and mode == "worker"  # queue workers are the operator's to replace
    emit_json(submit_request(args, os.environ, successor=successor))
    return 0


def submit_request(args: argparse.Namespace, env: Mapping[str, str], http: Any = None,
                   successor: bool = False, store: Any = None) -> Dict[str, Any]:
    """create-session's work with ``env`` for the environment (the command's own, or one the worker was handed).

    ``successor``: the home's worker is leaving (another version), so the one started here waits for it.
    ``store``: the store of ``env``'s home and journal, when the caller keeps one open (a queue worker).
    """
    from libtv_fsm.config import effective_ratio, load_config, model_hint_enabled, relayed_message
    from libtv_fsm.errors import InputError
    from libtv_fsm.spawn import spawn_waiter, spawn_worker, start_background
    from libtv_fsm.submit import note_for, resolve_target, submit, summary
    from libtv_fsm.waiting.homefiles import worker_mode

    text = (args.message or "").strip()
    if not text:
        raise InputError("Nothing to generate: pass the user's request as MESSAGE")
    store = store if store is not None else open_store(env)
    config = load_config(store.home)
    ratio, model_hint = effective_ratio(config, env), model_hint_enabled(env)
    backend = _backend(store, env, http)
    # The user's words go to the journal as they are; upstream gets them with the hints.
    relayed = relayed_message(text, backend.auth_mode, ratio, model_hint)
    target = resolve_target(args.channel, args.chat_id, env, http=backend.session)
    mode = worker_mode(env)
    if mode == "queue":
        from libtv_fsm.waiting.queue import defer_on_submit

        defer_on_submit(store)  # the submission and its first job commit together; no local process
    session, _ = submit(store, backend, text, relayed, session_id=args.session_id, target=target)
    if mode == "process":
        spawn_waiter(store.home, session.session_id, env)
    elif successor:
        spawn_worker(store.home, env, await_lock=SUCCESSOR_WAIT_SECONDS)
    elif mode == "worker":
        start_background(store.home, env)
    waiter = mode != "skip"
    return summary(session, target, note_for(session.session_id, target, waiter))


def wait_and_deliver(args: argparse.Namespace) -> int:
    from libtv_fsm.config import require_api_key
    from libtv_fsm.ids import validate_session_id
    from libtv_fsm.waiter import Waiter, WaitSettings, stderr_log

    sid = validate_session_id(args.session_id)
    store = open_store()
    api_key = require_api_key(store.home)
    settings = WaitSettings.from_env(os.environ)  # a bad setting is refused before anything is journaled
    if not store.exists(sid):
        _adopt(store, sid, args.project_id, api_key)
    code = Waiter(store, sid, api_key=api_key, env=os.environ, settings=settings, log=stderr_log(sid)).run()
    emit_json({"sessionId": sid, "state": store.replay(sid).state})
    return code


def _adopt(store: Any, sid: str, project_id: Any, api_key: str) -> None:
    """Start a journal for a session submitted elsewhere, so this waiter can take it over."""
    from libtv_fsm import events as ev
    from libtv_fsm.backends.base import canvas_url
    from libtv_fsm.config import route_for_key
    from libtv_fsm.submit import resolve_target

    target = resolve_target(None, None, os.environ)
    project = project_id or ""
    store.record(sid, ev.Submitted(
        at=ev.now(), project_uuid=project, project_url=canvas_url(project) if project else "", text="", message="",
        auth_mode=route_for_key(api_key, os.environ).auth_mode, delivery=target.delivery, continued=True,
    ))


def _recover_local(args: argparse.Namespace) -> bool:
    """`recover` when no key is configured and nothing waits for import: answered from the snapshot index.

    Without a key there is nothing to re-check upstream and no waiter to start, so the answer is
    the journals' alone, read without importing the machine or the HTTP stack. False: not the case.
    """
    import sys

    from libtv_fsm import snapshots

    home = snapshots.nexu_home()
    if journal_url() or not snapshots.is_local(home):
        return False
    run_locks: Dict[int, str] = {}
    rows = snapshots.list_sessions(home, run_locks)
    probe = snapshots.waiter_probe(home, run_locks)
    if probe is None:
        return False
    listed = [(row, "running" if probe(row.session_id) else "none") for row in rows]
    from libtv_fsm import readmodel

    readmodel.sync(home, rows, lambda: snapshots.list_sessions(home))
    if args.json:
        text = snapshots.report_json(listed) + "\n"
        out = getattr(sys.stdout, "buffer", None)
        if out is not None:  # megabytes for a big home: skip the text layer (print's result, byte for byte)
            sys.stdout.flush()
            out.write(text.encode("utf-8", "replace"))
            out.flush()
        else:
            print(text, end="", flush=True)
        return True
    if not listed:
        say("No sessions yet.")
    for row, waiter in listed:
        _say_session(dict(row.view(), waiter=waiter))
    return True


def _say_session(s: Dict[str, Any]) -> None:
    results = f"{len(s['result_urls'])} result(s)"
    chat = f"{s['delivery']['channel']}:{s['delivery']['chat_id']}" if s["delivery"] else "no chat"
    say(f"{s['session_id']}  {s['state']:<9}  {results:<12}  {chat}  waiter: {s['waiter']}  {s['submitted_text'][:40]!r}")


def recover(args: argparse.Namespace) -> int:
    import sys

    if _recover_local(args):
        return 0
    from libtv_fsm.config import load_config
    from libtv_fsm.recovery import recover as run_recover
    from libtv_fsm.recovery import resolve_submits
    from libtv_fsm.spawn import spawn_waiter
    from libtv_fsm.waiting.homefiles import worker_mode

    store = open_store()
    api_key = load_config(store.home).api_key
    backend = _backend(store) if api_key else None
    mode = worker_mode(os.environ)
    wanted = []

    waited = None
    if mode == "queue":
        from libtv_fsm.waiting.queue import defer_first_step, defer_on_submit, has_job

        defer_on_submit(store)  # an intent finished below commits its first job with it

        def waited(sid: str) -> bool:  # between two steps no claim is held: the queued job is the waiter
            return has_job(store, sid)

    def spawn(sid: str) -> int:
        if mode == "process":
            return spawn_waiter(store.home, sid)
        if mode == "queue":
            resume_timed_out(store, sid)
            defer_first_step(store, sid)  # False when the session already has a job: nothing to do
            return 0
        # The home worker does not resume a timed-out session by itself: recover does, here.
        resume_timed_out(store, sid)
        wanted.append(sid)
        return 0

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    skip = mode == "skip"
    # First the submits a crashed create-session left behind: a recovered one is then an ordinary session below.
    submits = resolve_submits(store, backend, log)
    # Its listing brings the read model up to date (the store's projections), its re-checks too.
    report = run_recover(store, os.environ, backend, None if skip or not api_key else spawn, log=log, waited=waited)
    if wanted:
        from libtv_fsm.spawn import start_background

        start_background(store.home, retry=True)
    if args.json:
        doc: Dict[str, Any] = {"sessions": report}
        if submits:
            doc["submits"] = submits
        emit_json(doc)
        return 0
    for entry in submits:
        if entry["status"] == "recovered":
            say(f"Recovered session {entry['session_id']}: submitted {entry['at']} but never recorded ({entry['submitted_text'][:40]!r})")
        else:
            say(f"⚠️ A request submitted {entry['at']} ({entry['submitted_text'][:40]!r}) is {entry['status']}: {entry['reason']}")
    if not report:
        say("No sessions yet.")
    for s in report:
        _say_session(s)
    return 0


def resume_timed_out(store: Any, sid: str) -> None:
    """Record that a timed-out session is waited on again, so the home worker takes it (idempotent)."""
    from libtv_fsm import events as ev
    from libtv_fsm.machine import TIMEOUT

    store.record_with(sid, lambda s: [ev.Resumed(at=ev.now(), reason="recover")] if s.state == TIMEOUT else [])


def history(args: argparse.Namespace) -> int:
    from libtv_fsm import snapshots
    from libtv_fsm.errors import UnknownSession
    from libtv_fsm.ids import validate_session_id

    sid = validate_session_id(args.session_id)
    home = snapshots.nexu_home()
    if journal_url():  # no snapshots of a database journal: replayed
        from libtv_fsm.timeline import event_view, session_view

        store = open_store()
        session = store.load(sid)
        view, events = session_view(session), [event_view(entry) for entry in session.events]
        journal = store.journal.location(sid)
    else:
        if snapshots.legacy_import_pending(home):
            open_store()
        # The replayed timeline, from its snapshot when the journal has not changed since.
        found = snapshots.timeline(home, sid)
        if found is None:
            raise UnknownSession(f"Unknown session {sid}: no journal for it in {home}")
        view, events = found
        journal = str((home / snapshots.JOURNAL_DIR / f"{sid}.jsonl").resolve())
    if args.json:
        doc: Dict[str, Any] = {"session_id": sid, "state": view["state"], "journal": journal}
        doc.update(view)
        doc["events"] = events
        emit_json(doc)
        return 0
    say(f"Session {sid}: {view['state']}  ({len(events)} events, journal {journal})")
    if view["delivery"]:
        say(f"  Chat: {view['delivery']['channel']} {view['delivery']['chat_id']}")
    from libtv_fsm.cli.timeline_text import event_lines

    for line in event_lines(events):
        say(line)
    for url in view.get("uncertain_urls", []):
        say(f"  uncertain: a send of {url} started but its outcome was never recorded")
    if view.get("skipped_lines"):
        say(f"  {view['skipped_lines']} unreadable journal line(s) skipped")
        for problem in view.get("journal_problems", []):
            say(f"    {problem}")
    return 0
