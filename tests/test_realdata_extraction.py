"""Extraction with the real int8 ResNet-18 on MVTec bottle (../shared; skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anomclust_lite.features.extractor import Extractor
from anomclust_lite.features.images import load_image
from anomclust_lite.features.listing import find_images
from anomclust_lite.features.preprocess import preprocess

pytestmark = pytest.mark.realdata

OUTPUT = "relu_43"


@pytest.fixture(scope="module")
def bottle_test(shared_dir: Path) -> "list[Path]":
    folder = shared_dir / "data" / "mvtec" / "bottle" / "test"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    listing = find_images(folder)
    assert listing.problems == []
    return listing.paths


def test_four_bottle_images(shared_model: Path, bottle_test: "list[Path]", tmp_path: Path) -> None:
    paths = bottle_test[::20][:4]
    ext = Extractor(shared_model, output=OUTPUT)
    assert ext.grid == (28, 28) and ext.dim == 128
    bags = ext.extract(paths)
    assert bags.shape == (4, 784, 128) and bags.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bags.astype(np.float64), axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(bags, Extractor(shared_model, output=OUTPUT).extract(paths))  # deterministic

    # Independent reference for the first image: plain onnxruntime + loop pooling.
    import onnxruntime as ort

    session = ort.InferenceSession(str(shared_model), providers=["CPUExecutionProvider"])
    x = preprocess(load_image(paths[0]))[None]
    (fmap,) = session.run([OUTPUT], {session.get_inputs()[0].name: x})
    fmap = fmap[0].astype(np.float64)
    padded = np.pad(fmap, ((0, 0), (1, 1), (1, 1)))
    pooled = sum(padded[:, i : i + 28, j : j + 28] for i in range(3) for j in range(3)) / 9.0
    ref = pooled.reshape(128, 784).T
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(bags[0], ref, atol=1e-5)

    # The cache returns the same bags.
    cached = Extractor(shared_model, output=OUTPUT, cache_dir=tmp_path)
    first = cached.extract_all(paths)
    second = cached.extract_all(paths)
    assert second.cache_hits == 4 and second.computed == 0
    np.testing.assert_array_equal(first.bags, bags)
    np.testing.assert_array_equal(second.bags, bags)


@pytest.mark.slow
def test_bottle_unsupervised_wa_ward_nmi(shared_model: Path, bottle_test: "list[Path]") -> None:
    """Issue integration test: bottle/test (good included, 83 images, K=4), unsupervised WA + Ward."""
    from anomclust_lite.clustering.dispatch import cluster
    from anomclust_lite.core.distances import wa_distances
    from anomclust_lite.metrics import nmi
    from anomclust_lite.core.scores import patch_scores
    from anomclust_lite.core.weights import soft_weights

    assert len(bottle_test) == 83
    labels = [p.parent.name for p in bottle_test]
    assert sorted(set(labels)) == ["broken_large", "broken_small", "contamination", "good"]
    result = Extractor(shared_model, output=OUTPUT).extract_all(bottle_test, on_error="raise")
    assert result.bags.shape == (83, 784, 128) and result.paths == bottle_test
    scores = patch_scores(result.bags)
    # tau = 0.05 (the default, DEFAULT_TAU_UNSUPERVISED) gives NMI 0.488 here; 0.1 gives 0.498.
    weights = soft_weights(scores, 0.05)
    pred = cluster(wa_distances(result.bags, weights), 4, method="ward", metric="precomputed")
    assert nmi(labels, pred) >= 0.40
