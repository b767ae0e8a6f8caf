"""The CLI's cache folder: shared by every --out, reruns that score nothing, cache info|clear, a full cache disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _cli_support import fixture_base_folder, fixture_folder, fixture_model_path  # noqa: F401 (pytest fixtures)
from _cli_support import draw_image, make_normal_folder, model_args, run
from conftest import REPO_ROOT


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_a_rerun_into_another_out_extracts_and_scores_nothing(capsys, folder: Path, model_path: Path,
                                                              tmp_path: Path) -> None:
    cache, normal = tmp_path / "cache", make_normal_folder(tmp_path / "normal", 5, seed=5)
    common = [folder, *model_args(model_path), "--normal", normal, "--cache-dir", cache]
    rc, stdout, err = run(capsys, *common, "--out", tmp_path / "cold")
    assert rc == 0, err
    cold = _summary(tmp_path / "cold")
    assert cold["extraction"]["cache_hits"] == 0 and cold["cache"]["steps"] == []
    assert "total time" in stdout.strip().splitlines()[-1]

    rc, _, err = run(capsys, *common, "--out", tmp_path / "warm")
    assert rc == 0, err
    warm = _summary(tmp_path / "warm")
    n = warm["n_images"]
    assert warm["extraction"]["cache_hits"] == n and warm["extraction"]["computed"] == 0
    assert f"{n} of {n} images from the cache" in err and "scores (from the cache)" in err
    assert {"scores", "embeddings", "scoring against the normal bank"} <= set(warm["cache"]["steps"])
    assert (tmp_path / "warm" / "clusters.csv").read_bytes() == (tmp_path / "cold" / "clusters.csv").read_bytes()

    rc, _, err = run(capsys, *common, "--out", tmp_path / "k2", "--k", "2", "--method", "average", "--tau", "0.5")
    assert rc == 0, err
    steps = set(_summary(tmp_path / "k2")["cache"]["steps"])
    assert "scores" in steps and "embeddings" not in steps  # another tau: only the weights are redone
    assert "scoring" not in [line.split(" ")[0] for line in err.splitlines() if "image pairs" in line]


def test_the_default_cache_is_the_user_cache_shared_by_every_out(capsys, folder: Path, model_path: Path,
                                                                 tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "user"))
    for out in ("one", "two"):
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / out)
        assert rc == 0, err
    assert _summary(tmp_path / "two")["extraction"]["computed"] == 0
    assert _summary(tmp_path / "two")["cache"]["dir"] == str(tmp_path / "user" / "data")
    assert not (tmp_path / "one" / ".features").exists()


def test_cache_info_and_clear(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / "o", "--cache-dir", cache)
    assert rc == 0, err
    rc, stdout, _ = run(capsys, "cache", "info", "--cache-dir", cache)
    assert rc == 0 and str(cache) in stdout
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()[1:]}
    assert set(rows) == {"features", "scores", "embeddings", "trust", "distances", "total"}
    assert int(rows["features"][1]) == _summary(tmp_path / "o")["n_images"] and int(rows["scores"][1]) == 1
    rc, stdout, _ = run(capsys, "cache", "clear", "--cache-dir", cache)
    assert rc == 0 and "removed" in stdout and rows["total"][1] in stdout.splitlines()[-1]
    assert not list((cache / "features").rglob("*.npy"))
    rc, stdout, _ = run(capsys, "cache", "info", "--cache-dir", cache)
    assert "total" in stdout and stdout.splitlines()[-1].split()[1] == "0"
    rc, _, err = run(capsys, "cache", "list")
    assert rc == 2 and "invalid choice" in err


def test_the_size_cap_evicts_the_least_recently_used(capsys, folder: Path, base_folder: Path, model_path: Path,
                                                     tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rc, _, _ = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / "a", "--cache-dir", cache)
    first = {p.name for p in (cache / "features").rglob("*.npy")}
    past = time.time() - 3600
    for p in (cache / "features").rglob("*.json"):
        os.utime(p, (past, past))  # the first run's entries were used an hour ago
    other = tmp_path / "other"
    other.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        draw_image("a", rng).save(other / f"{i}.png")
    rc, _, err = run(capsys, other, *model_args(model_path), "--k", "2", "--out", tmp_path / "b", "--cache-dir", cache,
                     "--cache-max-mb", "0.05")
    assert rc == 0, err
    assert "least recently used" in err
    left = {p.name for p in (cache / "features").rglob("*.npy")}
    assert len(left - first) == 4  # the new run's entries (the most recent) stayed
    assert len(left & first) < len(first)  # the first run's (used an hour ago) went


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 128 KiB tmpfs (needs the right to mount: root; skipped otherwise)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_cache_disk_that_fills_up_is_one_warning_and_the_run_goes_on(capsys, folder: Path, model_path: Path,
                                                                       tmp_path: Path, tiny_disk: Path) -> None:
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "o",
                          "--cache-dir", tiny_disk)
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line and "cache" in line]
    assert len(warnings) == 1, err
    assert str(tiny_disk) in warnings[0] and "No space left on device" in warnings[0]
    assert "NMI 1.000" in stdout
    assert _summary(tmp_path / "o")["cache"]["writing"] == "off: No space left on device"
    assert not list(tiny_disk.rglob("*.tmp"))


def test_a_cache_folder_that_takes_no_file_is_one_warning_and_no_cache(capsys, folder: Path, model_path: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    import anomclust_lite.cli.cache as cli_cache

    def full(folder, what, advice):
        raise ValueError(f"cannot write to {what} {folder} (No space left on device); {advice}")

    monkeypatch.setattr(cli_cache, "probe_writable", full)
    cache = tmp_path / "cache"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / "o", "--cache-dir", cache)
    assert rc == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "going on without a cache" in warnings[0]
    assert _summary(tmp_path / "o")["cache"]["dir"] is None


def test_leftover_temporary_files_of_an_interrupted_run_are_removed(capsys, folder: Path, model_path: Path,
                                                                    tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stale = cache / "scores" / "ab" / f".{'ab' * 32}.npy.x1y2z3w4.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    past = time.time() - 60
    os.utime(stale, (past, past))
    mine = cache / "scores" / "ab" / "notes.tmp"
    mine.write_bytes(b"not the cache's")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / "o", "--cache-dir", cache)
    assert rc == 0, err
    assert not stale.exists() and mine.exists()


@pytest.mark.parametrize("flag", ["--no-cache"])
def test_no_cache_writes_no_cache_folder(capsys, folder: Path, model_path: Path, tmp_path: Path, flag: str) -> None:
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / "o",
                     "--cache-dir", tmp_path / "cache", flag)
    assert rc == 0, err
    assert not (tmp_path / "cache").exists() and _summary(tmp_path / "o")["cache"]["dir"] is None
