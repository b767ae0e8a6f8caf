"""End-to-end tests of the command-line tool on a tiny synthetic folder and a tiny ONNX model."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image, ImageDraw

from anomclust_lite.cli.cluster import run_clustering
from anomclust_lite.cli.main import main
from anomclust_lite.cli.parser import build_parser
from anomclust_lite.features.folders import collect_images, folder_labels
from anomclust_lite.estimator.clusterer import AnomalyClusterer
from _report_html import ReportParser, parse
from _cli_support import fixture_base_folder, fixture_folder, fixture_model_path  # noqa: F401 (pytest fixtures)
from _cli_support import (
    CLASSES,
    N_IMAGES,
    PER_CLASS,
    assert_one_error_line,
    draw_image,
    make_normal_folder,
    make_onnx,
    model_args,
    read_csv,
    run,
)


def parse_report(path: Path) -> ReportParser:
    return parse(path.read_text(encoding="utf-8"))


def no_temporary_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".probe-")]


# ---------------------------------------------------------------- success


def test_help_in_a_subprocess() -> None:
    res = subprocess.run([sys.executable, "-m", "anomclust_lite", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for word in ("FOLDER", "--tau", "semi", "L-method", "assign", "--exclude '*.png'", "clusters.csv"):
        assert word in res.stdout
    res = subprocess.run([sys.executable, "-m", "anomclust_lite", "assign", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "new_type" in res.stdout


def test_end_to_end_with_k(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out)
    assert rc == 0, err
    assert "NMI 1.000" in stdout and "3 clusters" in stdout
    rows = read_csv(out / "clusters.csv")
    assert len(rows) == N_IMAGES
    assert list(rows[0]) == ["path", "cluster", "name", "distance", "top_score", "anomaly_score", "is_good",
                             "confidence", "label"]
    assert sorted(r["path"] for r in rows) == sorted(f"{c}/{i:03d}.png" for c in CLASSES for i in range(PER_CLASS))
    for r in rows:
        assert r["label"] == r["path"].split("/")[0]
        assert float(r["distance"]) >= 0 and float(r["top_score"]) > 0
        assert r["name"] == r["label"]  # labels known: each pure cluster is named by its majority label
        assert 0 <= float(r["confidence"]) <= 1 and float(r["anomaly_score"]) > 0 and r["is_good"] == "0"
    by_label: Dict[str, set] = {}
    for r in rows:
        by_label.setdefault(r["label"], set()).add(r["cluster"])
    assert all(len(v) == 1 for v in by_label.values()) and len({next(iter(v)) for v in by_label.values()}) == 3

    summary = json.loads((out / "summary.json").read_text())
    assert summary["k"] == 3 and summary["k_choice"]["method"] == "fixed"
    assert summary["cluster_sizes"] == [4, 4, 4]
    assert summary["metrics"]["nmi"] == pytest.approx(1.0)
    assert set(summary["versions"]) == {"anomclust_lite", "python", "numpy", "scipy", "pillow", "onnxruntime"}
    assert summary["extractor"]["grid"] == [8, 8]
    assert {"extraction", "scoring", "clustering", "report", "total"} <= set(summary["timings"])
    assert summary["parameters"]["weights"] == "unsupervised"
    assert summary["parameters"]["n_threads"] is None  # one kernel thread per CPU

    report = parse_report(out / "report.html")
    assert report.sections == ["cluster-0", "cluster-1", "cluster-2"]
    shown = [p for paths in report.figures.values() for p in paths]
    assert sorted(shown) == sorted(r["path"] for r in rows)  # every image exactly once
    for r in rows:
        assert r["path"] in report.figures[f"cluster-{r['cluster']}"]
    assert "data:image/webp;base64," in (out / "report.html").read_text()

    model = AnomalyClusterer.load(out / "model.npz")
    assert model.k_ == 3 and model.metadata_["extractor"]["output"] == "feat"
    assert no_temporary_files(out)
    assert not (out / ".features").exists()  # features go to the shared cache folder (tests/test_cli_cache.py)


def test_threads_option_reaches_the_model_and_the_kernels(capsys, folder: Path, model_path: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--threads", "1", "--out", out, "-q")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameters"]["n_threads"] == 1
    assert summary["extractor"]["threads"]["intra_op_num_threads"] == 1
    rc, _, err = run(capsys, folder, *model_args(model_path), "--threads", "0", "--out", out, "-q")
    assert rc == 2 and "--threads" in err


def test_project_out_option_reaches_the_model(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    from anomclust_lite import AnomalyClusterer

    out = tmp_path / "out"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--project-out", "2", "--out", out, "-q")
    assert rc == 0, err
    parameters = json.loads((out / "summary.json").read_text())["parameters"]
    assert parameters["project_out"] == 2 and parameters["projected_out"] == 2
    assert "nuisance directions removed" in (out / "report.html").read_text()
    assert AnomalyClusterer.load(out / "model.npz").projection_.rank == 2
    for bad in ("-1", "x", "1.5"):
        rc, _, err = run(capsys, folder, *model_args(model_path), "--project-out", bad, "--out", tmp_path / "b")
        assert rc == 2 and "--project-out" in err and "expected 'auto' or an integer >= 0" in err


def test_consensus_option_reaches_the_model_and_the_summary(capsys, folder: Path, model_path: Path,
                                                            tmp_path: Path) -> None:
    from anomclust_lite.core.defaults import CONSENSUS_EXTRA_K, CONSENSUS_TAU_FACTORS

    for option, partitions in (("auto", len(CONSENSUS_TAU_FACTORS) * (CONSENSUS_EXTRA_K + 1)), ("off", 0)):
        out = tmp_path / option
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--consensus", option, "--out", out, "-q")
        assert rc == 0, err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["consensus"]["mode"] == summary["parameters"]["consensus"] == option
        assert summary["consensus"]["partitions"] == partitions
        assert ("partitions" in summary["consensus"]["text"]) == (option == "auto")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--consensus", "on", "--out", tmp_path / "bad")
    assert rc == 2 and "--consensus" in err


def test_tau_option_takes_a_number_or_a_factor(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    for given, stored, shown in (("0.05", 0.05, "tau = 0.05"), ("0.4X", "0.4x", "tau = 0.4x (0.4 x each image")):
        out = tmp_path / f"out{given}"
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--tau", given, "--out", out, "-q")
        assert rc == 0, err
        parameters = json.loads((out / "summary.json").read_text())["parameters"]
        assert parameters["tau"] == stored and parameters["effective_tau"] == stored
        assert shown in (out / "report.html").read_text()
    for bad in ("0", "-1", "x", "0x", "abc", "nan"):
        rc, _, err = run(capsys, folder, *model_args(model_path), "--tau", bad, "--out", tmp_path / "b")
        assert rc == 2 and "--tau" in err and "expected a positive number (e.g. 0.02) or Cx" in err


def test_bank_size_option_reaches_the_model(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    from anomclust_lite import AnomalyClusterer
    from anomclust_lite.core.defaults import DEFAULT_BANK_SIZE

    normal = make_normal_folder(tmp_path / "normal", 4, seed=3)
    for size, expect in (("40", 40), ("0.5", 0.5)):
        out = tmp_path / f"out{size}"
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--normal", normal,
                         "--bank-size", size, "--out", out, "-q")
        assert rc == 0, err
        assert json.loads((out / "summary.json").read_text())["parameters"]["bank_size"] == expect
        model = AnomalyClusterer.load(out / "model.npz")
        assert model.bank_size == expect and type(model.bank_size) is type(expect)
    # 0.5 keeps all 4 normal images (a fraction never keeps fewer than MIN_CORESET_PATCHES);
    # 40 patches fill one image-sized row of the stored bank
    rows, patches = AnomalyClusterer.load(tmp_path / "out0.5" / "model.npz")._reference.shape[:2]
    assert rows == 4 and patches > 40
    assert AnomalyClusterer.load(tmp_path / "out40" / "model.npz")._reference.shape[:2] == (1, patches)
    assert build_parser().parse_args([str(folder)]).bank_size == DEFAULT_BANK_SIZE
    for bad in ("0", "1.5", "-3", "x", "nan"):
        rc, _, err = run(capsys, folder, *model_args(model_path), "--bank-size", bad, "--out", tmp_path / "b")
        assert rc == 2 and "--bank-size" in err and "expected a fraction in (0, 1]" in err


def test_default_out_and_auto_k(capsys, folder: Path, model_path: Path) -> None:
    rc, stdout, err = run(capsys, folder, *model_args(model_path))
    assert rc == 0, err
    out = folder.parent / "parts_clusters"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["k_choice"]["method"] == "l-method"
    assert set(summary["k_choice"]["scores"]) == {str(k) for k in range(3, N_IMAGES - 2)}
    assert summary["k"] == 3  # the three synthetic types
    assert "chosen by the L-method" in stdout
    assert len(parse_report(out / "report.html").sections) == summary["k"]
    # a rerun takes the features from the cache
    rc, _, _ = run(capsys, folder, *model_args(model_path), "-q")
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["extraction"]["cache_hits"] == N_IMAGES


def test_quiet_prints_nothing_on_stderr(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "2", "-q", "--out", tmp_path / "o")
    assert rc == 0 and err == ""
    assert "results in" in stdout
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", tmp_path / "o")
    assert rc == 0 and "extracting features" in err and "clustering" in err


def test_over_clustering_and_methods(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    for extra in (["--k", "6"], ["--k", "3", "--method", "kmedoids"], ["--k", "3", "--distance", "hausdorff-mean-min"],
                  ["--k", "3", "--weights", "topk", "--topk", "4"], ["--k", "3", "--weights", "uniform"]):
        out = tmp_path / "_".join(extra).replace("-", "")
        rc, _, err = run(capsys, folder, *model_args(model_path), "-q", "--out", out, *extra)
        assert rc == 0, (extra, err)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["k"] == int(extra[1])
        assert len(parse_report(out / "report.html").sections) == summary["k"]


def test_full_frame_without_crop(capsys, base_folder: Path, model_path: Path, tmp_path: Path) -> None:
    rc, _, err = run(capsys, base_folder, "--model", model_path, "--resize", "48", "--crop", "none", "--k", "3",
                     "--out", tmp_path / "o", "-q")
    assert rc == 0, err
    extractor = json.loads((tmp_path / "o" / "summary.json").read_text())["extractor"]
    assert extractor["crop"] is None and extractor["grid"] == [6, 6]
    rc, _, err = run(capsys, "assign", tmp_path / "o" / "model.npz", base_folder, "--out", tmp_path / "a", "-q")
    assert rc == 0, err


def test_semi_supervised_with_normal_folder(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    normal = make_normal_folder(tmp_path / "normal", 5, seed=5)
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--normal", normal, "--out", tmp_path / "o")
    assert rc == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["parameters"]["weights"] == "semi" and summary["metrics"]["nmi"] == pytest.approx(1.0)
    rc, stdout, err = run(capsys, "assign", tmp_path / "o" / "model.npz", normal, "--out", tmp_path / "a")
    assert rc == 0, err
    good = sum(r["is_good"] == "1" for r in read_csv(tmp_path / "a" / "assignments.csv"))
    assert good >= 4 and f"; {good} likely good (is_good = 1" in stdout  # the terminal says what the CSV holds
    rc, _, err = run(capsys, folder, *model_args(model_path), "--weights", "semi", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "--normal")


def test_stated_rates_are_options_of_the_fit(tmp_path: Path) -> None:
    """--good-rate and --new-type-rate reach the estimator (thresholds are calibrated when fitting)."""
    from anomclust_lite.cli.cluster import build_clusterer
    from anomclust_lite.cli.parser import build_parser

    args = build_parser().parse_args([str(tmp_path), "--good-rate", "0.2", "--new-type-rate", "0.1"])
    model = build_clusterer(args, "semi")
    assert (model.good_rate, model.new_type_rate) == (0.2, 0.1)
    default = build_clusterer(build_parser().parse_args([str(tmp_path)]), "semi")
    assert (default.good_rate, default.new_type_rate) == (0.05, 0.05)


def test_good_group_is_a_group_of_its_own_in_both_reports(capsys, folder: Path, model_path: Path,
                                                           tmp_path: Path) -> None:
    normal = make_normal_folder(tmp_path / "normal", 8, seed=5)
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--normal", normal, "--good-group", "auto",
                     "--out", tmp_path / "o", "-q")
    assert rc == 0, err
    good = {r["path"] for r in read_csv(tmp_path / "o" / "clusters.csv") if r["is_good"] == "1"}
    assert good and all(p.startswith("good/") for p in good)
    data = parse((tmp_path / "o" / "report.html").read_text(encoding="utf-8")).data
    assert data["k_fit"] == 2 and data["k_min"] < data["k_max"]  # no extra cluster; the slider has the tree
    for cut in data["cuts"]:
        assert {p for p, c in zip(data["paths"], cut) if c < 0} == good
    assert all(c is None for p, c in zip(data["paths"], data["confidence"]) if p in good)
    rc, _, err = run(capsys, "assign", tmp_path / "o" / "model.npz", folder, "--out", tmp_path / "a", "-q")
    assert rc == 0, err
    assigned = parse((tmp_path / "a" / "report.html").read_text(encoding="utf-8")).data
    assert assigned["k_fit"] == 2 and assigned["heat"] is not None
    assert assigned["heat"]["range"] == data["heat"]["range"]  # the fit's scale, also with a good group
    assert {c for c, g in zip(assigned["cuts"][0], assigned["is_good"]) if g} == {-1}
    # each fitted cluster's heading says what the fit knew of it: its size and how pure its name is
    fitted = read_csv(tmp_path / "o" / "clusters.csv")
    for c in ("0", "1"):
        members = [r["label"] for r in fitted if r["cluster"] == c]
        top = max(set(members), key=members.count)
        share = 100 * members.count(top) / len(members)
        assert assigned["notes"][c] == f"fitted: {len(members)} images, {share:.0f} % {top}"


def test_fit_notes_keep_old_models_and_skip_malformed_entries(folder: Path, model_path: Path) -> None:
    from anomclust_lite.cli.naming import fit_notes

    model = AnomalyClusterer(k=3)
    model.k_ = 3
    model.metadata_ = {"clusters": [
        {"cluster": 0, "majority": "scratch", "purity": 0.5},  # saved before sizes were recorded
        {"cluster": 1, "majority": "crack", "purity": 1.0, "size": 7},
        {"cluster": 2, "majority": "dent", "purity": 0.75, "size": True},  # not a count
        {"cluster": 5, "majority": "x", "purity": 1.0},  # no such cluster
        {"cluster": 1, "majority": "y", "purity": 1.5},  # not a share
        {"cluster": "z"}, ["not", "a", "record"], None,
    ]}
    assert fit_notes(model) == {0: "fitted: 50 % scratch", 1: "fitted: 7 images, 100 % crack", 2: "fitted: 75 % dent"}
    model.metadata_ = {}
    assert fit_notes(model) == {}


def test_labels_none_and_flat_folder(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    rc, stdout, _ = run(capsys, folder, *model_args(model_path), "--k", "3", "--labels", "none", "--out", tmp_path / "a")
    assert rc == 0 and "NMI" not in stdout
    assert list(read_csv(tmp_path / "a" / "clusters.csv")[0]) == [
        "path", "cluster", "name", "distance", "top_score", "anomaly_score", "is_good", "confidence"]
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["metrics"] is None
    (folder / "loose.png").write_bytes((folder / "good" / "000.png").read_bytes())  # not in a sub-folder
    rc, stdout, _ = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "b")
    assert rc == 0 and "NMI" not in stdout


def test_masks_ground_truth_and_exclude(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    shutil.copy(folder / "good" / "000.png", folder / "good" / "000_mask.png")
    (folder / "ground_truth" / "red_spot").mkdir(parents=True)
    shutil.copy(folder / "red_spot" / "000.png", folder / "ground_truth" / "red_spot" / "000.png")
    Image.new("RGB", (64, 64)).save(folder / "good" / "extra.jpg")
    (folder / "notes.txt").write_text("not an image")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--exclude", "*.jpg", "--out", tmp_path / "o")
    assert rc == 0, err
    assert len(read_csv(tmp_path / "o" / "clusters.csv")) == N_IMAGES
    skipped = json.loads((tmp_path / "o" / "summary.json").read_text())["skipped"]
    assert skipped["excluded"] == ["good/000_mask.png", "good/extra.jpg", "ground_truth/red_spot/000.png"]
    assert skipped["other_files"] == 1
    rc, _, _ = run(capsys, folder, *model_args(model_path), "--k", "3", "--no-default-exclude", "--labels", "none",
                   "--out", tmp_path / "p")
    assert rc == 0 and len(read_csv(tmp_path / "p" / "clusters.csv")) == N_IMAGES + 3


def test_unreadable_image_skip_and_fail(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    (folder / "good" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "o")
    assert rc == 0 and "broken.png" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_images"] == N_IMAGES
    assert [p["path"] for p in summary["skipped"]["unreadable_images"]] == ["good/broken.png"]
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--on-error", "fail", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "broken.png")


def test_non_utf8_file_name(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    name = os.fsdecode(b"img_\xff.png")
    try:
        shutil.copy(folder / "good" / "000.png", folder / "good" / name)
    except (OSError, UnicodeEncodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    out = tmp_path / "o"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--export", "symlink", "--out", out)
    assert rc == 0, err
    paths = [r["path"] for r in read_csv(out / "clusters.csv")]
    assert "good/img_\\xff.png" in paths
    shown = [p for v in parse_report(out / "report.html").figures.values() for p in v]
    assert "good/img_\\xff.png" in shown
    exported = [p for p in out.glob("cluster_*/*") if not p.name.startswith(".")]
    assert len(exported) == N_IMAGES + 1 and all(p.exists() for p in exported)


@pytest.mark.parametrize("mode", ["symlink", "copy"])
def test_export(capsys, folder: Path, model_path: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "o"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--export", mode, "--out", out)
    assert rc == 0, err
    rows = read_csv(out / "clusters.csv")
    for r in rows:
        target = out / f"cluster_{r['cluster']}" / r["path"].replace("/", "__")
        assert target.is_symlink() == (mode == "symlink")
        assert target.read_bytes() == (folder / r["path"]).read_bytes()
    assert no_temporary_files(out)
    # a rerun with another K replaces the old export
    rc, _, _ = run(capsys, folder, *model_args(model_path), "--k", "2", "--export", mode, "--out", out, "-q")
    assert rc == 0
    assert sorted(p.name for p in out.glob("cluster_*")) == ["cluster_0", "cluster_1"]
    assert sum(1 for p in out.glob("cluster_*/*") if not p.name.startswith(".")) == N_IMAGES
    # a folder the tool did not make is never deleted
    (out / "cluster_7").mkdir()
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--export", mode, "--out", out)
    assert rc == 1
    assert_one_error_line(err, "cluster_7")


# ---------------------------------------------------------------- assign


def test_assign_round_trip(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")[0] == 0
    rc, stdout, err = run(capsys, "assign", out / "model.npz", folder, "--out", tmp_path / "a")
    assert rc == 0, err
    fitted = {r["path"]: r for r in read_csv(out / "clusters.csv")}
    assigned = read_csv(tmp_path / "a" / "assignments.csv")
    assert list(assigned[0]) == ["path", "cluster", "name", "distance", "anomaly_score", "is_good", "confidence",
                                 "novelty", "new_type", "fitted"]
    assert len(assigned) == N_IMAGES
    for r in assigned:
        assert r["cluster"] == fitted[r["path"]]["cluster"]
        assert r["fitted"] == "1" and r["new_type"] == "0"
        assert float(r["distance"]) == pytest.approx(float(fitted[r["path"]]["distance"]), rel=1e-4)

    # new images of the known types, plus one of an unseen type
    new = tmp_path / "new"
    new.mkdir()
    rng = np.random.default_rng(99)
    for cls in CLASSES:
        draw_image(cls, rng).save(new / f"{cls}.png")
    odd = Image.new("RGB", (64, 64), (128, 128, 128))
    ImageDraw.Draw(odd).rectangle([0, 0, 63, 40], fill=(250, 250, 20))
    odd.save(new / "zz_unseen.png")
    rc, stdout, err = run(capsys, "assign", out / "model.npz", new)
    assert rc == 0, err
    rows = {r["path"]: r for r in read_csv(tmp_path / "new_assignments" / "assignments.csv")}
    cluster_of = {r["label"]: r["cluster"] for r in fitted.values()}
    for cls in CLASSES:
        assert rows[f"{cls}.png"]["cluster"] == cluster_of[cls]
        assert rows[f"{cls}.png"]["fitted"] == "0"
    assert rows["zz_unseen.png"]["new_type"] == "1"
    assert "possibly of a new type" in stdout
    page = parse_report(tmp_path / "new_assignments" / "report.html")
    assert page.data["command"] == "assign" and page.data["k_fit"] == 3
    assert page.data["new_type"][page.data["paths"].index("zz_unseen.png")] == 1
    assert sorted(page.data["paths"]) == sorted(rows)
    # heat maps of assigned images are drawn on the fit's scale, recorded in model.npz
    assert page.data["heat"]["range"] == parse_report(out / "report.html").data["heat"]["range"]
    assert page.data["map"] is not None and len(page.data["neighbours"]) == len(rows)


def test_assign_errors(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--out", out, "-q")[0] == 0
    other = make_onnx(tmp_path / "other.onnx", seed=1)
    rc, _, err = run(capsys, "assign", out / "model.npz", folder, "--model", other, "--out", tmp_path / "a")
    assert rc == 1
    assert_one_error_line(err, "not the one", "--model")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    rc, _, err = run(capsys, "assign", bad, folder, "--out", tmp_path / "a")
    assert rc == 1
    assert_one_error_line(err, "corrupt or from an incompatible version")
    rc, _, err = run(capsys, "assign", tmp_path / "missing.npz", folder, "--out", tmp_path / "a")
    assert rc == 1
    assert_one_error_line(err, "missing.npz")
    plain = tmp_path / "plain.npz"
    AnomalyClusterer.load(out / "model.npz").save(plain, metadata={})
    rc, _, err = run(capsys, "assign", plain, folder, "--out", tmp_path / "a")
    assert rc == 1
    assert_one_error_line(err, "feature extractor")
    rc, _, err = run(capsys, "assign", out / "model.npz", folder, "--out", folder / "inside")
    assert rc == 1
    assert_one_error_line(err, "inside")
    rc, _, _ = run(capsys, "assign", out / "model.npz")
    assert rc == 2


# ---------------------------------------------------------------- errors


def test_missing_and_empty_and_single_image_folders(capsys, model_path: Path, tmp_path: Path) -> None:
    rc, _, err = run(capsys, tmp_path / "nope", *model_args(model_path))
    assert rc == 1
    assert_one_error_line(err, "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    rc, _, err = run(capsys, empty, *model_args(model_path))
    assert rc == 1
    assert_one_error_line(err, "no images found")
    one = tmp_path / "one"
    one.mkdir()
    Image.new("RGB", (64, 64)).save(one / "a.png")
    rc, _, err = run(capsys, one, *model_args(model_path))
    assert rc == 1
    assert_one_error_line(err, "need at least 2 images", "found 1")
    assert not (tmp_path / "one_clusters").exists()  # nothing made before the checks
    afile = tmp_path / "file.png"
    Image.new("RGB", (8, 8)).save(afile)
    rc, _, err = run(capsys, afile, *model_args(model_path))
    assert rc == 1
    assert_one_error_line(err, "not a folder")


def test_k_larger_than_n(capsys, base_folder: Path, model_path: Path, tmp_path: Path) -> None:
    rc, _, err = run(capsys, base_folder, *model_args(model_path), "--k", str(N_IMAGES + 1), "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, f"--k {N_IMAGES + 1}", str(N_IMAGES))


@pytest.mark.parametrize(
    "argv",
    [["--k", "0"], ["--k", "x"], ["--k-max", "1"], ["--method", "dbscan"], ["--tau", "-1"], ["--crop", "-3"],
     ["--bogus"], [], ["--new-type-rate", "1"], ["--good-rate", "0"], ["--new-type-rate", "5%"]],
)
def test_usage_errors_exit_2(capsys, base_folder: Path, argv: List[str]) -> None:
    args = ([str(base_folder)] if argv else []) + argv
    assert main(args) == 2
    _, err = capsys.readouterr()
    assert "usage:" in err


def test_out_inside_folder_is_refused(capsys, base_folder: Path, model_path: Path) -> None:
    rc, _, err = run(capsys, base_folder, *model_args(model_path), "--out", base_folder / "good" / "res")
    assert rc == 1
    assert_one_error_line(err, "inside the image folder")
    assert not (base_folder / "good" / "res").exists()


def test_unwritable_out(capsys, base_folder: Path, model_path: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, _, err = run(capsys, base_folder, *model_args(model_path), "--out", blocker / "out")
    assert rc == 1
    assert_one_error_line(err, "cannot write to output folder")


def test_read_only_out(capsys, base_folder: Path, model_path: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions")
        rc, _, err = run(capsys, base_folder, *model_args(model_path), "--out", ro)
        assert rc == 1
        assert_one_error_line(err, "cannot write to output folder")
    finally:
        ro.chmod(0o700)


def test_missing_model_is_a_user_error(capsys, base_folder: Path, tmp_path: Path) -> None:
    rc, _, err = run(capsys, base_folder, "--model", tmp_path / "none.onnx", "--out", tmp_path / "o")
    assert rc == 1
    assert_one_error_line(err, "none.onnx")
    assert not (tmp_path / "o").exists()  # failed before making anything


def test_keyboard_interrupt_exits_130_and_keeps_the_cache(capsys, folder: Path, model_path: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(AnomalyClusterer, "fit", interrupted)
    out = tmp_path / "o"
    rc, _, err = run(capsys, folder, *model_args(model_path), "--out", out, "--cache-dir", tmp_path / "cache")
    assert rc == 130 and "interrupted" in err
    assert any((tmp_path / "cache" / "features").rglob("*.npy"))
    assert no_temporary_files(out)


def test_a_folder_named_assign(capsys, base_folder: Path, model_path: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(base_folder, tmp_path / "assign")
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "./assign", *model_args(model_path), "--k", "3", "-q")
    assert rc == 0, err
    assert (tmp_path / "assign_clusters" / "clusters.csv").is_file()


def test_two_images_with_automatic_k_give_one_cluster(capsys, base_folder: Path, model_path: Path,
                                                       tmp_path: Path) -> None:
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(base_folder / "good" / "000.png", two / "a.png")
    shutil.copy(base_folder / "red_spot" / "000.png", two / "b.png")
    rc, stdout, err = run(capsys, two, *model_args(model_path), "-q")
    assert rc == 0, err
    summary = json.loads((tmp_path / "two_clusters" / "summary.json").read_text())
    assert (summary["k"], summary["k_choice"]["method"]) == (1, "too-few-images")
    assert "too few images" in stdout
    assert run(capsys, two, *model_args(model_path), "--k", "2", "-q")[0] == 0


# ---------------------------------------------------------------- library layer


class FakeExtractor:
    """Anything with the Extractor interface works: bags from the mean colour of 16 tiles."""

    model_path = "fake.onnx"
    model_hash = "0" * 64
    output = "fake"
    resize, crop, pool = 64, 64, None
    settings = {"model_sha256": model_hash, "output": output, "resize": resize, "crop": crop, "pool": pool}
    grid = (4, 4)
    dim = 3

    def extract_all(self, paths, *, on_error="skip", progress=None):  # type: ignore[no-untyped-def]
        bags = []
        for p in paths:
            x = np.asarray(Image.open(p).convert("RGB").resize((64, 64)), dtype=np.float64) / 255.0 + 0.01
            tiles = x.reshape(4, 16, 4, 16, 3).mean(axis=(1, 3)).reshape(16, 3)
            bags.append(tiles / np.linalg.norm(tiles, axis=1, keepdims=True))
        if progress is not None:
            progress(len(paths), len(paths))
        return argparse.Namespace(bags=np.asarray(bags, dtype=np.float32), paths=list(paths), failures=[],
                                  cache_hits=0, computed=len(paths), timings={})

    def describe(self) -> dict:
        return {"model": "fake"}


def test_run_clustering_with_an_injected_extractor(capsys, base_folder: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args([str(base_folder), "--k", "3", "--out", str(tmp_path / "o"), "-q"])
    summary = run_clustering(args, extractor_factory=lambda options, cache_dir: FakeExtractor())
    assert summary["k"] == 3 and summary["n_images"] == N_IMAGES
    assert summary["metrics"]["nmi"] > 0.5
    assert (tmp_path / "o" / "report.html").is_file()


def test_collect_images_and_folder_labels(base_folder: Path) -> None:
    images = collect_images(base_folder)
    assert len(images.paths) == N_IMAGES and images.excluded == []
    labels = folder_labels(images.paths, base_folder)
    assert labels is not None and sorted(set(labels)) == sorted(CLASSES)
    assert folder_labels(images.paths[:PER_CLASS], base_folder) is None  # one class only


def test_no_model_uses_the_embedded_backbone_offline(capsys, base_folder: Path, tmp_path: Path, monkeypatch) -> None:
    """Issue 15: with no --model and an empty user cache, the built-in backbone runs; nothing is downloaded."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the run tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("ANOMCLUST_MODEL", raising=False)
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "empty-cache"))
    out = tmp_path / "out"
    code, stdout, err = run(capsys, base_folder, "--out", out, "--k", "3", "--resize", "64", "--crop", "64")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["backbone"]["name"] == "resnet50v2" and "resnet50-v2-7" in summary["backbone"]["origin"]
    assert summary["extractor"]["dim"] == 512 and summary["extractor"]["pooling_in_graph"] is True
    assert "backbone: resnet50v2" in err + stdout
    assert "resnet50v2" in (out / "report.html").read_text(encoding="utf-8")
    made = sorted(p.name if p.is_dir() else p.suffix for p in (tmp_path / "empty-cache").iterdir())
    assert made == [".onnx", "data"]  # the backbone and the runs' cache folder


def test_named_backbone_not_built_is_one_clear_line(capsys, folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "empty-cache"))
    code, _, err = run(capsys, folder, "--out", tmp_path / "out", "--backbone", "wrn50")
    assert code == 1
    assert_one_error_line(err, "anomclust-lite backbones build wrn50")
    code, _, err = run(capsys, folder, "--out", tmp_path / "out", "--backbone", "nope")
    assert code == 1
    assert_one_error_line(err, "no backbone named 'nope'", "anomclust-lite backbones")
    code, _, err = run(capsys, folder, "--backbone", "wrn50", "--model", "m.onnx")
    assert code == 2 and "not allowed with" in err


def test_name_command_sets_names_in_the_model_and_the_csv(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--labels", "none", "--out", out, "-q")[0] == 0
    assert {r["name"] for r in read_csv(out / "clusters.csv")} == {""}  # no labels: no names yet
    rc, stdout, err = run(capsys, "name", out, "0=scratch", "2=crack")
    assert rc == 0, err
    assert "0=scratch" in stdout and "1=-" in stdout
    rows = read_csv(out / "clusters.csv")
    assert {r["name"] for r in rows if r["cluster"] == "0"} == {"scratch"}
    assert {r["name"] for r in rows if r["cluster"] == "1"} == {""}
    assert AnomalyClusterer.load(out / "model.npz").metadata_["cluster_names"] == {"0": "scratch", "2": "crack"}
    rc, _, err = run(capsys, "assign", out / "model.npz", folder, "--out", tmp_path / "a", "-q")
    assert rc == 0, err
    assigned = read_csv(tmp_path / "a" / "assignments.csv")
    assert {r["name"] for r in assigned if r["cluster"] == "2"} == {"crack"}
    for bad in (["7=x"], ["x"], ["1=a,b"]):
        rc, _, err = run(capsys, "name", out, *bad)
        assert rc == 1 and err.startswith("anomclust-lite: error:")
    assert run(capsys, "name", out)[0] == 2  # no ID=NAME: usage error
    assert run(capsys, "name", tmp_path / "nowhere", "0=a")[0] == 1


def test_a_later_fit_takes_the_names_of_a_review(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    from anomclust_lite.report.review import Review, ReviewImage, write_review

    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--labels", "none", "--out", tmp_path / "o", "-q")[0] == 0
    first = read_csv(tmp_path / "o" / "clusters.csv")
    images = tuple(ReviewImage(r["path"], int(r["cluster"])) for r in first)
    write_review(tmp_path / "review.csv", Review(3, {0: "scratch", 1: "dent", 2: "crack"}, images))
    rc, stdout, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--labels", "none", "--seed", "7",
                          "--review", tmp_path / "review.csv", "--out", tmp_path / "again")
    assert rc == 0, err
    assert "names from the review: " in err
    named = {r["path"]: r["name"] for r in read_csv(tmp_path / "again" / "clusters.csv")}
    given = {0: "scratch", 1: "dent", 2: "crack"}
    assert named == {r["path"]: given[int(r["cluster"])] for r in first}  # same grouping, same names
    stored = AnomalyClusterer.load(tmp_path / "again" / "model.npz").metadata_["cluster_names"]
    assert sorted(stored.values()) == ["crack", "dent", "scratch"]
    write_review(tmp_path / "other.csv", Review(1, {0: "x"}, (ReviewImage("elsewhere.png", 0),)))
    rc, _, err = run(capsys, folder, *model_args(model_path), "--review", tmp_path / "other.csv", "--out", tmp_path / "x")
    assert rc == 1 and "names none of this run's images" in err and not (tmp_path / "x").exists()


def test_name_command_reads_the_reports_review(capsys, folder: Path, model_path: Path, tmp_path: Path) -> None:
    from anomclust_lite.report import read_review
    from anomclust_lite.report.review import Review, ReviewImage, write_review

    out = tmp_path / "o"
    assert run(capsys, folder, *model_args(model_path), "--k", "3", "--labels", "none", "--out", out, "-q")[0] == 0
    rows = read_csv(out / "clusters.csv")
    images = tuple(ReviewImage(r["path"], int(r["cluster"])) for r in rows)
    moved = next(r["path"] for r in rows if r["cluster"] == "0")  # a move by hand: one image, not a majority
    images = tuple(ReviewImage(im.path, 1, moved=True) if im.path == moved else im for im in images)
    write_review(tmp_path / "review.json", Review(3, {0: "scratch", 1: "=dent"}, images))
    rc, stdout, err = run(capsys, "name", out, "--review", tmp_path / "review.json", "2=crack")
    assert rc == 0, err
    stored = AnomalyClusterer.load(out / "model.npz").metadata_["cluster_names"]
    n0 = sum(r["cluster"] == "0" for r in rows)
    assert stored == ({"0": "scratch", "1": "=dent", "2": "crack"} if n0 > 2 else {"1": "=dent", "2": "crack"})
    after = read_csv(out / "clusters.csv")
    assert {r["name"] for r in after if r["cluster"] == "1"} == {"'=dent"}  # kept safe for spreadsheets
    write_review(tmp_path / "review.csv", read_review(tmp_path / "review.json"))
    assert run(capsys, "name", out, "--review", tmp_path / "review.csv", "-q")[0] == 0
    write_review(tmp_path / "other.csv", Review(1, {0: "x"}, (ReviewImage("elsewhere.png", 0),)))
    rc, _, err = run(capsys, "name", out, "--review", tmp_path / "other.csv")
    assert rc == 1 and "names none of this run's images" in err
    assert run(capsys, "name", out, "--review", tmp_path / "missing.csv")[0] == 1


def test_weak_clustering_is_warned_and_recorded(capsys, monkeypatch, folder: Path, model_path: Path,
                                                tmp_path: Path) -> None:
    from anomclust_lite.estimator import trust

    with monkeypatch.context() as m:
        m.setattr(trust, "WEAK_MEAN_CONFIDENCE", 1.01)  # every clustering falls below it
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "w")
    summary = json.loads((tmp_path / "w" / "summary.json").read_text())
    assert rc == 0 and summary["weak"] and "weak clustering: mean confidence" in err
    assert "try another K or --normal)" in err
    normal = make_normal_folder(tmp_path / "normal", 4, seed=0)
    with monkeypatch.context() as m:
        m.setattr(trust, "WEAK_MEAN_CONFIDENCE", 1.01)
        rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--normal", normal, "--out", tmp_path / "n")
    assert rc == 0 and "try another K)" in err  # --normal was given: not suggested again
    assert 0 <= summary["confidence"]["mean"] <= 1 and len(summary["confidence"]["cohesion"]) == 3
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "3", "--out", tmp_path / "s")
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["weak"] == [] and "weak clustering" not in err
