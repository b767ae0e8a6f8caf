"""The command-line tool's entry point: ``main(argv) -> int``, dispatching through :data:`SUBCOMMANDS`.

``anomclust-lite FOLDER`` clusters (:mod:`.cluster`); ``assign``, ``name`` and
``backbones`` are subcommands (:mod:`.assign`, :mod:`.naming`,
:mod:`.backbones`). Exit status: 0 success, 1 user error (one line
``anomclust-lite: error: ...`` on stderr, no traceback), 2 usage error
(argparse), 130 interrupted (see :mod:`.running`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Dict, Optional, Sequence, Tuple

from .assign import assign_command
from .backbones import backbones_command, build_backbones_parser
from .cache import build_cache_parser, cache_command
from .cluster import cluster_command
from .naming import build_name_parser, name_command
from .parser import build_assign_parser, build_parser

__all__ = ["SUBCOMMANDS", "CLUSTER", "main"]

#: A command: its parser builder and its runner (parsed options -> exit status).
Command = Tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]

#: Subcommands: first argument -> command. Any other first argument is the FOLDER of :data:`CLUSTER`
#: (a folder literally named like a subcommand is given as ./NAME).
SUBCOMMANDS: Dict[str, Command] = {
    "assign": (build_assign_parser, assign_command),
    "name": (build_name_parser, name_command),
    "backbones": (build_backbones_parser, backbones_command),
    "cache": (build_cache_parser, cache_command),
}
#: The cluster command, ``anomclust-lite FOLDER``.
CLUSTER: Command = (build_parser, cluster_command)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line in-process (argv -> exit status); the installed ``anomclust-lite`` and
    ``python -m anomclust_lite`` run it through :func:`.entry.run` (closed standard streams, Ctrl-C at any moment).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in SUBCOMMANDS:
        (build, command), args_list = SUBCOMMANDS[args_list[0]], args_list[1:]
    else:
        build, command = CLUSTER
    try:
        args = build().parse_args(args_list)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    return command(args)
