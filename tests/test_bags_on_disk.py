"""Features of a run that fits a sample kept on disk (cli/spill.py, Extractor.extract_all(bags_file=...))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomclust_lite.cli import cluster as cluster_cli
from _cli_support import fixture_base_folder, fixture_folder, fixture_model_path  # noqa: F401 (pytest fixtures)
from _cli_support import N_IMAGES, model_args, read_csv, run


def test_extract_all_writes_a_memory_mapped_npy(folder: Path, model_path: Path, tmp_path: Path) -> None:
    from anomclust_lite.features.extractor import Extractor

    paths = sorted(folder.rglob("*.png"))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    paths = paths[:3] + [tmp_path / "broken.png"] + paths[3:]
    ext = Extractor(model_path, resize=64, crop=64)
    in_memory = ext.extract_all(paths)
    on_disk = ext.extract_all(paths, bags_file=tmp_path / "bags.npy", bag_dtype="float16")
    import mmap

    assert isinstance(on_disk.bags, np.memmap) and isinstance(on_disk.bags.base, mmap.mmap)  # one whole mapping
    assert not on_disk.bags.flags.writeable
    assert on_disk.paths == in_memory.paths and len(on_disk.failures) == 1  # the broken image compacted away
    np.testing.assert_array_equal(on_disk.bags, in_memory.bags.astype(np.float16))
    saved = np.load(tmp_path / "bags.npy", mmap_mode="r")
    np.testing.assert_array_equal(saved[: len(on_disk.paths)], on_disk.bags)


def test_cli_keeps_the_bags_of_a_sampled_fit_on_disk(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    size = str(N_IMAGES // 2)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--fit-size", size, "--out", tmp_path / "a")
    assert rc == 0, err
    assert f"{N_IMAGES} images, more than the fit size {size} (--fit-size): their features stay on disk" in err
    assert not list((tmp_path / "a").glob(".bags-*"))  # removed at the end
    assert f"{size} of {N_IMAGES} images (--fit-size {size})" in (tmp_path / "a" / "report.html").read_text()
    seen = []

    class InMemory:  # the same run with the bags in memory: the same clusters
        def __init__(self, model, n_images, out, console):
            seen.append(n_images)

        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(cluster_cli, "bags_on_disk", InMemory)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--fit-size", size, "--out", tmp_path / "b")
    assert rc == 0 and seen == [N_IMAGES] and "stay on disk" not in err
    assert read_csv(tmp_path / "a" / "clusters.csv") == read_csv(tmp_path / "b" / "clusters.csv")


def test_small_runs_and_exact_runs_stay_in_memory(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "a")
    assert rc == 0 and "stay on disk" not in err
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--fit-size", "4", "--exact",
                     "--out", tmp_path / "b")
    assert rc == 0 and "stay on disk" not in err
    assert run(capsys, folder, "--fit-size", "1")[0] == 2


def test_bags_file_is_removed_when_the_fit_fails(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fit(*args, **kwargs):
        (tmp,) = (tmp_path / "a").glob(".bags-*.tmp")  # the file exists while the fit runs, private
        assert tmp.stat().st_mode & 0o777 == 0o600 and tmp.stat().st_size > 0
        raise ValueError("fit failed on purpose")

    monkeypatch.setattr(cluster_cli, "fit_clusterer", broken_fit)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--fit-size", "4", "--out", tmp_path / "a")
    assert rc == 1 and "fit failed on purpose" in err
    assert not list((tmp_path / "a").glob(".bags-*"))


def test_npy_rows_write_read_compact_and_finish(tmp_path: Path) -> None:
    from anomclust_lite.files.npy_rows import NpyRows

    rows = NpyRows(tmp_path / "r.npy", (4, 2, 3), np.float16)
    assert (len(rows), rows.shape, rows.ndim, rows.dtype) == (4, (4, 2, 3), 3, np.float16)
    for i in range(4):
        rows[i] = np.full((2, 3), i + 0.5)
    rows[1] = rows[3]  # in-place compaction as the extractor does it
    np.testing.assert_array_equal(rows[0], np.full((2, 3), 0.5, np.float16))
    with pytest.raises(IndexError, match="outside 0..3"):
        rows[4] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="rows\\[:k\\]"):
        rows[1:3]
    kept = rows[:2]
    assert isinstance(kept, np.memmap) and kept.shape == (2, 2, 3) and not kept.flags.writeable
    np.testing.assert_array_equal(kept[1], np.full((2, 3), 3.5, np.float16))
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy")[:2], kept)  # a valid .npy (header: all 4 rows)
    with pytest.raises(ValueError, match="finished"):
        rows[0] = np.zeros((2, 3))
    assert rows.read_only(0).shape == (0, 2, 3)


def test_assign_of_many_images_reads_them_in_chunks(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from anomclust_lite.estimator import scale

    size = str(N_IMAGES // 2)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "fit")
    assert rc == 0, err
    rc, _, err = run(capsys, "assign", tmp_path / "fit" / "model.npz", folder, "--out", tmp_path / "one")
    assert rc == 0 and "stay on disk" not in err  # fitted with the default fit size: in memory, one chunk
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--fit-size", size, "--out", tmp_path / "f2")
    assert rc == 0, err
    monkeypatch.setattr(scale, "CHUNK_BYTES", 1)  # one image per chunk
    rc, _, err = run(capsys, "assign", tmp_path / "f2" / "model.npz", folder, "--out", tmp_path / "many")
    assert rc == 0 and "stay on disk" in err, err
    assert not list((tmp_path / "many").glob(".bags-*"))
    rows = read_csv(tmp_path / "many" / "assignments.csv")
    assert len(rows) == N_IMAGES and {r["fitted"] for r in rows} == {"1"}  # the fitted images, recognised
    fitted = {r["path"]: r["cluster"] for r in read_csv(tmp_path / "f2" / "clusters.csv")}
    assert {r["path"]: r["cluster"] for r in rows} == fitted


def test_join_of_chunked_assignments_equals_one_pass() -> None:
    from anomclust_lite import AnomalyClusterer, normalize_patches
    from anomclust_lite.estimator import scale

    rng = np.random.default_rng(0)
    bags = normalize_patches(rng.normal(size=(30, 16, 24)) + np.repeat(np.eye(24)[:3], 10, 0)[:, None] * 2)
    model = AnomalyClusterer(3).fit(bags.astype(np.float32))
    new = normalize_patches(rng.normal(size=(9, 16, 24)) + np.repeat(np.eye(24)[:3], 3, 0)[:, None] * 2)
    one = model.assign(new.astype(np.float32))
    old = scale.CHUNK_BYTES
    try:
        scale.CHUNK_BYTES = 2 * 16 * 24 * 4  # two images per chunk
        chunked = model.assign(new.astype(np.float32))
    finally:
        scale.CHUNK_BYTES = old
    for field in ("labels", "distances", "new_type", "fitted", "anomaly_scores", "is_good", "novelty", "scores",
                  "embeddings", "thresholds"):
        np.testing.assert_allclose(getattr(chunked, field), getattr(one, field), rtol=1e-6, atol=1e-9, err_msg=field)
    np.testing.assert_allclose(chunked.confidence, one.confidence, rtol=1e-6, atol=1e-9)
