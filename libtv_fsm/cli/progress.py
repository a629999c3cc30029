"""Transfer progress on stderr, drawn only when stderr is a terminal: a script or an agent reading the output sees nothing."""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional, TextIO

MB = 1024 * 1024


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """One progress line, redrawn in place at most every ``interval`` seconds; thread-safe (downloads run in parallel)."""

    def __init__(self, label: str, total: Optional[int] = None, files: int = 0, stream: Optional[TextIO] = None,
                 interval: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.files = files
        self.done_bytes = 0
        self.done_files = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream)
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")
        self._lock = threading.Lock()

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more were transferred."""
        with self._lock:
            self.done_bytes += nbytes
            self._draw()

    def sent(self, done: int, total: int) -> None:
        """``done`` of ``total`` bytes are through (an upload reports absolute counts)."""
        with self._lock:
            self.done_bytes, self.total = done, total or self.total
            self._draw()

    def file_done(self) -> None:
        with self._lock:
            self.done_files += 1
            self._draw(force=True)

    def finish(self) -> None:
        """Draw the last state and end the line."""
        with self._lock:
            if self.enabled and self._last != float("-inf"):
                self._draw(force=True)
                self.stream.write("\n")
                self.stream.flush()

    def line(self) -> str:
        text = f"{self.label}: {self.done_bytes / MB:.1f}"
        if self.total:
            text += f" / {self.total / MB:.1f} MB ({min(100, 100 * self.done_bytes // max(1, self.total))}%)"
        else:
            text += " MB"
        if self.files:
            text += f", {self.done_files}/{self.files} file(s)"
        return text

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        # \r + clear-to-end: the line shrinks cleanly when a number gets shorter.
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
