"""``anomclust-lite backbones`` (list, build wrn50), issue 19, and running without the ``onnx`` package."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _cli_support import fixture_base_folder  # noqa: F401 (fixture)
from _cli_support import assert_one_error_line, run
from _torch_writer import save_zip
from anomclust_lite.backbones.wrn50 import export as wrn50_export
from anomclust_lite.backbones.wrn50 import random_wrn50_state_dict
from anomclust_lite.cli.backbones import _progress
from conftest import REPO_ROOT

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ANOMCLUST_MODEL", raising=False)
    monkeypatch.setenv("ANOMCLUST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch checkpoint of randomly initialised WRN-50-2 weights (not torchvision's: unverified)."""
    return save_zip(random_wrn50_state_dict(seed=3), tmp_path_factory.mktemp("ckpt") / "mine.pth")


@pytest.fixture
def pretend_verified(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``checkpoint`` pass as torchvision's: the published prefix becomes its own digest's."""
    prefix = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]
    monkeypatch.setattr(wrn50_export, "WRN50_SHA256_PREFIX", prefix)
    monkeypatch.setattr(wrn50_export, "verify_checkpoint",
                        functools.partial(wrn50_export.verify_checkpoint, sha256_prefix=prefix))
    return checkpoint


def test_list_on_an_empty_cache(capsys: pytest.CaptureFixture, private_cache: Path) -> None:
    code, out, err = run(capsys, "backbones")
    assert code == 0, err
    assert not private_cache.exists() or not any(private_cache.rglob("*"))  # listing writes nothing
    assert "resnet50v2 (default): ready" in out and "resnet50-v2-7" in out
    assert "(written there from the package at first use)" in out
    assert "wrn50: not built" in out and "anomclust-lite backbones build wrn50" in out
    assert "--model PATH.onnx" in out
    assert run(capsys, "backbones", "list")[1] == out


def test_unverified_export_never_changes_the_default(capsys: pytest.CaptureFixture, checkpoint: Path,
                                                      base_folder: Path, tmp_path: Path) -> None:
    """Issue 19: an --allow-unverified build goes to --out or --name only; runs without --model are unchanged."""
    code, _, err = run(capsys, "backbones", "build", "wrn50", "--checkpoint", checkpoint)
    assert code == 1 and "95faca4d" in err and "--allow-unverified" in err
    code, _, err = run(capsys, "backbones", "build", "wrn50", "--checkpoint", checkpoint, "--allow-unverified")
    assert code == 1
    assert_one_error_line(err, "--name NAME", "--out PATH.onnx")
    code, _, err = run(capsys, "backbones", "build", "wrn50", "--checkpoint", checkpoint, "--allow-unverified",
                       "--name", "wrn50")
    assert code == 1
    assert_one_error_line(err, "cannot become the default 'wrn50'")
    out_file = tmp_path / "mine.onnx"
    code, out, err = run(capsys, "backbones", "build", "wrn50", "--checkpoint", checkpoint, "--allow-unverified",
                         "--out", out_file, "--name", "mine", "-q")
    assert code == 0, err
    assert out_file.is_file() and "--backbone mine" in out and "NOT verified" in out
    code, listing, _ = run(capsys, "backbones")
    assert "mine: ready" in listing and "checksum NOT verified" in listing and "wrn50: not built" in listing
    # A later run without --model still uses the embedded backbone ...
    code, _, err = run(capsys, base_folder, "--k", "2", "--resize", "64", "--crop", "64", "--out", tmp_path / "a", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["backbone"]["name"] == "resnet50v2"
    # ... and --backbone mine uses the unverified model, saying so.
    code, _, err = run(capsys, base_folder, "--k", "2", "--resize", "64", "--crop", "64", "--backbone", "mine",
                       "--out", tmp_path / "b")
    assert code == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["backbone"]["name"] == "mine" and summary["backbone"]["verified"] is False
    assert "NOT verified" in err


def test_verified_checkpoint_becomes_wrn50(capsys: pytest.CaptureFixture, pretend_verified: Path,
                                           private_cache: Path) -> None:
    code, out, err = run(capsys, "backbones", "build", "wrn50", "--checkpoint", pretend_verified, "-q")
    assert code == 0, err
    assert "checksum verified" in out and "--backbone wrn50" in out
    record = json.loads((private_cache / "backbones" / "wrn50.json").read_text())
    assert record["verified"] is True and record["source_sha256"].startswith(wrn50_export.WRN50_SHA256_PREFIX)
    assert "wrn50: ready" in run(capsys, "backbones")[1]
    # Tampering with the cached model: not used, with a warning and the command that rebuilds it.
    model = private_cache / "backbones" / "wrn50.onnx"
    model.write_bytes(model.read_bytes()[:-4] + b"\0\0\0\0")
    assert "wrn50: not usable: the model file does not match" in run(capsys, "backbones")[1]


def test_export_tool_keeps_working(pretend_verified: Path, private_cache: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import export_wrn50 as tool  # tools/ is on the test path
    assert tool.main(["--checkpoint", str(pretend_verified), "--out", str(tmp_path / "w.onnx")]) == 0
    assert "cached as backbone 'wrn50'" in capsys.readouterr().out
    assert (tmp_path / "w.onnx").read_bytes() == (private_cache / "backbones" / "wrn50.onnx").read_bytes()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert run(capsys, "backbones", "build")[0] == 2
    assert run(capsys, "backbones", "build", "resnet18")[0] == 2
    assert run(capsys, "backbones", "bogus")[0] == 2
    assert run(capsys, "backbones", "--help")[0] == 0


def test_download_progress_lines(capsys: pytest.CaptureFixture) -> None:
    progress = _progress(quiet=False)
    for done in range(0, 40 << 20, 1 << 20):
        progress(done, 40 << 20)
    progress(40 << 20, 40 << 20)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("0 of 40 MB") and lines[-1].endswith("40 of 40 MB")
    assert len(lines) <= 5  # every 16 MB, plus the end
    _progress(quiet=True)(1 << 20, None)
    assert capsys.readouterr().err == ""


_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == {blocked!r} or name.startswith({blocked!r} + "."):
            raise ImportError("blocked for this test: " + name)
sys.meta_path.insert(0, Block())
from anomclust_lite.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _cli_without(blocked: str, *argv: object, cache: Path) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               ANOMCLUST_CACHE=str(cache))
    env.pop("ANOMCLUST_MODEL", None)
    return subprocess.run([sys.executable, "-c", _BLOCK.format(blocked=blocked), *map(str, argv)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_default_run_and_build_need_no_onnx_package(base_folder: Path, checkpoint: Path, tmp_path: Path) -> None:
    """Issue 15: the embedded backbone and the WRN-50 build work in what `.[onnx]` installs (no `onnx`)."""
    proc = _cli_without("onnx", base_folder, "--k", "2", "--resize", "64", "--crop", "64", "--out", tmp_path / "o",
                        "-q", cache=tmp_path / "empty-cache")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "clusters.csv").is_file()
    proc = _cli_without("onnx", "backbones", "build", "wrn50", "--checkpoint", checkpoint, "--allow-unverified",
                        "--name", "mine", "-q", cache=tmp_path / "empty-cache")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "empty-cache" / "backbones" / "mine.onnx").is_file()


@pytest.mark.parametrize("backbone", [None, "wrn50"])
def test_assign_finds_the_fits_backbone_by_name(capsys: pytest.CaptureFixture, base_folder: Path,
                                                pretend_verified: Path, tmp_path: Path, backbone) -> None:
    """A model fitted with a named backbone (the default or a built one) is assigned with the same one, by name."""
    if backbone is not None:
        assert run(capsys, "backbones", "build", "wrn50", "--checkpoint", pretend_verified, "-q")[0] == 0
    chosen = [] if backbone is None else ["--backbone", backbone]
    rc, _, err = run(capsys, base_folder, *chosen, "--k", "2", "--resize", "64", "--crop", "64",
                     "--out", tmp_path / "o", "-q")
    assert rc == 0, err
    record = json.loads((tmp_path / "o" / "summary.json").read_text())["extractor"]
    assert record["backbone"]["name"] == (backbone or "resnet50v2")
    # assign is given no model: it finds the backbone by name and checks its bytes against the recorded SHA-256
    rc, _, err = run(capsys, "assign", tmp_path / "o" / "model.npz", base_folder, "--out", tmp_path / "a", "-q")
    assert rc == 0, err
    assert (tmp_path / "a" / "assignments.csv").is_file()
    if backbone is not None:  # the built backbone removed from the cache: one line naming the command to rebuild it
        for onnx in (tmp_path / "cache" / "backbones").glob("*.onnx"):
            onnx.unlink()
        rc, _, err = run(capsys, "assign", tmp_path / "o" / "model.npz", base_folder, "--out", tmp_path / "b", "-q")
        assert rc == 1
        assert_one_error_line(err, "backbones build wrn50")


def test_missing_onnxruntime_is_one_line(base_folder: Path, tmp_path: Path) -> None:
    proc = _cli_without("onnxruntime", base_folder, "--k", "2", "--out", tmp_path / "o", cache=tmp_path / "c")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        'anomclust-lite: error: feature extraction needs onnxruntime: pip install "anomclust_lite[onnx]"'
    )
