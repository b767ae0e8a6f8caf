"""How the cluster and assign commands run: the console, the package's warnings, exit statuses.

:func:`run_command` runs a command (``run(args, console=...)``) with the
package's logged warnings and Python warnings shown as CLI warnings and
Pillow's pixel limit raised to ``--max-pixels``, and turns the outcome into
an exit status: 0 success, 1 user error (one line ``anomclust-lite: error:
...`` on stderr, no traceback), 130 interrupted (features extracted so far
stay in the cache, so a rerun resumes), 141 stdout closed early. Output
folder locks are released at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from typing import Any, Callable, Iterator, Sequence

from ..files.safe_text import terminal_text
from .console import Console, ConsoleLogHandler, one_line
from .out_dir import release_locks
from .outputs import PROG

__all__ = ["run_command"]


def run_command(run: Callable[..., Any], args: argparse.Namespace) -> int:
    """``run(args, console=...)`` for parsed options; returns the exit status (0, 1, 130 or 141)."""
    console = Console(args.quiet)
    package_logger = logging.getLogger("anomclust_lite")
    log_handler = ConsoleLogHandler(console)
    package_logger.addHandler(log_handler)
    try:
        with warnings.catch_warnings(record=True) as caught, pillow_pixel_limit(args.max_pixels):
            warnings.simplefilter("always")
            run(args, console=console)
        show_warnings(caught, console)
        return 0
    except BrokenPipeError:  # stdout closed early (e.g. piped into `head`): stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        note = "" if args.no_cache else "; features extracted so far are cached, a rerun continues from there"
        print(f"{PROG}: interrupted{note}", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # ImageLoadError, ModelNotFoundError are among these
        print(f"{PROG}: error: {terminal_text(one_line(exc))}", file=sys.stderr)
        return 1
    finally:
        release_locks()
        package_logger.removeHandler(log_handler)


def show_warnings(caught: Sequence[warnings.WarningMessage], console: Console) -> None:
    """Every distinct warning raised while the command ran, once (deprecations left out)."""
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    for message in dict.fromkeys(str(w.message) for w in shown):
        console.warn(message)


@contextlib.contextmanager
def pillow_pixel_limit(max_pixels: int) -> Iterator[None]:
    """Raise Pillow's own decompression-bomb limit to ``max_pixels`` while running (restored after)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    if saved is not None and max_pixels > saved:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved
