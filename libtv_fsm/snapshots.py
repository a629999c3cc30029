"""Snapshots: a cache of replayed sessions (one index for listings, one file per timeline) that the journal can always rebuild.

The journal stays the source of truth. A snapshot is used only when the journal file's
(size, mtime_ns, inode) and the code that replays it (``code_stamp``) are exactly those it
was built from; anything else, a stale key, a torn or hand-edited snapshot, a newer version
of the library, means the session is replayed from its journal and the snapshot rewritten.
A key is taken only from a read that saw the whole file unchanged (fstat before and after,
size equal to the bytes read), so a writer appending meanwhile can never leave a snapshot
that claims a journal state it was not built from.

This module imports only the standard library: the local commands (`recover` without a key,
`history`) answer from fresh snapshots without importing attrs, cattrs, transitions or
filelock; those are imported only to rebuild.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

FORMAT = 1
JOURNAL_DIR = "libtv-journal"          # journal.JOURNAL_DIR (a test keeps them equal)
SNAPSHOT_DIR = "snapshots"             # inside the journal folder
INDEX_NAME = "index.tsv"
INTENT_DIR = ".submits"                # intents.INTENT_DIR
READ_MODEL = "libtv-sessions.json"     # the legacy read model (readmodel.py)
IMPORT_MARKER = ".legacy-imported"     # in the journal folder: the legacy file was imported (legacy.py)
# The modules whose code decides what a replay gives: change one and every snapshot is stale.
_STAMPED = ("events", "machine", "replay", "timeline", "journal/jsonl", "snapshots")

Key = str                              # "size.mtime_ns.inode" of one journal file
_NOTICE_KINDS = ("failed", "timeout")


def nexu_home(env: Mapping[str, str] = os.environ) -> Path:
    """`NEXU_HOME`, else `~/.nexu`, absolute: config.nexu_home without importing config (it needs attrs)."""
    raw = (env.get("NEXU_HOME") or "").strip()
    return Path(raw or "~/.nexu").expanduser().absolute()


_stamp: Optional[str] = None
_content_stamp: Optional[str] = None


def content_stamp() -> str:
    """Like :func:`code_stamp`, from the modules' bytes instead of their mtimes: the same code on every host
    (for caches shared by hosts, such as the database's session views)."""
    global _content_stamp
    if _content_stamp is None:
        import hashlib

        from libtv_fsm import __version__

        here = os.path.dirname(os.path.abspath(__file__))
        digest = hashlib.sha256(f"{FORMAT}:{__version__}".encode())
        for name in _STAMPED:
            try:
                with open(os.path.join(here, *name.split("/")) + ".py", "rb") as fh:
                    digest.update(fh.read())
            except OSError:
                digest.update(b"-")
        _content_stamp = digest.hexdigest()[:20]
    return _content_stamp


def code_stamp() -> str:
    """Format, library version and the replaying modules' (size, mtime): an upgrade invalidates every snapshot."""
    global _stamp
    if _stamp is None:
        from libtv_fsm import __version__

        here = os.path.dirname(os.path.abspath(__file__))
        parts = [str(FORMAT), __version__]
        for name in _STAMPED:
            try:
                st = os.stat(os.path.join(here, *name.split("/")) + ".py")
                parts.append(f"{st.st_size}.{st.st_mtime_ns}")
            except OSError:
                parts.append("-")
        _stamp = ":".join(parts)
    return _stamp


def _key(st: os.stat_result) -> Key:
    return f"{st.st_size}.{st.st_mtime_ns}.{st.st_ino}"


def read_keyed(path: Path) -> Tuple[bytes, Optional[Key]]:
    """The journal's bytes and the key they may be cached under (None: it changed while being read).

    FileNotFoundError if there is no journal; any other failure is the journal's JournalError.
    """
    from libtv_fsm.atomicfile import read_steady

    try:
        data, steady = read_steady(path)
    except FileNotFoundError:
        raise
    except OSError as err:
        from libtv_fsm.errors import JournalError

        raise JournalError(f"Cannot read the journal {path}: {err.strerror or err}") from None
    return data, (_key(steady) if steady is not None else None)


def _replay_bytes(session_id: str, data: bytes) -> Any:
    """Exactly SessionStore.replay, from bytes already read."""
    from libtv_fsm.journal import parse_lines
    from libtv_fsm.replay import replay

    read = parse_lines(data)
    return replay(session_id, read.entries, skipped_lines=read.skipped, problems=read.problems)


def _dump(value: Any) -> str:
    # The CLI's own JSON form (cli.emit_json), so a cached fragment prints byte for byte the same.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _atomic_write(path: Path, text: str) -> None:
    """Best effort: a cache that cannot be written is only slower next time (and needs no fsync)."""
    from libtv_fsm.atomicfile import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, text.encode("utf-8"), 0o600, durable=False)
    except OSError:
        pass


# -- the index: one line per session, for listings ----------------------------------------


class Summary:
    """One session as a listing needs it; ``view_json`` is its `recover --json` entry (without ``waiter``)."""

    __slots__ = ("session_id", "key", "state", "_created", "_updated", "delivery", "_notices", "view_json")

    def __init__(self, session_id: str, key: Optional[Key], state: str, created: str, updated: str,
                 delivery: str, notices: str, view_json: str) -> None:
        # Kept as the index spells them: a listing that only prints converts nothing.
        self.session_id = session_id
        self.key = key
        self.state = state
        self._created = created
        self._updated = updated
        self.delivery = True if delivery == "1" else None   # truthy like Session.delivery (recovery.needs_waiter)
        self._notices = notices
        self.view_json = view_json

    @classmethod
    def of(cls, session: Any, key: Optional[Key]) -> "Summary":
        from libtv_fsm.timeline import session_view

        created = session.created_at.timestamp() if session.created_at else 0.0
        updated = session.updated_at.timestamp() if session.updated_at else 0.0
        # Only the notice kinds recovery asks about: nothing free-form may reach a tab-separated line.
        notices = ",".join(n for n in session.notices if n in _NOTICE_KINDS)
        return cls(session.session_id, key, session.state, repr(created), repr(updated),
                   "1" if session.delivery is not None else "0", notices, _dump(session_view(session)))

    @classmethod
    def of_timeline(cls, session_id: str, key: Optional[Key], snap: Mapping[str, Any]) -> "Summary":
        """The same Summary :meth:`of` gives, from the session's timeline snapshot (no replay, no machine)."""
        view = snap["view"]
        notices = snap["notices"]
        if not isinstance(view, dict) or not isinstance(notices, list) or view.get("session_id") != session_id:
            raise ValueError("not a timeline snapshot of this session")
        return cls(session_id, key, str(view["state"]), repr(_timestamp(view["created_at"])),
                   repr(_timestamp(view["updated_at"])), "1" if view["delivery"] else "0",
                   ",".join(n for n in notices if n in _NOTICE_KINDS), _dump(view))

    @property
    def created(self) -> float:
        return float(self._created)

    @property
    def updated(self) -> float:
        return float(self._updated)

    @property
    def notices(self) -> Tuple[str, ...]:
        return tuple(n for n in self._notices.split(",") if n)

    def view(self) -> Dict[str, Any]:
        return json.loads(self.view_json)

    def line(self) -> str:
        assert self.key is not None
        return "\t".join((self.session_id, self.key, self.state, self._created, self._updated,
                          "1" if self.delivery else "0", self._notices, self.view_json))

    @classmethod
    def parse(cls, line: str) -> "Summary":
        sid, key, state, created, updated, delivery, notices, view = line.split("\t", 7)
        if not view.endswith("}") or not view.startswith("{"):
            raise ValueError("torn entry")
        float(created), float(updated)  # a damaged number must fail here, not in a sort later
        return cls(sid, key, state, created, updated, delivery, notices, view)


def _timestamp(text: Optional[str]) -> float:
    """A view's time (events.format_time's spelling) as Summary.of computes it from the replayed datetime."""
    if text is None:
        return 0.0
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text).timestamp()


def newest_first(s: Summary) -> Tuple[float, float, str]:
    return (s.created, s.updated, s.session_id)  # SessionStore.sessions' order


def _index_header() -> str:
    return f"libtv-fsm-index\t{code_stamp()}"


def _load_index(root: Path) -> Tuple[Dict[str, Summary], bool]:
    """The index's entries in its order (newest first), and whether it was whole and current."""
    try:
        with open(os.path.join(root, SNAPSHOT_DIR, INDEX_NAME), encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError):
        return {}, False
    lines = text.split("\n")
    if lines[0] != _index_header() or lines[-1] != "":
        return {}, False  # another format or code, or a torn file: rebuild everything
    found: Dict[str, Summary] = {}
    whole = True
    parse = Summary.parse
    for line in lines[1:-1]:
        try:
            row = parse(line)
        except ValueError:
            whole = False
            continue
        found[row.session_id] = row
    return found, whole


def _scan(root: Path, known: Mapping[str, Any], run_locks: Optional[Dict[int, str]] = None) -> Dict[str, Key]:
    """Every session journal in the folder and its current key; fills ``run_locks`` (inode -> session id)."""
    from libtv_fsm.ids import is_valid_id

    found: Dict[str, Key] = {}
    try:
        entries = os.scandir(root)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            name = entry.name
            if not name.endswith(".jsonl"):
                if run_locks is not None and name.endswith(".run.lock"):
                    run_locks[entry.inode()] = name[:-9]  # free: readdir already gave it
                continue
            sid = name[:-6]
            if sid in known or is_valid_id(sid):  # ids in the index were checked when it was written
                try:
                    st = entry.stat()
                except OSError:
                    continue  # removed meanwhile
                found[sid] = f"{st.st_size}.{st.st_mtime_ns}.{st.st_ino}"
    return found


def list_sessions(home: Path, run_locks: Optional[Dict[int, str]] = None) -> List[Summary]:
    """Every session with a journal, newest first, from the index; stale entries are replayed and the index rewritten.

    ``run_locks``, if given, is filled with the run-lock files seen on the way (for :func:`waiter_probe`).
    """
    root = Path(home) / JOURNAL_DIR
    index, whole = _load_index(root)
    current = _scan(root, index, run_locks)
    rows: List[Summary] = []
    stale: List[Tuple[str, Key]] = []
    dropped = False
    for sid, row in index.items():  # the index's order is already newest first
        key = current.pop(sid, None)
        if key is None:
            dropped = True  # its journal is gone
        elif key == row.key:
            rows.append(row)
        else:
            stale.append((sid, key))
    stale.extend(current.items())  # journals the index has not seen
    for sid, key in stale:
        # A session the store appended to since has a current timeline snapshot (the store's
        # projection wrote it): its summary comes from there, without replaying.
        summary = _summary_from_timeline(root, sid, key)
        if summary is None:
            try:
                data, steady_key = read_keyed(root / f"{sid}.jsonl")
            except FileNotFoundError:
                continue
            summary = Summary.of(_replay_bytes(sid, data), steady_key)
        rows.append(summary)
    if stale or dropped or not whole:
        rows.sort(key=newest_first, reverse=True)
        body = "".join(row.line() + "\n" for row in rows if row.key is not None)
        _atomic_write(root / SNAPSHOT_DIR / INDEX_NAME, _index_header() + "\n" + body)
    return rows


# -- one timeline per session, for `history` ------------------------------------------------


def _timeline_path(root: Path, session_id: str) -> Path:
    return root / SNAPSHOT_DIR / f"{session_id}.json"


def _summary_from_timeline(root: Path, session_id: str, key: Key) -> Optional[Summary]:
    """The session's Summary from its timeline snapshot if that was built from the journal as it is (``key``)."""
    try:
        snap = json.loads(_timeline_path(root, session_id).read_bytes())
        if snap["stamp"] == code_stamp() and snap["key"] == key:
            return Summary.of_timeline(session_id, key, snap)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn, foreign or older: replay instead
    return None


def cached_timeline(home: Path, session_id: str) -> Optional[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """(session view, event views) from a snapshot that matches the journal as it is now; None otherwise."""
    root = Path(home) / JOURNAL_DIR
    try:
        key = _key(os.stat(root / f"{session_id}.jsonl"))
        snap = json.loads(_timeline_path(root, session_id).read_bytes())
        if snap["stamp"] == code_stamp() and snap["key"] == key:
            view, events = snap["view"], snap["events"]
            if isinstance(view, dict) and isinstance(events, list):
                return view, events
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn or foreign: replay instead
    return None


def timeline(home: Path, session_id: str) -> Optional[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """(session view, event views) of the session: the snapshot if current, else a replay that refreshes it.

    None when the session has no journal.
    """
    cached = cached_timeline(home, session_id)
    if cached is not None:
        return cached
    return rebuild_timeline(home, session_id)


def rebuild_timeline(home: Path, session_id: str) -> Optional[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """Replay the session's journal and rewrite its timeline snapshot (if the read was steady); as :func:`timeline`."""
    from libtv_fsm.timeline import event_view, session_view

    root = Path(home) / JOURNAL_DIR
    try:
        data, key = read_keyed(root / f"{session_id}.jsonl")
    except FileNotFoundError:
        return None
    session = _replay_bytes(session_id, data)
    view, events = session_view(session), [event_view(entry) for entry in session.events]
    if key is not None:
        # The notice kinds a listing needs (recovery.needs_waiter), so a listing can use it too.
        notices = [n for n in session.notices if n in _NOTICE_KINDS]
        snap = {"stamp": code_stamp(), "key": key, "view": view, "events": events, "notices": notices}
        _atomic_write(_timeline_path(root, session_id), _dump(snap))
    return view, events


# -- the few facts a local command needs besides the journal ------------------------------


def legacy_import_pending(home: Path) -> bool:
    """Whether legacy.import_legacy would import something (its own first test, without its imports)."""
    marker = Path(home) / JOURNAL_DIR / IMPORT_MARKER
    return not marker.exists() and (Path(home) / READ_MODEL).is_file()


def is_local(home: Path) -> bool:
    """True when no API key is configured and no legacy file waits for import: no upstream, no import to run.

    Conservative: anything unusual about the config says False, and the full path decides.
    """
    try:
        raw = (Path(home) / "libtv.json").read_bytes()
    except FileNotFoundError:
        raw = b""
    except OSError:
        return False
    if raw:
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except ValueError:
            return False
        if not isinstance(data, dict) or data.get("apiKey") is not None:
            return False
    return not legacy_import_pending(home) and not _open_intents(Path(home) / JOURNAL_DIR / INTENT_DIR)


def _open_intents(folder: Path) -> bool:
    """Whether a create-session left a submit record that `recover` may still have to finish (intents.py)."""
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".json")]
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for name in names:
        try:
            record = json.loads((folder / name).read_bytes())
        except (OSError, ValueError):
            return True
        if not isinstance(record, dict) or not record.get("outcome"):
            return True  # open (or unreadable): the full recover decides
    return False


def waiter_probe(home: Path, run_locks: Optional[Mapping[int, str]] = None) -> Optional[Callable[[str], bool]]:
    """A check "does a waiter hold this session's run lock?" (runlocks.py), or None where flock is not available."""
    from libtv_fsm.runlocks import waiter_check

    return waiter_check(os.path.join(home, JOURNAL_DIR), run_locks)


def report_json(rows: Iterable[Tuple[Summary, str]]) -> str:
    """`recover --json` from summaries and waiter states, without parsing a single view."""
    tails = {"none": ',"waiter":"none"}', "running": ',"waiter":"running"}'}
    return '{"sessions":[' + ",".join(row.view_json[:-1] + (tails.get(w) or f',"waiter":{_dump(w)}}}') for row, w in rows) + "]}"
