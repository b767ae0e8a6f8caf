"""``python -m anomclust_lite``: the command-line tool (see :mod:`anomclust_lite.cli`; run through
:func:`anomclust_lite.cli.entry.run`).

Prefer the installed ``anomclust-lite`` command: ``python -m`` run inside a
folder of images would first import a module of this name from that folder.
"""

from __future__ import annotations

from .cli.entry import run

if __name__ == "__main__":
    raise SystemExit(run())
