"""Strings from the file system made safe for where they are written: a CSV cell, a terminal line.

File and folder names are chosen by whoever filled the folder, so they are
hostile text:

- :func:`csv_cell`: a spreadsheet runs a cell that starts with ``=``, ``+``,
  ``-``, ``@``, TAB or CR as a formula (``=HYPERLINK(...)``, DDE); such a
  text cell gets a leading ``'`` (the usual neutralisation, shown by
  spreadsheets as text). A plain number (``-0.5``) is left as it is. Text
  that itself starts with ``'`` gets one too, so :func:`csv_text` (reading a
  cell back) undoes it exactly.
- :func:`display_path`: a path as text that never raises on encoding (bytes
  that are not UTF-8 become ``\\xNN`` escapes).
- :func:`terminal_text`: control characters (C0, DEL, C1) would
  move the cursor, rewrite earlier lines or set the window title; each is
  shown as a ``\\xNN`` / ``\\uNNNN`` escape instead, and so are the Unicode
  bidirectional controls that reorder what is shown.
"""

from __future__ import annotations

import os
import re
from typing import Union

__all__ = ["FORMULA_PREFIXES", "csv_cell", "csv_text", "display_path", "terminal_text"]

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z", re.ASCII)  # ASCII digits, as the page
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def csv_cell(value: object) -> object:
    """``value`` unchanged, unless it is text a spreadsheet would run as a formula: then ``'`` + text.

    >>> csv_cell("=HYPERLINK(\\"http://x\\")")
    '\\'=HYPERLINK("http://x")'
    >>> csv_cell("-0.5"), csv_cell("good/000.png"), csv_cell(3), csv_cell("'quoted")
    ('-0.5', 'good/000.png', 3, "''quoted")
    """
    if isinstance(value, str) and (value.startswith(FORMULA_PREFIXES + ("'",)) and not _NUMBER.match(value)):
        return "'" + value
    return value


def csv_text(cell: str) -> str:
    """The text :func:`csv_cell` was given, from the cell it wrote (one leading ``'`` removed).

    >>> csv_text("'=1+1"), csv_text("''quoted"), csv_text("good/000.png")
    ('=1+1', "'quoted", 'good/000.png')
    """
    return cell[1:] if cell.startswith("'") else cell


def terminal_text(text: str) -> str:
    """``text`` with every control character shown as an escape (one printed line stays one line).

    >>> terminal_text("a\\x1b[2Jb\\nc")
    'a\\\\x1b[2Jb\\\\x0ac'
    """
    return _CONTROL.sub(_escape, text)


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def display_path(path: "Union[str, os.PathLike[str], bytes]") -> str:
    """Return a printable form of ``path`` that never raises on encoding.

    Bytes that are not valid UTF-8 are shown as ``\\xNN`` escapes.

    Examples
    --------
    >>> import os
    >>> display_path(os.fsdecode(b"img_\\xff.png"))
    'img_\\\\xff.png'
    """
    raw = path if isinstance(path, bytes) else os.fsencode(os.fspath(path))
    return raw.decode("utf-8", "backslashreplace")
