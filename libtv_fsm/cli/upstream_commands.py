"""CLI commands that talk to LibTV directly: upload, query-session, download-results, tasks, change-project."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from libtv_fsm.cli import emit_json, say

if TYPE_CHECKING:
    from libtv_fsm.backends import Backend, Message
    from libtv_fsm.results import Batch

# Parallel downloads: enough to overlap latency, few enough not to flood a home uplink.
DOWNLOAD_WORKERS = 4


def _backend() -> "Backend":
    from libtv_fsm.backends import open_backend
    from libtv_fsm.config import nexu_home, require_api_key

    return open_backend(require_api_key(nexu_home(os.environ)), os.environ)


def _prefixes() -> Tuple[str, ...]:
    from libtv_fsm.results import result_prefixes

    return result_prefixes(os.environ.get("LIBTV_EXTRA_RESULT_PREFIXES"))


# --- upload ----------------------------------------------------------------------------------

def cmd_upload(args: argparse.Namespace) -> int:
    from libtv_fsm.backends.upload import check_upload
    from libtv_fsm.cli.progress import Progress

    upload = check_upload(Path(args.file))  # the guards come before the key and any request
    backend = _backend()
    progress = Progress(f"Uploading {upload.name}", total=upload.size)
    try:
        url = backend.upload(upload.path, progress=progress.sent if progress.enabled else None)
    finally:
        progress.finish()
    emit_json({"url": url})
    return 0


# --- query-session ---------------------------------------------------------------------------

def poll_state(messages: Sequence["Message"], after_seq: Optional[int],
               prefixes: Sequence[str]) -> Tuple[str, "Batch"]:
    """The state one query shows: "failed", "completed" or "polling", and the batch it came from.

    One query cannot count quiet polls, so only the assistant-follows-results half of the
    completion rule applies here; the waiter applies both.
    """
    from libtv_fsm.results import is_complete, read_batch

    batch = read_batch(messages, after_seq if after_seq is not None else -1, prefixes)
    if batch.failure and not batch.urls:
        return "failed", batch
    if is_complete(bool(batch.urls), batch.last_result_seq, batch.last_assistant_seq, 0):
        return "completed", batch
    return "polling", batch


def query_view(session_id: str, messages: Sequence["Message"], after_seq: Optional[int],
               project_id: Optional[str], prefixes: Sequence[str]) -> Dict[str, Any]:
    """The JSON `query-session` prints."""
    from libtv_fsm.backends.base import canvas_url

    state, batch = poll_state(messages, after_seq, prefixes)
    view: Dict[str, Any] = {
        "messages": [{"id": m.id, "seq": m.seq, "role": m.role, "content": m.content} for m in messages],
        "state": state,
    }
    if batch.urls:
        view["result_urls"] = list(batch.urls)
    if state == "failed":
        view["failure_message"] = batch.failure
    if project_id:
        view["projectUrl"] = canvas_url(project_id)
    return view


def cmd_query_session(args: argparse.Namespace) -> int:
    from libtv_fsm.ids import validate_project_id, validate_session_id

    session_id = validate_session_id(args.session_id)
    project_id = validate_project_id(args.project_id) if args.project_id else None
    backend = _backend()
    messages = backend.query_session(session_id, args.after_seq)
    view = query_view(session_id, messages, args.after_seq, project_id, backend.prefixes)
    journaled = _journal_query(session_id, messages, backend.prefixes)
    if journaled is not None:
        view.pop("result_urls", None)
        view.pop("failure_message", None)
        view.update(journaled)
    emit_json(view)
    return 0


def _journal_query(session_id: str, messages: Sequence["Message"], prefixes: Sequence[str]) -> Optional[Dict[str, Any]]:
    """For a session this machine journals: record what the query saw, and answer from the journal.

    New results and a conclusion (completed / failed) go into the journal, so a running waiter
    delivers them at its next step; the state shown is the journal's, this turn only.
    """
    from libtv_fsm.cli.session_commands import open_store
    from libtv_fsm.waiter import observe

    store = open_store()
    if not store.exists(session_id):
        return None
    session = observe(store, session_id, messages, prefixes, "query", always=False)
    view: Dict[str, Any] = {"state": session.state}
    if session.result_urls:
        view["result_urls"] = list(session.result_urls)
    if session.failure_message is not None:
        view["failure_message"] = session.failure_message
    if session.project_url:
        view["projectUrl"] = session.project_url
    return view


# --- download-results ------------------------------------------------------------------------

def _output_dir(arg: Optional[str]) -> Path:
    raw = arg or os.environ.get("LIBTV_DOWNLOAD_DIR") or "~/Downloads/libtv_results"
    return Path(raw).expanduser().absolute()


def cmd_download_results(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from libtv_fsm.backends.download import download, safe_prefix
    from libtv_fsm.cli.progress import Progress
    from libtv_fsm.errors import ConfigError, InputError, LibtvError
    from libtv_fsm.ids import validate_session_id
    from libtv_fsm.results import is_result_url

    session_id = validate_session_id(args.session_id) if args.session_id else None
    if not args.urls and session_id is None:
        raise InputError("Give a session id or --urls")
    session = None
    if args.urls:
        prefixes = _prefixes()
        urls: List[str] = list(dict.fromkeys(args.urls))
    else:
        backend = _backend()
        prefixes, session = backend.prefixes, backend.session
        urls = backend.results(session_id)  # type: ignore[arg-type]
    if not urls:
        raise InputError(f"No results to download yet for session {session_id}")
    if session is None:
        from libtv_fsm import transport

        session = transport.new_session()

    folder = _output_dir(args.output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"Cannot create output folder {folder}: {err.strerror or type(err).__name__}") from None
    stem = safe_prefix(args.prefix, default=safe_prefix(session_id))
    errors: List[Dict[str, str]] = []
    jobs = []
    for n, url in enumerate(urls, start=1):
        if is_result_url(url, prefixes):
            jobs.append((url, f"{stem}_{n}"))
        else:
            errors.append({"url": url[:200], "error": "Not a result URL; refused"})

    progress = Progress("Downloading", files=len(jobs))
    advance = progress.advance if progress.enabled else None

    def fetch(job: Tuple[str, str]) -> Tuple[str, Optional[Path], Optional[str]]:
        try:
            return job[0], download(session, job[0], folder, job[1], prefixes, progress=advance), None
        except LibtvError as err:
            return job[0], None, str(err)
        except OSError as err:
            return job[0], None, f"Cannot write to {folder}: {err.strerror or type(err).__name__}"
        finally:
            progress.file_done()

    downloaded: List[str] = []
    if jobs:
        try:
            with ThreadPoolExecutor(max_workers=min(DOWNLOAD_WORKERS, len(jobs))) as pool:
                for url, path, error in pool.map(fetch, jobs):  # map keeps the results' order
                    if path is not None:
                        downloaded.append(str(path))
                    else:
                        errors.append({"url": url[:200], "error": error or "failed"})
        finally:
            progress.finish()
    out: Dict[str, Any] = {"output_dir": str(folder.resolve()), "downloaded": downloaded, "total": len(urls)}
    if errors:
        out["errors"] = errors
    emit_json(out)
    if not downloaded:
        raise InputError(f"No result downloaded: {errors[0]['error']}")
    return 0


# --- tasks / change-project ------------------------------------------------------------------

def cmd_tasks(args: argparse.Namespace) -> int:
    backend = _backend()
    tasks = backend.tasks()
    if args.json:
        import attrs

        emit_json({"tasks": [attrs.asdict(task) for task in tasks]})
        return 0
    if not tasks:
        say("No tasks yet.")
        return 0
    say(f"{len(tasks)} task(s):")
    for task in tasks:
        line = f"• {task.id}  {task.status}"
        if task.backend:
            line += f"  [{task.backend}]"
        if task.created_at:
            line += f"  created {task.created_at}"
        if task.completed_at:
            line += f"  completed {task.completed_at}"
        say(line)
        if task.video_url:
            say(f"    🎬 {task.video_url}")
        if task.error_message:
            say(f"    ⚠️ {' '.join(task.error_message.split())[:300]}")
    return 0


def cmd_change_project(args: argparse.Namespace) -> int:
    from libtv_fsm.backends.base import canvas_url

    project = _backend().change_project()
    emit_json({"projectUuid": project, "projectUrl": canvas_url(project)})
    return 0


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="upload an image or video (at most 200 MB); prints {\"url\"}")
    p.add_argument("--file", required=True, help="the image or video to upload")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("query-session", help="fetch a session's messages and results")
    p.add_argument("session_id", metavar="SESSION_ID")
    p.add_argument("--after-seq", type=_int, default=None, help="only messages after this seq")
    p.add_argument("--project-id", default=None, help="project uuid, to print the canvas URL")
    p.set_defaults(func=cmd_query_session)

    p = sub.add_parser("download-results", help="download a session's results (or --urls)")
    p.add_argument("session_id", metavar="SESSION_ID", nargs="?")
    p.add_argument("--urls", nargs="+", default=None, help="result URLs to download instead")
    p.add_argument("--output-dir", default=None, help="folder (default LIBTV_DOWNLOAD_DIR or ~/Downloads/libtv_results)")
    p.add_argument("--prefix", default=None, help="file-name prefix: files are <prefix>_<n>.<ext>")
    p.set_defaults(func=cmd_download_results)

    p = sub.add_parser("tasks", help="the gateway's task list (mgk_ keys only)")
    p.add_argument("--json", action="store_true", help='one JSON line {"tasks": [...]} instead of human lines')
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("change-project", help="start a new project; prints {\"projectUuid\",\"projectUrl\"}")
    p.set_defaults(func=cmd_change_project)
