"""CLI commands about where the journal lives: `db migrate`, `journal export --to`, `journal import --from`."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, List, Tuple

from libtv_fsm.cli import fail, say


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="the PostgreSQL journal of LIBTV_JOURNAL_URL")
    dbsub = p.add_subparsers(dest="db_command", metavar="DB_COMMAND", parser_class=type(p))
    dbsub.required = True
    m = dbsub.add_parser("migrate", help="create or upgrade the journal's schema (re-runnable)")
    m.add_argument("--url", help="the database (default: LIBTV_JOURNAL_URL)")
    m.set_defaults(func=db_migrate)

    p = sub.add_parser("journal", help="move sessions between a home's journal files and a database")
    jsub = p.add_subparsers(dest="journal_command", metavar="JOURNAL_COMMAND", parser_class=type(p))
    jsub.required = True
    e = jsub.add_parser("export", help="copy every session of this journal to DIR (a NEXU_HOME) or a postgresql:// URL")
    e.add_argument("--to", required=True, metavar="DIR|URL")
    e.set_defaults(func=journal_export)
    i = jsub.add_parser("import", help="copy every session of DIR (a NEXU_HOME) or a postgresql:// URL into this journal")
    i.add_argument("--from", dest="source", required=True, metavar="DIR|URL")
    i.set_defaults(func=journal_import)


def db_migrate(args: argparse.Namespace) -> int:
    from libtv_fsm.cli.session_commands import journal_url
    from libtv_fsm.errors import InputError
    from libtv_fsm.journal import is_database_url, open_journal

    url = (args.url or journal_url()).strip()
    if not url:
        raise InputError("db migrate needs a database: set LIBTV_JOURNAL_URL or pass --url postgresql://...")
    if args.url and not is_database_url(url):  # not echoed: a URL can hold a password
        raise InputError("--url must be a postgresql:// URL")
    journal: Any = open_journal(url)
    try:
        before, now = journal.migrate()
    finally:
        journal.close()
    say(f"Journal schema at version {now}" + (f" (was {before})" if before != now else " (already current)"))
    from libtv_fsm.waiting.queue import migrate_queue

    say("Task queue schema " + ("created" if migrate_queue(url) else "already there"))
    return 0


# A journal, what messages call it, and what identifies it (the whole URL, or the resolved folder).
Named = Tuple[Any, str, str]


def journal_export(args: argparse.Namespace) -> int:
    return _copy(_this_journal(), _journal_at(args.to), "Exported")


def journal_import(args: argparse.Namespace) -> int:
    return _copy(_journal_at(args.source, source=True), _this_journal(), "Imported")


def _this_journal() -> Named:
    """This command's journal: LIBTV_JOURNAL_URL's database, else the files of NEXU_HOME (a legacy file imported first)."""
    from libtv_fsm.cli.session_commands import journal_url, open_store
    from libtv_fsm.journal import describe_url

    store = open_store()
    if journal_url():
        return store.journal, describe_url(journal_url()), journal_url()
    return store.journal, str(store.home), str(Path(store.home).resolve())


def _journal_at(spec: str, source: bool = False) -> Named:
    """The journal ``spec`` names: a postgresql:// URL, or a NEXU_HOME folder (or its libtv-journal folder).

    A ``source`` folder must hold a journal (a legacy file there is imported first); a target is created.
    """
    from libtv_fsm.errors import InputError
    from libtv_fsm.journal import JOURNAL_DIR, JsonlJournal, describe_url, is_database_url, open_journal

    spec = spec.strip()
    if is_database_url(spec):
        return open_journal(spec), describe_url(spec), spec
    if "://" in spec:
        raise InputError("Give a folder (a NEXU_HOME) or a postgresql:// URL")
    home = Path(spec).expanduser().absolute()
    if home.name == JOURNAL_DIR:
        home = home.parent
    if home.exists() and not home.is_dir():
        raise InputError(f"Not a folder: {home}")
    if source and home.is_dir():
        from libtv_fsm import events as ev
        from libtv_fsm.legacy import import_legacy as run_import
        from libtv_fsm.store import SessionStore

        run_import(SessionStore(home), ev.now())  # what any command in that home would do first
    if source and not (home / JOURNAL_DIR).is_dir():
        raise InputError(f"No journal to copy at {home}: not a NEXU_HOME (it has no {JOURNAL_DIR} folder)")
    return JsonlJournal(home), str(home), str(home.resolve())


def _copy(source_named: Named, target_named: Named, verb: str) -> int:
    from libtv_fsm.errors import InputError
    from libtv_fsm.journal import JsonlJournal
    from libtv_fsm.journal.transfer import copy_journal

    (source, source_name, source_id), (target, target_name, target_id) = source_named, target_named
    if source_id == target_id:
        raise InputError(f"The source and the target are the same journal ({source_name})")
    report = copy_journal(source, target)
    refused = [r for r in report if r.problem]
    appended = sum(r.appended for r in report)
    fresh = sum(1 for r in report if r.appended and not r.problem)
    say(f"{verb} {appended} event(s) of {fresh} session(s) from {source_name} to {target_name}; "
        f"{sum(1 for r in report if not r.appended and not r.problem)} already there")
    unread: List[str] = [f"{r.session_id} ({r.skipped})" for r in report if r.skipped]
    if unread:
        say(f"⚠️ Unreadable source events left out: {', '.join(unread)}")
    for r in refused:
        fail(f"Session {r.session_id} not copied: {r.problem}")
    for journal in (source, target):
        journal.close()
    if appended and isinstance(target, JsonlJournal):
        from libtv_fsm import readmodel

        # The copy appended below the store: the home's libtv-sessions.json is rebuilt, as legacy.py does.
        readmodel.rebuild(target.root.parent)
    return 1 if refused else 0
