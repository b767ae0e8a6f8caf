"""The program's entry point (``anomclust-lite``, ``python -m anomclust_lite``): standard streams and Ctrl-C.

:func:`run` is what the installed command calls; it sets up the process
before anything heavy is imported, then calls :func:`anomclust_lite.cli.main.main`
(the in-process API, which changes neither):

- **Closed standard streams** (``>&-``, ``2>&-``, ``<&-``): descriptors 0, 1
  and 2 are opened on ``/dev/null`` when closed, so no file the run opens
  takes one of them (a library writing to "stderr" would write into it), and
  Python's ``sys.stdout`` / ``sys.stderr`` (``None`` then) write there too:
  no traceback, and the exit status is what it would have been.
- **Ctrl-C at any moment** (importing, parsing the options, extracting,
  writing): exit status 130 with one line ``anomclust-lite: interrupted``,
  never a traceback; a second Ctrl-C while leaving is ignored.
- **A stdout that fails at exit** (a closed pipe): the last flush is done
  here, quietly, so Python's shutdown prints nothing.

Only this module's own imports (the standard library's ``os``, ``signal``,
``sys``) run before the Ctrl-C handling is in place.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional, Sequence

__all__ = ["run"]

_PROG = "anomclust-lite"
_STREAMS = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def _open_closed_streams() -> None:
    """Descriptors 0-2 that are closed are opened on /dev/null; missing sys.std* objects point there."""
    for fd, name, mode in _STREAMS:
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False, encoding="utf-8", errors="backslashreplace"))


def _say(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _interrupted() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # leaving now: a second Ctrl-C changes nothing
    _say(f"{_PROG}: interrupted")
    return 130


def _flush_stdout() -> None:
    """Flush stdout now; if that fails (a closed pipe, a full device), point it at /dev/null quietly."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line as a process: returns the exit status (0, 1, 2, 130; 141 on a closed stdout pipe).

    Changes the process (standard streams, SIGINT once leaving): call
    :func:`anomclust_lite.cli.main.main` from Python code instead.
    """
    try:
        _open_closed_streams()
        from .main import main

        code = main(argv)
    except KeyboardInterrupt:
        code = _interrupted()
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the work is done: Ctrl-C during shutdown changes nothing
        _flush_stdout()
    except KeyboardInterrupt:
        code = _interrupted()
    return code
