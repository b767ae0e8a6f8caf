"""The library refuses what the command line refuses (issue 14): one memory check, one thread cap.

``Extractor(memory_mb=...)`` checks the model-input batch before the model is
opened and one image pair's scoring once the patch grid is known (the checks
of ``--memory-mb``); ``n_threads`` / ``threads`` are capped at
``THREADS_PER_CPU_MAX`` per usable CPU, as ``--threads`` is.
"""

from __future__ import annotations

import numpy as np
import pytest

from anomclust_lite import AnomalyClusterer
from anomclust_lite.core.defaults import THREADS_PER_CPU_MAX
from anomclust_lite.core.kernel import available_cpus, pair_bytes
from anomclust_lite.core.validation import check_n_threads
from anomclust_lite.features import extractor as extractor_module
from anomclust_lite.features.memory import check_input_batch, check_patch_grid

TOO_MANY = THREADS_PER_CPU_MAX * available_cpus() + 1


def _must_not_open(*args, **kwargs):
    raise AssertionError("the model was opened")


def test_extractor_refuses_a_huge_input_batch_before_opening_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(extractor_module, "BackboneSession", _must_not_open)
    monkeypatch.setattr(extractor_module, "resolve_backbone", _must_not_open)
    with pytest.raises(ValueError, match="batch of 8 model inputs of 7416 MiB.*memory_mb"):
        extractor_module.Extractor(tmp_path / "m.onnx", resize=9000, crop=9000)
    with pytest.raises(ValueError, match="batch of 2 model inputs"):
        extractor_module.Extractor(tmp_path / "m.onnx", resize=4000, crop=None, batch_size=2, memory_mb=100)


def test_extractor_refuses_a_patch_grid_over_the_budget(tmp_path):
    pytest.importorskip("onnxruntime")
    from _tiny_onnx import make_model

    model = make_model(tmp_path / "m.onnx")  # 32x32 -> 4x4 patches of 4 dims
    budget = pair_bytes(16, 4) / 2**20
    assert extractor_module.Extractor(model, resize=32, crop=32, memory_mb=budget).grid == (4, 4)
    with pytest.raises(ValueError, match="4x4 = 16 patches of 4 dims .* scoring one image pair"):
        extractor_module.Extractor(model, resize=32, crop=32, memory_mb=budget * 0.99)


@pytest.mark.parametrize("resize,crop", [(256, 224), (1000, None), (64, 8)])
def test_input_batch_check_is_exactly_the_byte_count(resize, crop):
    side = crop or resize
    need_mb = 8 * 3 * side * side * 4 / 2**20
    check_input_batch(resize, crop, 8, max(need_mb, 64))
    if need_mb > 64:
        with pytest.raises(ValueError):
            check_input_batch(resize, crop, 8, need_mb * 0.999)


def test_patch_grid_check_is_exactly_one_pair():
    need_mb = pair_bytes(28 * 28, 512) / 2**20
    check_patch_grid(256, 224, (28, 28), 512, need_mb)
    with pytest.raises(ValueError, match="--memory-mb"):
        check_patch_grid(256, 224, (28, 28), 512, need_mb * 0.999)


def test_thread_cap_is_one_rule_for_estimator_extractor_and_kernels(tmp_path):
    assert check_n_threads(THREADS_PER_CPU_MAX * available_cpus()) == THREADS_PER_CPU_MAX * available_cpus()
    bags = np.random.default_rng(0).normal(size=(6, 4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=f"n_threads is {TOO_MANY}, more than {THREADS_PER_CPU_MAX} per CPU"):
        AnomalyClusterer(2, n_threads=TOO_MANY).fit(bags)
    with pytest.raises(ValueError, match=f"threads is {TOO_MANY}, more than"):
        extractor_module.Extractor(tmp_path / "m.onnx", threads=TOO_MANY)


def test_cli_threads_use_the_same_cap(capsys):
    from anomclust_lite.cli.main import main

    assert main(["some_folder", "--threads", str(TOO_MANY)]) == 2
    assert f"--threads is {TOO_MANY}, more than {THREADS_PER_CPU_MAX} per CPU" in capsys.readouterr().err
