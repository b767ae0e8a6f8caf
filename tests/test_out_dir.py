"""Issue 14, output side: the tool never destroys or overwrites what it did not make.

Each test builds its own hostile setup in ``tmp_path``: input folders nested
with the output folder, existing foreign files, a lock held by another
process, devices, FIFOs and links as write targets.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from _cli_support import fixture_folder, fixture_model_path  # noqa: F401 (fixtures)
from _cli_support import fixture_base_folder  # noqa: F401 (needed by folder)
from _cli_support import assert_one_error_line, model_args, run

from anomclust_lite.cli.out_dir import EXPORT_MARKER, LOCK_NAME, OUT_MARKER, check_output, claim_output, release_locks
from anomclust_lite.files.atomic import NotRegularFileError, atomic_open, atomic_write_bytes, atomic_write_text


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (links not followed): relative path -> content, link target or kind."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_file():
                found[rel] = ("file", path.read_bytes())
            else:
                found[rel] = ("dir", None)
    return found


# ---------------------------------------------------------------- nesting with the inputs


def test_input_folder_inside_out_is_refused_and_kept(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--export", "copy", "--out", out, "-q")
    assert rc == 0, err
    before = snapshot(out)
    # the case: clustering an exported cluster folder into the same --out deleted it with rmtree
    rc, _, err = run(capsys, out / "cluster_0", *model_args(model_path), "--k", "2", "--export", "copy", "--out", out)
    assert rc == 1
    assert_one_error_line(err, "cluster_0", "inside the output folder")
    assert snapshot(out) == before


@pytest.mark.parametrize("where", ["inside", "same", "holds"])
def test_out_nested_with_normal_is_refused(capsys, folder: Path, model_path: Path, tmp_path: Path, where: str) -> None:
    normal = tmp_path / "station" / "normal"
    normal.mkdir(parents=True)
    for i, src in enumerate(sorted((folder / "good").iterdir())):
        (normal / f"{i}.png").write_bytes(src.read_bytes())
    out = {"inside": normal / "res", "same": normal, "holds": normal.parent}[where]
    before = snapshot(tmp_path)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--normal", normal, "--out", out)
    assert rc == 1
    assert_one_error_line(err, "normal folder")
    assert snapshot(tmp_path) == before


def test_out_equal_to_the_image_folder_is_refused(capsys, folder: Path, model_path: Path) -> None:
    before = snapshot(folder)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", folder)
    assert rc == 1
    assert_one_error_line(err, "image folder")
    assert snapshot(folder) == before


# ---------------------------------------------------------------- foreign folders and files


def test_foreign_out_folder_is_refused_before_any_work(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "clusters.csv").write_text("my own table\n")
    (out / "report.html").write_text("<p>mine</p>\n")
    before = snapshot(out)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out)
    assert rc == 1
    assert_one_error_line(err, "not made by anomclust-lite", "clusters.csv")
    assert snapshot(out) == before  # nothing written: no marker, no lock, no feature cache


def test_default_out_beside_the_folder_is_refused_when_foreign(capsys, folder: Path, model_path: Path) -> None:
    default = folder.parent / f"{folder.name}_clusters"
    default.mkdir()
    (default / "notes.txt").write_text("keep me\n")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3")
    assert rc == 1
    assert_one_error_line(err, "not made by anomclust-lite")
    assert (default / "notes.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in default.iterdir()) == ["notes.txt"]


def test_an_existing_file_as_out_is_refused(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.write_text("a file\n")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", target)
    assert rc == 1
    assert_one_error_line(err, "not a folder")
    assert target.read_text() == "a file\n"


def test_empty_and_marked_folders_are_accepted(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")
    assert rc == 0, err
    assert (out / OUT_MARKER).is_file() and (out / "clusters.csv").is_file()
    (out / "my_notes.txt").write_text("kept\n")  # a user's file in our folder: not ours to touch
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", out, "-q")
    assert rc == 0, err
    assert (out / "my_notes.txt").read_text() == "kept\n"


def test_foreign_cluster_folder_is_refused_before_any_output(capsys, folder: Path, model_path: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--export", "copy", "--out", out, "-q")[0] == 0
    (out / "cluster_9").mkdir()
    (out / "cluster_9" / "precious.png").write_bytes(b"not ours")
    before = snapshot(out)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--export", "copy", "--out", out)
    assert rc == 1
    assert_one_error_line(err, "cluster_9", "not made by anomclust-lite")
    assert snapshot(out) == before  # clusters.csv, summary.json, ... not replaced either


def test_foreign_file_inside_our_export_folder_is_never_deleted(capsys, folder: Path, model_path: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--export", "symlink", "--out", out, "-q")[0] == 0
    (out / "cluster_1" / "added_by_hand.txt").write_text("mine\n")
    before = snapshot(out)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--export", "symlink", "--out", out)
    assert rc == 1
    assert_one_error_line(err, "cluster_1", "added_by_hand.txt")
    assert snapshot(out) == before
    # moved away, the rerun replaces exactly our earlier export
    (out / "cluster_1" / "added_by_hand.txt").unlink()
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--export", "symlink", "--out", out, "-q")
    assert rc == 0, err
    assert sorted(p.name for p in out.glob("cluster_*")) == ["cluster_0", "cluster_1"]


def test_export_marker_lists_every_exported_name(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    import json

    out = tmp_path / "out"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--export", "copy", "--out", out, "-q")[0] == 0
    for cluster in out.glob("cluster_*"):
        listed = json.loads((cluster / EXPORT_MARKER).read_text())["files"]
        assert sorted(listed) == sorted(p.name for p in cluster.iterdir() if p.name != EXPORT_MARKER)


# ---------------------------------------------------------------- one run at a time, leftovers


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(120)
"""


def test_second_run_on_a_locked_out_is_refused(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")[0] == 0
    before = snapshot(out)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", out)
        assert rc == 1
        assert_one_error_line(err, "another anomclust-lite run", "choose another --out")
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", out, "-q")
    assert rc == 0, err


def test_lock_is_per_folder_and_released(tmp_path: Path) -> None:
    a = claim_output(check_output(tmp_path / "a", []))
    assert claim_output(check_output(a, [])) == a  # the same process may claim again
    fd = os.open(a / LOCK_NAME, os.O_RDWR)
    try:
        import fcntl

        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        release_locks()
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once released
    finally:
        os.close(fd)


def test_leftovers_of_interrupted_runs_are_removed(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--export", "copy", "--out", out, "-q")[0] == 0
    ours = [out / ".clusters.csv.k2j3h.tmp", out / ".probe-abc.tmp", out / "cluster_0" / ".good__000.png.tmp"]
    for path in ours:
        path.write_bytes(b"half")
    theirs = [out / "keep.tmp", out / ".keepdir.tmp"]
    theirs[0].write_bytes(b"a user's file")
    theirs[1].mkdir()
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")
    assert rc == 0, err
    assert not any(p.exists() for p in ours)
    assert theirs[0].read_bytes() == b"a user's file" and theirs[1].is_dir()


def test_leftovers_do_not_make_a_foreign_folder_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".x.tmp").write_bytes(b"whose?")
    with pytest.raises(ValueError, match="not made by"):
        check_output(out, [])
    assert (out / ".x.tmp").read_bytes() == b"whose?"


# ---------------------------------------------------------------- only regular files are written


def test_atomic_writer_refuses_a_device(tmp_path: Path) -> None:
    before = os.stat("/dev/null")
    with pytest.raises(NotRegularFileError, match="not a regular file"):
        atomic_write_bytes("/dev/null", b"x")
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino and after.st_rdev == before.st_rdev


@pytest.mark.parametrize("kind", ["fifo", "dir", "link", "dangling-link"])
def test_atomic_writer_refuses_non_regular_targets(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched\n")
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "dir":
        target.mkdir()
    elif kind == "link":
        target.symlink_to(victim)
    else:
        target.symlink_to(tmp_path / "nowhere")
    before = snapshot(tmp_path)
    with pytest.raises(NotRegularFileError):
        atomic_write_text(target, "new\n")
    assert snapshot(tmp_path) == before  # no temporary file left either


def test_target_turning_non_regular_while_writing_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "t"
    with pytest.raises(NotRegularFileError):
        with atomic_open(target, "w") as fh:
            fh.write("x")
            os.mkfifo(target)
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_regular_targets_are_still_replaced(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("old\n")
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"


def test_cli_output_that_is_a_link_is_not_followed(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")[0] == 0
    victim = tmp_path / "victim.csv"
    victim.write_text("someone else's\n")
    (out / "clusters.csv").unlink()
    (out / "clusters.csv").symlink_to(victim)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", out)
    assert rc == 1
    assert_one_error_line(err, "clusters.csv", "not a regular file")
    assert victim.read_text() == "someone else's\n" and (out / "clusters.csv").is_symlink()
