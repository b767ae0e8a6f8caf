"""Issue 14: names from the file system are made safe for a CSV cell and for the terminal."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from _cli_support import fixture_folder, fixture_model_path  # noqa: F401 (fixtures)
from _cli_support import fixture_base_folder  # noqa: F401 (needed by folder)
from _cli_support import model_args, read_csv, run

from anomclust_lite.files.safe_text import FORMULA_PREFIXES, csv_cell, csv_text, terminal_text


@given(st.text())
def test_csv_cell_never_starts_a_formula(text: str) -> None:
    cell = csv_cell(text)
    if cell != text:
        assert cell == "'" + text
    elif text.startswith(FORMULA_PREFIXES):
        float(text)  # only a plain number keeps its sign


@given(st.text())
def test_csv_text_reads_back_what_csv_cell_wrote(text: str) -> None:
    assert csv_text(csv_cell(text)) == text


def test_csv_cell_examples() -> None:
    assert csv_cell("=1+1") == "'=1+1"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("+cmd|' /C calc'!A0") == "'+cmd|' /C calc'!A0"
    assert csv_cell("\tx") == "'\tx" and csv_cell("\rx") == "'\rx"
    assert csv_cell("-2.5e-3") == "-2.5e-3" and csv_cell("-x.png") == "'-x.png"
    assert csv_cell("good/000.png") == "good/000.png" and csv_cell(7) == 7


@given(st.text())
def test_terminal_text_has_no_control_characters(text: str) -> None:
    shown = terminal_text(text)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u202e\u2066\u200f" for c in shown)
    if all(0x20 <= ord(c) < 0x7F for c in text):
        assert shown == text


def test_hostile_names_in_csv_and_terminal(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    good = sorted((folder / "good").iterdir())
    formula = folder / "good" / "=HYPERLINK(1).png"
    escape = folder / "good" / "\x1b]0;pwned\x07\x1b[2J.png"
    shutil.move(good[0], formula)
    shutil.move(good[1], escape)
    broken = folder / "good" / "\x1b[31mbroken.png"
    broken.write_bytes(b"not an image")
    labelled = folder / "-label"
    os.rename(folder / "red_spot", labelled)
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out)
    assert rc == 0, err
    assert "\x1b" not in stdout + err and "\x07" not in stdout + err
    assert "\\x1b[31mbroken.png" in err  # the skipped file is still named, escaped
    rows = read_csv(out / "clusters.csv")
    paths = {r["path"] for r in rows}
    assert "'good/=HYPERLINK(1).png" not in paths  # the path does not start with '=': left as it is
    assert "good/=HYPERLINK(1).png" in paths
    assert "'-label/000.png" in paths  # the path starts with '-': neutralised
    assert {r["label"] for r in rows} >= {"'-label"}
    assert all(not r["path"].startswith(FORMULA_PREFIXES) for r in rows)
    assert all(not r["label"].startswith(FORMULA_PREFIXES) for r in rows)
    # `name` reads clusters.csv back and rewrites it: each cell keeps exactly one mark
    rc, _, err = run(capsys, "name", out, "0=@first")
    assert rc == 0, err
    again = read_csv(out / "clusters.csv")
    assert [r["path"] for r in again] == [r["path"] for r in rows]
    assert [r["label"] for r in again] == [r["label"] for r in rows]
    assert {r["name"] for r in again if r["cluster"] == "0"} == {"'@first"}
