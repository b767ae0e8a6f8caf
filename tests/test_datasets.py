"""Tests of the evaluation-set loaders (synthetic folders + real counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomclust_lite.datasets import MTD_CLASSES, EvalSet, load_mask, mtd, mvtec_category
from anomclust_lite.features.preprocess import preprocess


def _img(path: Path, size=(8, 8), mode="RGB", value=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def _make_mvtec(root: Path, counts: dict, n_train: int = 3) -> Path:
    for i in range(n_train):
        _img(root / "train" / "good" / f"{i:03d}.png")
    for defect_type, n in counts.items():
        for i in range(n):
            _img(root / "test" / defect_type / f"{i:03d}.png")
            if defect_type != "good":
                _img(root / "ground_truth" / defect_type / f"{i:03d}_mask.png", mode="L", value=255)
    return root


def _make_mtd(root: Path, per_class: int = 3, free: int = 5, free_test=("f1", "f3")) -> Path:
    for cls in MTD_CLASSES:
        folder = root / f"MT_{cls}" / "Imgs"
        names = [f"f{i}" for i in range(free)] if cls == "Free" else [f"{cls.lower()}{i}" for i in range(per_class)]
        for name in names:
            _img(folder / f"{name}.jpg", size=(10, 6), mode="L")
            _img(folder / f"{name}.png", size=(10, 6), mode="L")
    (root / "free_test.txt").write_text("\n".join(free_test) + "\n")
    return root


# ----------------------------------------------------------------------------- MVTec


def test_mvtec_excludes_combined_and_sorts(tmp_path):
    root = _make_mvtec(tmp_path / "cat", {"good": 2, "crack": 3, "combined": 4, "a_type": 1})
    s = mvtec_category(root)
    assert s.name == "cat"
    assert s.n_images == 6 and s.k == 3
    assert s.classes == ("a_type", "crack", "good")
    assert list(s.labels) == ["a_type", "crack", "crack", "crack", "good", "good"]
    assert [p.parent.name for p in s.paths] == list(s.labels)
    assert s.paths == tuple(sorted(s.paths))
    assert len(s.normal_paths) == 3
    for label, mask in zip(s.labels, s.mask_paths):
        if label == "good":
            assert mask is None
        else:
            assert mask is not None and mask.name.endswith("_mask.png") and mask.is_file()
    assert mvtec_category(root, name="x").name == "x"


def test_mvtec_deterministic(tmp_path):
    root = _make_mvtec(tmp_path / "cat", {"good": 3, "crack": 3})
    assert mvtec_category(root) == mvtec_category(root)


def test_mvtec_missing_mask(tmp_path):
    root = _make_mvtec(tmp_path / "cat", {"good": 1, "crack": 2})
    (root / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="001_mask.png"):
        mvtec_category(root)


@pytest.mark.parametrize("missing", ["test", "train/good"])
def test_mvtec_missing_folder(tmp_path, missing):
    root = _make_mvtec(tmp_path / "cat", {"good": 1, "crack": 1})
    import shutil

    shutil.rmtree(root / missing)
    with pytest.raises(FileNotFoundError, match=missing.split("/")[-1]):
        mvtec_category(root)


def test_mvtec_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        mvtec_category(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- MTD


def test_mtd_split(tmp_path):
    s = mtd(_make_mtd(tmp_path))
    assert s.name == "mtd"
    assert s.k == 6
    assert s.n_images == 5 * 3 + 2
    assert s.class_counts()["Free"] == 2
    assert sorted(p.stem for p in s.normal_paths) == ["f0", "f2", "f4"]
    assert all(p.suffix == ".jpg" for p in s.paths + s.normal_paths)
    assert not set(s.paths) & set(s.normal_paths)
    assert all(m is not None and m.suffix == ".png" and m.stem == p.stem for p, m in zip(s.paths, s.mask_paths))


def test_mtd_free_without_mask_is_none(tmp_path):
    root = _make_mtd(tmp_path)
    (root / "MT_Free" / "Imgs" / "f1.png").unlink()
    s = mtd(root)
    masks = dict(zip((p.stem for p in s.paths), s.mask_paths))
    assert masks["f1"] is None and masks["f3"] is not None


def test_mtd_missing_defect_mask(tmp_path):
    root = _make_mtd(tmp_path)
    (root / "MT_Crack" / "Imgs" / "crack1.png").unlink()
    with pytest.raises(FileNotFoundError, match="crack1.png"):
        mtd(root)


def test_mtd_missing_listed_free(tmp_path):
    root = _make_mtd(tmp_path, free_test=("f1", "nope"))
    with pytest.raises(FileNotFoundError, match="nope"):
        mtd(root)


def test_mtd_missing_list_and_class(tmp_path):
    root = _make_mtd(tmp_path)
    (root / "free_test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="free_test.txt"):
        mtd(root)
    root2 = _make_mtd(tmp_path / "b")
    import shutil

    shutil.rmtree(root2 / "MT_Fray")
    with pytest.raises(FileNotFoundError, match="MT_Fray"):
        mtd(root2)


def test_mtd_duplicate_list_entry(tmp_path):
    root = _make_mtd(tmp_path, free_test=("f1", "f1"))
    with pytest.raises(ValueError, match="more than once"):
        mtd(root)


def test_evalset_length_mismatch():
    with pytest.raises(ValueError, match="labels"):
        EvalSet("x", (Path("a"),), (), (), (None,))


# ----------------------------------------------------------------------------- masks


def test_load_mask_matches_image_geometry(tmp_path):
    """A mask marking one pixel column lands where preprocess puts that column."""
    w, h = 60, 40
    rgb = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    rgb[:, 35:45] = 255
    mask[:, 35:45] = 200
    Image.fromarray(mask).save(tmp_path / "m.png")
    for resize, crop in [(20, 16), (20, None), (40, 40)]:
        x = preprocess(Image.fromarray(rgb), resize=resize, crop=crop)
        bright = x[0] > 0
        m = load_mask(tmp_path / "m.png", resize=resize, crop=crop)
        assert m.shape == bright.shape
        # Same columns up to the resampling border (bilinear vs nearest): at most one column apart.
        cols_img = np.flatnonzero(bright.all(axis=0))
        cols_mask = np.flatnonzero(m.all(axis=0))
        assert abs(cols_img.min() - cols_mask.min()) <= 1 and abs(cols_img.max() - cols_mask.max()) <= 1


def test_load_mask_threshold_and_none(tmp_path):
    mask = np.array([[0, 127], [128, 255]], np.uint8)
    Image.fromarray(mask).save(tmp_path / "m.png")
    got = load_mask(tmp_path / "m.png", resize=2, crop=None)
    assert got.tolist() == [[False, False], [True, True]]
    assert load_mask(None, resize=8, crop=4).shape == (4, 4)
    assert not load_mask(None, resize=8, crop=None).any()


def test_load_mask_resizes_to_image_size(tmp_path):
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    got = load_mask(tmp_path / "m.png", resize=8, crop=None, image_size=(8, 8))
    assert got[:, 4:].all() and not got[:, :4].any()


def test_load_mask_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_mask(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="crop"):
        load_mask(None, resize=8, crop=16)
    with pytest.raises(ValueError, match="image_size"):
        load_mask(None, image_size=(3,))


# ----------------------------------------------------------------------------- real data


def test_real_bottle(shared_dir):
    s = mvtec_category(shared_dir / "data" / "mvtec" / "bottle")
    assert s.n_images == 83 and s.k == 4 and len(s.normal_paths) == 209
    assert s.class_counts() == {"broken_large": 20, "broken_small": 22, "contamination": 21, "good": 20}


def test_real_pill(shared_dir):
    s = mvtec_category(shared_dir / "data" / "mvtec" / "pill")
    assert s.n_images == 150 and s.k == 7 and len(s.normal_paths) == 267
    assert "combined" not in s.classes
    assert s.class_counts()["good"] == 26


def test_real_mtd(shared_dir):
    s = mtd(shared_dir / "data" / "mtd")
    assert s.n_images == 582 and s.k == 6 and len(s.normal_paths) == 762
    assert s.class_counts() == {"Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32, "Free": 190, "Uneven": 103}


def test_shared_root_order(monkeypatch, tmp_path):
    from anomclust_lite import shared_root

    monkeypatch.setenv("ANOMCLUST_SHARED", str(tmp_path / "env"))
    assert shared_root(tmp_path / "arg") == tmp_path / "arg"
    assert shared_root() == shared_root("") == tmp_path / "env"
    monkeypatch.delenv("ANOMCLUST_SHARED")
    repo = Path(__file__).resolve().parent.parent
    assert shared_root() == repo.parent / "shared"  # a source checkout: beside the repository
