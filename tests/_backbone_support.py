"""Helpers for the backbone tests: random ResNet-50 v2 weights, real images, relative error."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np

from anomclust_lite.backbones.resnet50v2 import resnet50v2_layer2_shapes


def random_weights(seed: int = 0) -> Dict[str, np.ndarray]:
    """He-initialised kernels and non-trivial BatchNorm statistics, float32."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in resnet50v2_layer2_shapes().items():
        if len(shape) == 4:
            arr = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key.endswith("running_var"):
            arr = rng.uniform(0.5, 2.0, shape)
        elif key.endswith("gamma"):
            arr = rng.uniform(0.5, 1.5, shape)
        else:
            arr = rng.normal(0.0, 0.2, shape)
        out[key] = arr.astype(np.float32)
    return out


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """Largest per-image ||got - want|| / ||want||."""
    diff = (got - want).reshape(len(want), -1)
    return float((np.linalg.norm(diff, axis=1) / np.linalg.norm(want.reshape(len(want), -1), axis=1)).max())


def real_images(shared_dir: Path, n_per_set: int = 3) -> np.ndarray:
    """A few MVTec and MTD images, preprocessed as the extractor does (resize 256, crop 224)."""
    from anomclust_lite.features.images import load_image
    from anomclust_lite.features.preprocess import preprocess

    data = shared_dir / "data"
    files = []
    for pattern in ("mvtec/bottle/test/*/*.png", "mvtec/pill/test/*/*.png", "mtd/*/Imgs/*.jpg"):
        files += sorted(data.glob(pattern))[:: 37][:n_per_set]
    return np.stack([preprocess(load_image(f)) for f in files]).astype(np.float32)
