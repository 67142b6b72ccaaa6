"""Progress of long work, with elapsed time and an ETA: a bar on a terminal, lines in a log.

A :class:`Progress` draws a one-line bar on standard error when that is a terminal (redrawn at
most ten times a second, cut to the terminal's width so that it never wraps), prints a plain
line every ``log_interval`` steps when asked to (for output that goes to a file or a pipe), and
otherwise says nothing. The optional ``value`` of :meth:`Progress.update` is a callable, read
only when a bar is redrawn or a line printed: on a GPU it is one device scalar per redraw.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import IO


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Progress of ``total`` steps of work called ``label``.

    Parameters
    ----------
    total : int
        Steps in all (batches, images).
    label : str
        What is being done, e.g. ``"epoch 3"``.
    bar : bool, optional
        Draw the bar; default: when ``stream`` is a terminal.
    log_interval : int
        Without a bar, print a plain line every this many steps (0: none).
    value_name : str
        What ``value`` is, e.g. ``"loss"``.
    stream : file, optional
        Default standard error.
    """

    def __init__(
        self,
        total: int,
        label: str,
        bar: bool | None = None,
        log_interval: int = 0,
        value_name: str = "loss",
        stream: IO[str] | None = None,
    ) -> None:
        self.total, self.label, self.value_name = max(1, total), label, value_name
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.bar = isatty() if bar is None else bar
        self.log_interval = log_interval
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_logged = 0
        self._drawn = 0  # width of the bar on the screen

    def line(self, done: int, value: float | None) -> str:
        """The text of one redraw or log line."""
        elapsed = time.perf_counter() - self.start
        text = f"{self.label} {done}/{self.total}"
        if value is not None:
            text += f"  {self.value_name} {value:.2f}"
        text += f"  {format_seconds(elapsed)}"
        if 0 < done < self.total:
            text += f", ETA {format_seconds(elapsed * (self.total - done) / done)}"
        return text

    def update(self, done: int, value: Callable[[], float] | None = None) -> None:
        """``done`` of the steps are done; ``value`` is read only if something is shown."""
        now = time.perf_counter()
        if self.bar:
            if now - self._last_draw < 0.1 and done < self.total:
                return
            self._last_draw = now
            self._draw(done, None if value is None else value())
        elif self.log_interval and (
            done - self._last_logged >= self.log_interval
            or done >= self.total > self._last_logged  # and one line when the work is done
        ):
            self._last_logged = done
            print(self.line(done, None if value is None else value()), file=self.stream, flush=True)

    def _draw(self, done: int, value: float | None) -> None:
        columns = shutil.get_terminal_size((80, 24)).columns - 1  # never the last column
        text = self.line(done, value)
        room = columns - len(text) - 3
        if room >= 10:
            width = min(30, room)
            filled = width * done // self.total
            text = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
        text = text[:columns]
        self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
        self.stream.flush()
        self._drawn = len(text)

    def close(self) -> None:
        """Clear the bar (a log needs no closing)."""
        if self.bar and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0
