"""The folders a command reads and writes: checked, resolved and probed before any long work.

An output or cache folder is probed with a real write (and fsync), so a
read-only, unwritable or full folder fails with one line before any feature
is extracted; a disk that fills up later still fails at the write that hits
it. What an output folder may hold, and the lock on it, is :mod:`.out_dir`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Optional

from ..features.images import display_path
from .out_dir import check_output
from .output_set import claim_run_folder

__all__ = ["PROBE_BYTES", "check_folder", "prepare_out", "probe_writable"]

#: Bytes written (and fsync'ed) to probe that an output folder can take files.
PROBE_BYTES = 64 * 1024


def check_folder(text: str, what: str) -> Path:
    """The existing folder ``text`` (``what`` names it in messages), resolved."""
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {display_path(path)} does not exist")
    if not path.is_dir():
        raise ValueError(f"{what} {display_path(path)} is not a folder")
    return path.resolve()


def prepare_out(out_arg: Optional[str], folder: Path, suffix: str, *, command: str, normal: Optional[Path] = None,
                export: bool = False) -> Path:
    """Resolve, check (:mod:`.out_dir`: new, empty or ours; not nested with an input; no other ``command``'s
    outputs, :mod:`.output_set`), probe, then mark, lock and recover (an earlier interrupted write).

    Without ``--out`` (``out_arg`` None) the output goes beside ``folder``,
    named ``<folder name><suffix>``.
    """
    if out_arg is not None:
        out = Path(out_arg).expanduser().resolve()
    else:
        if folder.parent == folder:
            raise ValueError(f"cannot put the output beside {display_path(folder)}; pass --out DIR")
        out = folder.parent / f"{folder.name}{suffix}"
    inputs = [("image folder", folder)] + ([("normal folder (--normal)", normal)] if normal is not None else [])
    out = check_output(out, inputs, export=export)
    probe_writable(out, "output folder", "choose another --out")
    return claim_run_folder(out, command)


def probe_writable(folder: Path, what: str, advice: str) -> None:
    """Create ``folder`` and write, fsync and remove a small file in it (``what`` and ``advice`` go in the error)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(PROBE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"cannot write to {what} {display_path(folder)} ({reason}); {advice}") from None
