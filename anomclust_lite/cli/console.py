"""What the command-line tool shows: progress and warnings on stderr (silent with -q), results on stdout.

Only the CLI prints; the library logs. :class:`ConsoleLogHandler` turns the
package's logged warnings into CLI warnings while a command runs, and
:func:`one_line` turns an exception into the one line of ``PROG: error: ...``.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from ..features.images import display_path
from ..files.safe_text import terminal_text
from .outputs import PROG
from .progress import Bar, StageProgress

__all__ = ["Console", "ConsoleLogHandler", "one_line"]


class Console:
    """Progress and warnings on stderr (silent with -q); results on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:  # one write per line: decoding threads may log at the same time
            print(terminal_text(message) + "\n", end="", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.info(f"{PROG}: warning: {message}")

    def result(self, message: str) -> None:
        print(terminal_text(message), flush=True)

    def stages(self) -> StageProgress:
        """The fit's ``progress(stage, done, total)``: a line per stage, a bar while a kernel runs."""
        return StageProgress(sys.stderr, sys.stderr.isatty(), self.quiet)

    def counter(self, label: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback: a bar with rate and ETA on a terminal, else a line every few percent."""
        if self.quiet:
            return lambda done, total: None
        return Bar(label, "images", sys.stderr, sys.stderr.isatty()).update


class ConsoleLogHandler(logging.Handler):
    """Shows the package's logged warnings (e.g. a damaged feature-cache entry) as CLI warnings.

    The extractor's warnings are left out: the CLI reports skipped images itself.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.shown: set = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "anomclust_lite.features.extractor":
            return
        message = " ".join(record.getMessage().split())
        if message not in self.shown:
            self.shown.add(message)
            self.console.warn(message)


def one_line(exc: BaseException) -> str:
    """The error message on one line; an ``OSError`` as ``path: reason``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None and text.startswith("["):
        text = f"{display_path(exc.filename)}: {exc.strerror}"
    return text or type(exc).__name__
