"""``python -m anomclust_lite``: the command-line tool (see :mod:`anomclust_lite.cli`)."""

from __future__ import annotations

from .cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
