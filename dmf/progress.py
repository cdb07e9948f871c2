"""Progress of long stages: a live bar on a terminal, one log line per stage otherwise.

Code that runs a long stage reports how far it is with :func:`advance` (``advance("fit",
3, 10, "epochs")``) and ends the stage with its usual INFO log line. Nothing is drawn
unless a :class:`ProgressHandler` writing to a terminal exists: the pipelines and
``fit(verbose=True)`` log through one. On a terminal the bar of the running stage stays on
the last line and every log line is written above it; in a log file (no terminal) only the
log lines appear, one per stage, never both.
"""

from __future__ import annotations

import logging
import time
import weakref

_LIVE: weakref.WeakSet[ProgressHandler] = weakref.WeakSet()


def live() -> bool:
    """Whether a bar would be drawn (a :class:`ProgressHandler` writes to a terminal)."""
    return any(handler.live for handler in _LIVE)


def advance(stage: str, done: int, total: int, unit: str = "tasks") -> None:
    """``stage`` has done ``done`` of ``total`` ``unit``; ``done >= total`` clears its bar."""
    for handler in list(_LIVE):
        handler.draw(stage, done, total, unit)


class ProgressHandler(logging.StreamHandler):
    """A log handler that, when its stream is a terminal, also draws the running stage's bar
    on the last line (cleared before each log record and drawn again after it)."""

    def __init__(self, stream=None, width: int = 30):
        super().__init__(stream)
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self.width = width
        self._bar = ""
        self._started: dict[str, float] = {}
        if self.live:
            _LIVE.add(self)

    def draw(self, stage: str, done: int, total: int, unit: str) -> None:
        if not self.live:
            return
        self.acquire()
        try:
            if total <= 0 or done >= total:
                self._started.pop(stage, None)
                self._write("\r\x1b[K" if self._bar else "")
                self._bar = ""
                return
            now = time.monotonic()
            seconds = now - self._started.setdefault(stage, now)
            filled = int(self.width * done / total)
            self._bar = (f"{stage} [{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {unit} "
                         f"{seconds:.0f} s")
            self._write(f"\r{self._bar}\x1b[K")
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        if self._bar:
            self._write("\r\x1b[K")
        super().emit(record)
        if self._bar:
            self._write(self._bar)

    def close(self) -> None:
        _LIVE.discard(self)
        super().close()

    def _write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.flush()
