"""Tests of the HTML report, its charts and the weight heat maps."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image
from scipy.cluster.hierarchy import linkage

from anomclust_lite.clustering.auto_k import cut_linkage
from anomclust_lite.features.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess
from anomclust_lite.report.charts import cluster_colour, cluster_size_chart, dendrogram_image
from anomclust_lite.report.heatmap import colormap, default_heat_range, heat_levels, model_view, overlay_weights
from anomclust_lite.report.thumbs import image_data_uri



def decode_uri(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/jpeg;base64", "data:image/webp;base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ---------------------------------------------------------------- heat maps


def test_colormap_endpoints_shape_and_clipping() -> None:
    c = colormap(np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]]))
    assert c.shape == (1, 5, 3) and c.dtype == np.uint8
    assert c[0, 0].tolist() == c[0, 1].tolist() == [0, 0, 128]
    assert c[0, 3].tolist() == c[0, 4].tolist() == [128, 0, 0]
    assert c[0, 2, 1] > 200  # the middle is green-ish (jet)
    with pytest.raises(ValueError, match="NaN"):
        colormap(np.array([np.nan]))


def test_overlay_leaves_zero_weight_regions_and_colours_the_top() -> None:
    base = Image.new("RGB", (40, 40), (100, 100, 100))
    w = np.zeros((4, 4))
    w[0, 0] = 1.0
    out = np.asarray(overlay_weights(base, w, (4, 4)), dtype=int)
    assert out.shape == (40, 40, 3)
    assert (out[30:, 30:] == 100).all()  # zero weight: the image shows through unchanged
    assert out[2, 2, 0] != 100  # top weight: coloured
    uniform = np.asarray(overlay_weights(base, np.full(16, 1 / 16), (4, 4)))
    assert (uniform == uniform[0, 0]).all()  # uniform weights: a uniform tint


@pytest.mark.parametrize(
    "weights, grid, match",
    [
        (np.ones(15), (4, 4), "weights"),
        (-np.ones(16), (4, 4), "weights"),
        (np.ones(16), (4,), "grid"),
        (np.ones(16), (0, 16), "grid"),
    ],
)
def test_overlay_bad_input(weights: np.ndarray, grid: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        overlay_weights(Image.new("RGB", (8, 8)), weights, grid)


def test_overlay_bad_opacity_and_image() -> None:
    with pytest.raises(ValueError, match="opacity"):
        overlay_weights(Image.new("RGB", (8, 8)), np.ones(4), (2, 2), opacity=1.5)
    with pytest.raises(ValueError, match="image"):
        overlay_weights(np.zeros((8, 8, 3)), np.ones(4), (2, 2))  # type: ignore[arg-type]


@pytest.mark.parametrize("size, resize, crop", [((300, 200), 64, 48), ((120, 250), 50, 50), ((90, 60), 40, None)])
def test_model_view_has_the_geometry_of_preprocess(size: tuple, resize: int, crop: "int | None") -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    view = np.asarray(model_view(image, resize=resize, crop=crop), dtype=np.float64)
    x = preprocess(image, resize=resize, crop=crop).transpose(1, 2, 0).astype(np.float64)
    pixels = (x * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)) * 255.0
    assert view.shape == pixels.shape
    np.testing.assert_allclose(view, pixels, atol=0.01)


def test_model_view_bad_crop() -> None:
    with pytest.raises(ValueError, match="crop"):
        model_view(Image.new("RGB", (8, 8)), resize=8, crop=9)


# ---------------------------------------------------------------- charts


def test_image_data_uri_round_trip() -> None:
    img = Image.new("RGB", (5, 7), (10, 200, 30))
    assert decode_uri(image_data_uri(img, fmt="PNG")).getpixel((2, 3)) == (10, 200, 30)
    assert decode_uri(image_data_uri(img)).size == (5, 7)
    assert decode_uri(image_data_uri(img, fmt="JPEG")).size == (5, 7)
    with pytest.raises(ValueError, match="fmt"):
        image_data_uri(img, fmt="GIF")


def test_dendrogram_draws_cluster_colours_and_truncates() -> None:
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(loc=c, scale=0.1, size=(70, 2)) for c in (0.0, 5.0, 10.0)])
    z = linkage(x, "ward")
    labels = cut_linkage(z, 3)
    img = dendrogram_image(z, labels, k=3, max_leaves=20, size=(600, 300))
    assert img.size == (600, 300)
    colours = {c for _, c in img.getcolors(maxcolors=100_000)}
    for c in range(3):
        assert cluster_colour(c) in colours
    assert (200, 0, 0) in colours  # the cut line


def test_dendrogram_small_and_without_labels() -> None:
    z = linkage(np.array([[0.0], [1.0]]), "ward")
    assert dendrogram_image(z).size == (960, 360)
    assert dendrogram_image(z, np.array([0, 1]), k=2).size == (960, 360)


def test_dendrogram_bad_input() -> None:
    z = linkage(np.arange(5.0)[:, None], "ward")
    with pytest.raises(ValueError, match="labels"):
        dendrogram_image(z, np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="linkage"):
        dendrogram_image(z[:, :3])
    with pytest.raises(ValueError, match="k"):
        dendrogram_image(z, k=6)


def test_cluster_size_chart() -> None:
    img = cluster_size_chart([3, 0, 7], size=(300, 120))
    assert img.size == (300, 120)
    with pytest.raises(ValueError, match="sizes"):
        cluster_size_chart([])


def test_heat_levels_one_scale_and_default_range() -> None:
    levels = heat_levels(np.array([[0.0, 1.0], [2.0, 3.0]]), 1.0, 2.0)
    assert levels.dtype == np.uint8 and levels.tolist() == [[0, 0], [255, 255]]
    lo, hi = default_heat_range(np.concatenate([np.zeros(999), [5.0]]))
    assert lo == 0.0 and 0.0 < hi <= 5.0
    assert default_heat_range(np.ones(10)) == (1.0, 2.0)  # constant values still give lo < hi
    with pytest.raises(ValueError, match="lo < hi"):
        heat_levels(np.zeros(3), 1.0, 1.0)
