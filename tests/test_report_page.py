"""The report page without a browser: embedded data, escaping, the cut at every K, masks, thumbnails."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import cdist

from anomclust_lite.clustering.auto_k import cut_linkage
from anomclust_lite.report import ReportImage, ReportRun, render_report
from anomclust_lite.report.masks import mask_outline, mask_outline_uri, mask_path
from anomclust_lite.report.page import embed_json
from anomclust_lite.report.thumbs import image_data_uri, thumbnail_uri
from anomclust_lite.report.views import cuts, k_range, neighbours

from _report_html import parse

THUMB = "data:image/png;base64,iVBORw0KGgo="


def blobs(n_per: int = 6, centres=(0.0, 5.0, 10.0, 30.0), seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(c, 0.3, (n_per, 3)) for c in centres])
    return x, linkage(x, "ward")


def make_run(k: int = 3, **extra) -> ReportRun:
    x, z = blobs()
    labels = cut_linkage(z, k)
    images = [ReportImage(f"t{i // 6}/{i:02d}.png", int(labels[i]), THUMB, label=f"t{i // 6}",
                          distance=float(i % 6)) for i in range(len(x))]
    return ReportRun(images, k=k, linkage=z, distances=cdist(x, x), embeddings=x, **extra)


def test_page_embeds_escaped_json_and_a_strict_policy() -> None:
    hostile = '</script><script>alert(1)</script><!--\u2028&amp;"\'\udcff'
    images = [ReportImage(hostile, 0, THUMB, label="<b>x</b>"), ReportImage("b.png", 0, THUMB)]
    page = render_report(ReportRun(images, k=1, title=hostile, facts={"<i>": "</script>"}, warnings=[hostile]))
    page.encode("utf-8")  # undecodable names were escaped: nothing unencodable is left
    block = re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1)
    assert block.isascii() and "\\u2028" in block  # the data block is ASCII: U+2028 as an escape
    assert page.count("</script>") == 2  # the data block's and the code's own end tags only
    assert "<script>alert" not in page and "<!--" not in page and "<b>x" not in page
    data = parse(page).data
    assert data["paths"][0] == hostile.replace("\udcff", "\\udcff")
    assert data["title"] == data["paths"][0] and data["warnings"] == [data["paths"][0]]
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "img-src data: blob:" in csp
    assert "'unsafe-inline'" not in csp and "http" not in csp
    assert "<title>&lt;/script&gt;" in page


def test_embed_json_round_trips() -> None:
    value = {"a": "<>&\u2028\u2029é", "n": [1, 2.5, None]}
    text = embed_json(value)
    assert re.search(r"[<>&]", text) is None and text.isascii()
    assert json.loads(text) == value
    with pytest.raises(ValueError):
        embed_json({"x": float("nan")})


def test_every_k_is_cut_and_follows_the_fitted_ids() -> None:
    run = make_run(k=3, k_max=6)
    assert k_range(run) == (2, 6)
    all_cuts = cuts(run)
    fitted = np.array([it.cluster for it in run.images])
    for k, labels in all_cuts.items():
        assert sorted(set(labels.tolist())) == list(range(k))
        # the partition is the tree's cut at K
        ref = cut_linkage(run.linkage, k)
        assert len({(a, b) for a, b in zip(labels, ref)}) == k
        if k > 3:  # more clusters: each one lies inside one fitted cluster
            for c in range(k):
                assert len(set(fitted[labels == c])) == 1
    assert all_cuts[3].tolist() == fitted.tolist()
    # ids follow the fitted clusters: at K=4 the clusters are ordered by the fitted cluster they split from
    first_fitted = [int(fitted[all_cuts[4] == c].min()) for c in range(4)]
    assert first_fitted == sorted(first_fitted)


def test_payload_views_at_every_k() -> None:
    run = make_run(k=3, k_max=5)
    d = parse(render_report(run)).data
    assert (d["k_min"], d["k_max"], d["k_fit"]) == (2, 5, 3)
    assert len(d["cuts"]) == len(d["dist"]) == len(d["reps"]) == 4
    x = run.embeddings
    for j, k in enumerate(range(2, 6)):
        labels = np.array(d["cuts"][j])
        for c in range(k):
            members = np.flatnonzero(labels == c)
            assert d["reps"][j][c] in members
            if k != 3:  # recomputed at other K: Euclidean to the mean embedding
                expect = np.linalg.norm(x[members] - x[members].mean(axis=0), axis=1)
                np.testing.assert_allclose([d["dist"][j][i] for i in members], expect, rtol=1e-3)
    assert d["dist"][1] == [float(i % 6) for i in range(24)]  # the fitted K keeps the given distances
    assert len(d["map"]) == 24 and all(0.0 <= v <= 1.0 for xy in d["map"] for v in xy)
    assert d["neighbours"][0][0] in range(1, 6)  # nearest image is in its own blob


def test_optional_fields_are_null_when_absent_and_kept_when_present() -> None:
    plain = parse(render_report(make_run())).data
    for field in ("anomaly_score", "confidence", "novelty", "is_good", "new_type", "masks", "heat"):
        assert plain[field] is None
    x, z = blobs()
    good = np.zeros(len(x), dtype=bool)
    good[:6] = True  # the first blob is the good group, outside the tree
    inside = np.flatnonzero(~good)
    z_in = linkage(x[inside], "ward")
    labels = np.full(len(x), -1)
    labels[inside] = cut_linkage(z_in, 2)
    heat = np.arange(16.0).reshape(4, 4)
    images = [ReportImage(f"{i}.png", int(labels[i]), THUMB, anomaly_score=float(i), confidence=0.5,
                          is_good=bool(good[i]), heat=heat if i else None) for i in range(len(x))]
    d = parse(render_report(ReportRun(images, k=2, linkage=z_in, heat_range=(0.0, 15.0),
                                      cluster_names={1: "crack <x>"},
                                      cluster_notes={0: "fitted: 9 images, 80 % <y>"}))).data
    assert d["is_good"][:7] == [1] * 6 + [0] and d["anomaly_score"][3] == 3.0
    assert all(d["cuts"][j][i] == -1 for j in range(len(d["cuts"])) for i in range(6))
    assert d["heat"]["grid"] == [4, 4] and d["heat"]["range"] == [0.0, 15.0] and d["heat"]["maps"][0] is None
    assert d["names"] == {"1": "crack <x>"} and d["notes"] == {"0": "fitted: 9 images, 80 % <y>"}
    assert len(d["heat"]["lut"]) == 256 * 3


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(k=0), "k must be"),
        (dict(command="train"), "command"),
        (dict(distances=np.zeros((3, 3))), "distances"),
        (dict(representatives=[0]), "representatives"),
        (dict(heat_range=(1.0, 1.0)), "heat_range"),
        (dict(linkage=np.zeros((2, 4))), "linkage"),
        (dict(cluster_notes={3: "fitted"}), "cluster_notes"),
        (dict(cluster_notes={-1: "good"}), "cluster_notes"),
    ],
)
def test_bad_runs_are_refused(change: dict, match: str) -> None:
    base = make_run()
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(change)
    with pytest.raises(ValueError, match=match):
        render_report(ReportRun(**fields))


def test_bad_images_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        render_report(ReportRun([ReportImage("a", 3, THUMB)], k=2))
    with pytest.raises(ValueError, match="good group"):
        render_report(ReportRun([ReportImage("a", -1, THUMB)], k=1))
    with pytest.raises(ValueError, match="confidence"):
        render_report(ReportRun([ReportImage("a", 0, THUMB, confidence=1.5)], k=1))
    with pytest.raises(ValueError, match="ReportImage"):
        render_report(ReportRun(["a"], k=1))  # type: ignore[list-item]


def test_without_a_tree_only_the_fitted_k() -> None:
    images = [ReportImage(f"{i}.png", i % 2, THUMB) for i in range(4)]
    d = parse(render_report(ReportRun(images, k=2))).data
    assert (d["k_min"], d["k_max"]) == (2, 2) and d["map"] is None and d["neighbours"] is None
    assert d["reps"] == [[-1, -1]]


def test_neighbours_nearest_first() -> None:
    d = cdist(np.array([[0.0], [1.0], [3.0], [7.0]]), np.array([[0.0], [1.0], [3.0], [7.0]]))
    assert neighbours(d, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]


def test_thumbnails_are_small_webp() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    uri = thumbnail_uri(image, resize=256, crop=224)
    assert uri.startswith("data:image/webp;base64,")
    from test_report import decode_uri

    assert decode_uri(uri).size == (160, 160)
    assert decode_uri(thumbnail_uri(None, resize=256, crop=224)).size == (160, 160)


def test_mvtec_masks_are_found_and_outlined(tmp_path: Path) -> None:
    image = tmp_path / "bottle" / "test" / "crack" / "003.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), "gray").save(image)
    assert mask_path(image) is None and mask_outline_uri(image, resize=64, crop=None, size=(32, 32)) is None
    mask = tmp_path / "bottle" / "ground_truth" / "crack" / "003_mask.png"
    mask.parent.mkdir(parents=True)
    m = Image.new("L", (64, 64))
    m.paste(255, (16, 16, 48, 48))
    m.save(mask)
    assert mask_path(image) == mask
    uri = mask_outline_uri(image, resize=64, crop=None, size=(32, 32))
    from test_report import decode_uri

    outline = np.asarray(decode_uri(uri))
    assert outline.shape == (32, 32, 4)
    assert outline[8, 8:24, 3].all() and not outline[16, 16, 3] and not outline[0, 0, 3]
    Image.new("L", (64, 64)).save(mask)  # an empty mask draws nothing
    assert mask_outline_uri(image, resize=64, crop=None, size=(32, 32)) is None
    mask.write_bytes(b"not a png")  # an unreadable mask is skipped, not fatal
    assert mask_outline_uri(image, resize=64, crop=None, size=(32, 32)) is None
    assert mask_path(tmp_path / "train" / "good" / "000.png") is None


def test_mask_outline_of_a_full_mask_is_its_border() -> None:
    out = np.asarray(mask_outline(Image.new("L", (6, 6), 255), (6, 6)))[..., 3] > 0
    assert out[0].all() and out[:, 0].all() and not out[1:-1, 1:-1].any()


def test_overview_and_facts_are_embedded() -> None:
    run = make_run(facts={"weights": "semi & co", "n": 3}, metrics={"nmi": 0.5},
                   overview=Image.new("RGB", (10, 10)))
    d = parse(render_report(run)).data
    assert d["facts"] == [["weights", "semi & co"], ["n", 3]] and d["metrics"] == [["nmi", 0.5]]
    assert d["overview"].startswith("data:image/png;base64,")
    assert math.isnan(float("nan"))  # (NaN never reaches the JSON: allow_nan=False)


def test_image_data_uri_formats() -> None:
    img = Image.new("RGB", (4, 4))
    assert image_data_uri(img).startswith("data:image/webp;base64,")
    assert image_data_uri(img, fmt="JPEG").startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize(
    "value, expect",
    [([0.1, 0.9], (0.1, 0.9)), ([0.9, 0.1], None), ([0.1], None), ("0.1,0.9", None), ([0.1, float("inf")], None),
     ([True, 2], None), (None, None)],
)
def test_the_fit_heat_scale_is_read_from_metadata_as_untrusted(value, expect) -> None:
    from types import SimpleNamespace

    from anomclust_lite.report.build import HEAT_RANGE_KEY, saved_heat_range

    assert saved_heat_range(SimpleNamespace(metadata_={HEAT_RANGE_KEY: value})) == expect
    assert saved_heat_range(SimpleNamespace()) is None
