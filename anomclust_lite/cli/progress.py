"""Progress you can plan around: a bar with rate and ETA on a terminal, a line every few percent otherwise.

The library reports ``progress(done, total)`` (extraction: images) and
``progress(stage, done, total)`` (fitting: image pairs of the patch kernel,
see :mod:`anomclust_lite.estimator.fitting`); only the CLI renders them, here:

- on a terminal, one line redrawn in place (at most every
  :data:`REDRAW_SECONDS`)::

      scoring [#########...........]  45%  1,234/2,741 image pairs  31.2/s  ETA 0:48

- otherwise (a log file, a pipe), a plain line at every :data:`LOG_PERCENT`
  percent (at most one per :data:`LOG_MIN_SECONDS`), and at least every
  :data:`LOG_SECONDS` seconds while a stage is slow;
- every stage ends with one line saying what it did and how long it took.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, TextIO

from ..files.safe_text import terminal_text

__all__ = ["REDRAW_SECONDS", "LOG_PERCENT", "LOG_SECONDS", "LOG_MIN_SECONDS", "IMAGE_STAGES", "Bar", "StageProgress", "duration"]

#: Seconds between redraws of a terminal bar.
REDRAW_SECONDS = 0.1
#: A non-terminal stream gets a line each time progress crosses a multiple of this percentage.
LOG_PERCENT = 5
#: ... and at least one line this often (seconds) while a stage runs.
LOG_SECONDS = 30.0
#: ... but not more often than this (seconds): a short stage is a line or two, not twenty.
LOG_MIN_SECONDS = 1.0
_WIDTH = 20


def duration(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (``h:mm:ss`` from an hour), or ``1.2 s`` below a minute.

    Examples
    --------
    >>> duration(4.26), duration(75), duration(3725)
    ('4.3 s', '1:15', '1:02:05')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _rate_text(rate: float) -> str:
    """Items per second with two to three significant digits."""
    return f"{rate:.2g}/s" if rate < 1 else f"{rate:,.1f}/s" if rate < 100 else f"{rate:,.0f}/s"


class Bar:
    """One stage's progress (``update(done, total)``), written to ``stream``.

    Parameters
    ----------
    label : str
        The stage, first on every line.
    unit : str
        What is counted ("images", "image pairs").
    stream : file
        Where lines go (stderr).
    tty : bool
        Redraw one line in place (a terminal) or print plain lines.
    clock : callable
        Seconds (monotonic); tests pass a fake one.
    """

    def __init__(self, label: str, unit: str, stream: TextIO, tty: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.unit, self.stream, self.tty, self.clock = label, unit, stream, tty, clock
        self.started = clock()
        self.first: Optional[int] = None
        self.last_draw = -1e9
        self.last_percent = -1
        self.finished = False

    def _rate(self, done: int, now: float) -> Optional[float]:
        """Items per second since the first report (None before any progress)."""
        elapsed = now - self.started
        counted = done - (self.first or 0)
        return counted / elapsed if elapsed > 0 and counted > 0 else None

    def _line(self, done: int, total: int, now: float) -> str:
        rate = self._rate(done, now)
        percent = 100 * done // total if total else 100
        parts = [f"{self.label}", f"{percent:3d}%", f"{done:,}/{total:,} {self.unit}"]
        if self.tty:
            filled = _WIDTH * done // total if total else _WIDTH
            parts.insert(1, "[" + "#" * filled + "." * (_WIDTH - filled) + "]")
        if rate is not None:
            parts.append(_rate_text(rate))
            if done < total:
                parts.append(f"ETA {duration((total - done) / rate)}")
        return "  ".join(parts)

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (the first call sets the start; the last ends the stage)."""
        if self.finished or total <= 0:
            return
        now = self.clock()
        if self.first is None:
            self.first, self.started = done, now
        if done >= total:
            self.finish(total)
            return
        percent = 100 * done // total
        if self.tty and now - self.last_draw >= REDRAW_SECONDS:
            self.stream.write("\r" + terminal_text(self._line(done, total, now)) + "\x1b[K")
            self.stream.flush()
            self.last_draw = now
        elif not self.tty and now - self.last_draw >= LOG_MIN_SECONDS and (
                percent // LOG_PERCENT > self.last_percent // LOG_PERCENT or now - self.last_draw >= LOG_SECONDS):
            self._print(self._line(done, total, now))
            self.last_draw, self.last_percent = now, percent

    def finish(self, total: int, note: str = "") -> None:
        """End the stage with one line: the count, the time and the rate."""
        if self.finished:
            return
        self.finished = True
        elapsed = self.clock() - self.started
        rate = f", {_rate_text(total / elapsed)}" if elapsed > 0 and total else ""
        text = f"{self.label}: {total:,} {self.unit}{note} in {duration(elapsed)}{rate}"
        if self.tty:
            self.stream.write("\r" + terminal_text(text) + "\x1b[K\n")
            self.stream.flush()
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        self.stream.write(terminal_text(text) + "\n")
        self.stream.flush()


#: Fitting stages that count images rather than image pairs (:mod:`anomclust_lite.estimator.scale`).
IMAGE_STAGES = ("assigning",)


class StageProgress:
    """Renders the fitting's ``progress(stage, done, total)``: a :class:`Bar` per kernel stage, a line per other stage.

    ``(stage, 0, 0)`` starts a stage without a count (one line ``stage...``);
    a stage named ``"... (from the cache)"`` is one line as it is.
    """

    def __init__(self, stream: TextIO, tty: bool, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.tty, self.quiet, self.clock = stream, tty, quiet, clock
        self.bar: Optional[Bar] = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if total > 0:
            if self.bar is None or self.bar.label != stage or self.bar.finished:
                self.bar = Bar(stage, "images" if stage in IMAGE_STAGES else "image pairs", self.stream, self.tty,
                               self.clock)
            self.bar.update(done, total)
            return
        self.bar = None
        text = stage if stage.endswith("(from the cache)") else f"{stage}..."
        self.stream.write(terminal_text(text) + "\n")
        self.stream.flush()
