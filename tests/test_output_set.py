"""A run's outputs appear together or not at all (issue 14): staging, one commit rename, install, recovery.

Each test builds an output folder with an earlier set (K=2 everywhere), writes
a new set (K=3) and breaks it somewhere: an exception from a writer, a failure
at every rename of the install, a SIGKILL of a subprocess at every rename.
A reader (after :func:`recover`, as the tool's readers do) must see the old
set or the new set, never a mix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from anomclust_lite.cli import out_dir, output_set
from anomclust_lite.cli.output_set import (
    MANIFEST_NAME,
    PENDING_NAME,
    STAGING_PREFIX,
    check_member,
    recover,
    staged_outputs,
)

FILES = ("clusters.csv", "summary.json", "model.npz", "report.html")


def _write_set(stage: Path, k: int, export: bool = True) -> None:
    for name in FILES:
        (stage / name).write_text(f"K={k}\n")
    if export:
        for c in range(k):
            folder = stage / f"cluster_{c}"
            folder.mkdir()
            out_dir.write_export_marker(folder, [f"img{c}.png"])
            (folder / f"img{c}.png").write_text(f"K={k}\n")


def _fresh(tmp_path: Path) -> Path:
    out = out_dir.claim_output(tmp_path / "out")
    with staged_outputs(out, "cluster") as stage:
        _write_set(stage, 2)
    return out


def _seen(out: Path) -> set:
    """Every K value a reader finds in the folder (files and export folders), after recovery."""
    recover(out)
    values = {(out / name).read_text() for name in FILES}
    exports = sorted(p.name for p in out.iterdir() if p.name.startswith("cluster_"))
    values.add(f"K={len(exports)}\n")
    for name in exports:
        values |= {p.read_text() for p in (out / name).iterdir() if p.name.endswith(".png")}
    for name in FILES:
        check_member(out / name)
    assert not [p for p in out.iterdir() if p.name.startswith((STAGING_PREFIX, PENDING_NAME))]
    return values


def test_a_set_is_installed_with_its_manifest(tmp_path):
    out = _fresh(tmp_path)
    assert _seen(out) == {"K=2\n"}
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["command"] == "cluster" and sorted(manifest["files"]) == sorted(FILES)
    assert manifest["exports"] == ["cluster_0", "cluster_1"]


def test_a_writer_that_fails_leaves_the_old_set_and_no_staging(tmp_path):
    out = _fresh(tmp_path)
    with pytest.raises(OSError, match="No space"):
        with staged_outputs(out, "cluster") as stage:
            (stage / "clusters.csv").write_text("K=3\n")
            raise OSError(28, "No space left on device")
    assert _seen(out) == {"K=2\n"}
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(out, "cluster") as stage:
            _write_set(stage, 3)
            raise KeyboardInterrupt
    assert _seen(out) == {"K=2\n"}


#: Renames once the set is written: the manifest's own atomic write (0), the commit rename (1), then the install.
COMMIT = 1


def _counting(stop: int, action):
    """Patch os.rename/os.replace so that call number ``stop`` runs ``action``; returns the call log."""
    calls = []
    real_rename, real_replace = os.rename, os.replace

    def wrap(real):
        def call(*args):
            if len(calls) == stop:
                action()
            calls.append(args)
            return real(*args)
        return call

    os.rename, os.replace = wrap(real_rename), wrap(real_replace)
    return calls, lambda: (setattr(os, "rename", real_rename), setattr(os, "replace", real_replace))


def _install_steps(tmp_path: Path) -> int:
    """How many renames committing and installing the K=3 set takes."""
    out = _fresh(tmp_path / "count")
    try:
        with staged_outputs(out, "cluster") as stage:
            _write_set(stage, 3)
            calls, restore = _counting(-1, lambda: None)
    finally:
        restore()
    return len(calls)


def test_an_install_stopped_at_any_rename_is_finished_by_the_next_reader(tmp_path):
    steps = _install_steps(tmp_path)
    assert steps == 2 + 3 + len(FILES) + 1  # manifest, commit, 3 export folders, the files, the manifest moved
    for stop in range(steps):
        out = _fresh(tmp_path / f"stop{stop}")

        def interrupt():
            raise KeyboardInterrupt

        restore = lambda: None  # noqa: E731
        try:
            with pytest.raises(KeyboardInterrupt):
                with staged_outputs(out, "cluster") as stage:
                    _write_set(stage, 3)
                    _, restore = _counting(stop, interrupt)
        finally:
            restore()
        assert _seen(out) == ({"K=2\n"} if stop <= COMMIT else {"K=3\n"}), f"stopped before rename {stop}"


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from anomclust_lite.cli import out_dir, output_set
    sys.path.insert(0, sys.argv[3])
    from test_output_set import _write_set
    from test_output_set import _counting
    out, stop = Path(sys.argv[1]), int(sys.argv[2])
    out_dir.claim_output(out)
    with output_set.staged_outputs(out, "cluster") as stage:
        _write_set(stage, 3)
        _counting(stop, lambda: os.kill(os.getpid(), signal.SIGKILL))
""")


@pytest.mark.parametrize("stop", [0, 1, 2, 4, 6, 9])
def test_a_run_killed_at_a_rename_leaves_the_old_or_the_new_set(tmp_path, stop):
    out = _fresh(tmp_path)
    out_dir.release_locks()  # the subprocess takes the folder's lock
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(out_dir.__file__).parents[2])] + sys.path))
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(out), str(stop), str(Path(__file__).parent)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    out_dir.claim_output(out)  # the next run (or reader) takes the lock, then recovers
    assert _seen(out) == ({"K=2\n"} if stop <= COMMIT else {"K=3\n"})


def test_only_our_staging_folders_are_removed(tmp_path):
    out = _fresh(tmp_path)
    ours = out / f"{STAGING_PREFIX}left"
    ours.mkdir()
    (ours / output_set.STAGING_MARKER).write_text("")
    (ours / "clusters.csv").write_text("K=9\n")
    foreign = out / f"{STAGING_PREFIX}not-ours"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    recover(out)
    assert not ours.exists() and (foreign / "precious.txt").read_text() == "keep me"


def test_an_edited_member_is_refused_by_readers(tmp_path):
    out = _fresh(tmp_path)
    (out / "model.npz").write_text("K=5\n")
    with pytest.raises(ValueError, match="not the file its run wrote"):
        check_member(out / "model.npz")


def test_an_update_keeps_the_other_files_and_the_exports(tmp_path):
    out = _fresh(tmp_path)
    with staged_outputs(out, "name", keep=True) as stage:
        (stage / "model.npz").write_text("K=2 named\n")
    assert (out / "model.npz").read_text() == "K=2 named\n" and (out / "report.html").read_text() == "K=2\n"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("cluster_")) == ["cluster_0", "cluster_1"]
    for name in FILES:
        check_member(out / name)


def test_ctrl_c_during_the_install_is_raised_after_it(tmp_path):
    import signal

    out = _fresh(tmp_path)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    restore = lambda: None  # noqa: E731
    try:
        with pytest.raises(KeyboardInterrupt):
            with staged_outputs(out, "cluster") as stage:
                _write_set(stage, 3)
                _, restore = _counting(3, lambda: os.kill(os.getpid(), signal.SIGINT))
        restore()
        assert not (out / PENDING_NAME).exists()  # installed whole before the KeyboardInterrupt
        assert _seen(out) == {"K=3\n"}
    finally:
        restore()
        signal.signal(signal.SIGINT, previous)


def test_a_folder_holds_the_outputs_of_one_command(tmp_path):
    from anomclust_lite.cli.output_set import check_kind

    out = _fresh(tmp_path)
    with pytest.raises(ValueError, match="outputs of the cluster command, which the assign command would replace"):
        check_kind(out, "assign")
    check_kind(out, "cluster")
    legacy = tmp_path / "legacy"  # written before manifests: judged by its files
    legacy.mkdir()
    (legacy / "model.npz").write_text("")
    with pytest.raises(ValueError, match="holds model.npz, which the assign"):
        check_kind(legacy, "assign")
    (tmp_path / "assigned").mkdir()
    (tmp_path / "assigned" / "assignments.csv").write_text("")
    with pytest.raises(ValueError, match="holds assignments.csv, which the cluster"):
        check_kind(tmp_path / "assigned", "cluster")


def test_a_failed_write_names_the_output_not_its_staging_copy(tmp_path):
    out = _fresh(tmp_path)
    with pytest.raises(OSError) as info:
        with staged_outputs(out, "cluster") as stage:
            raise OSError(28, "No space left on device", os.fspath(stage / "clusters.csv"))
    assert info.value.filename == os.fspath(out / "clusters.csv") and info.value.errno == 28
