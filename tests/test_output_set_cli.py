"""The output set through the command line (issue 14): one kind of output per folder, readers check the manifest."""

from __future__ import annotations

from pathlib import Path

from _cli_support import fixture_base_folder, fixture_folder, fixture_model_path  # noqa: F401 (fixtures)
from _cli_support import assert_one_error_line, model_args, run

from anomclust_lite.cli.output_set import MANIFEST_NAME, read_manifest


def _fit(capsys, folder: Path, model_path: Path, out: Path, k: int = 3) -> None:
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", k, "--out", out, "-q")
    assert rc == 0, err


def test_assign_out_on_a_fit_folder_is_refused_before_any_work(capsys, folder, model_path, tmp_path):
    out = tmp_path / "fit"
    _fit(capsys, folder, model_path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    rc, _, err = run(capsys, "assign", out / "model.npz", folder, "--out", out, "-q")
    assert rc == 1
    assert_one_error_line(err, "holds the outputs of the cluster command", "choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_fit_out_on_an_assign_folder_is_refused(capsys, folder, model_path, tmp_path):
    fit, assigned = tmp_path / "fit", tmp_path / "assigned"
    _fit(capsys, folder, model_path, fit)
    rc, _, err = run(capsys, "assign", fit / "model.npz", folder, "--out", assigned, "-q")
    assert rc == 0, err
    assert read_manifest(assigned)["command"] == "assign"
    assert sorted(read_manifest(assigned)["files"]) == ["assignments.csv", "report.html"]
    rc, _, err = run(capsys, folder, *model_args(model_path), "--k", "2", "--out", assigned, "-q")
    assert rc == 1
    assert_one_error_line(err, "holds the outputs of the assign command")


def test_readers_refuse_a_model_that_is_not_the_one_the_run_wrote(capsys, folder, model_path, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _fit(capsys, folder, model_path, first, k=3)
    _fit(capsys, folder, model_path, second, k=2)
    (first / "model.npz").write_bytes((second / "model.npz").read_bytes())  # a mix: K=2 model beside K=3 files
    rc, _, err = run(capsys, "assign", first / "model.npz", folder, "--out", tmp_path / "a", "-q")
    assert rc == 1
    assert_one_error_line(err, "model.npz is not the file its run wrote", MANIFEST_NAME)
    rc, _, err = run(capsys, "name", first, "0=x")
    assert rc == 1
    assert_one_error_line(err, "model.npz is not the file its run wrote")


def test_name_replaces_model_and_table_together_and_keeps_the_rest(capsys, folder, model_path, tmp_path):
    out = tmp_path / "fit"
    _fit(capsys, folder, model_path, out)
    report = (out / "report.html").read_bytes()
    rc, _, err = run(capsys, "name", out, "1=scratch")
    assert rc == 0, err
    manifest = read_manifest(out)
    assert manifest["command"] == "cluster" and sorted(manifest["files"]) == sorted(
        ["clusters.csv", "model.npz", "report.html", "summary.json"])
    assert (out / "report.html").read_bytes() == report
    assert ",scratch," in (out / "clusters.csv").read_text()
    rc, _, err = run(capsys, "assign", out / "model.npz", folder, "--out", tmp_path / "a", "-q")
    assert rc == 0, err  # the renamed model still matches the manifest
