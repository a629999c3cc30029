"""Files written atomically (readers see the old file or the new one, never half), private from the first byte;
and read whole, knowing whether they changed meanwhile."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union


def fsync_dir(folder: Union[str, Path]) -> None:
    """Make a rename or a new file in ``folder`` durable (POSIX; Windows cannot open a folder, and need not)."""
    try:
        dir_fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_atomic(path: Union[str, Path], data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data``; OSError if it cannot (nothing half-written is left behind).

    The temp file is created with ``mode`` from its first byte (not chmod-ed later), so a secret
    in it is never readable by others, not even for a moment. ``durable`` fsyncs the file and
    its folder (a cache that can be rebuilt may skip that).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)  # the umask can only narrow the mode; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(str(tmp), str(path))
    except BaseException:
        try:
            os.unlink(str(tmp))
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def read_steady(path: Union[str, Path]) -> Tuple[bytes, Optional[os.stat_result]]:
    """The file's bytes, and its stat if nobody changed it while it was read (else None).

    A cache keyed on (size, mtime) may only use that stat: one taken after the read alone can
    describe bytes an appender added after ours were read. OSError (FileNotFoundError) as open.
    """
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        data = fh.read()
        after = os.fstat(fh.fileno())
    same = (before.st_size, before.st_mtime_ns, before.st_ino) == (after.st_size, after.st_mtime_ns, after.st_ino)
    return data, (after if same and len(data) == after.st_size else None)
