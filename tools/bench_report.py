#!/usr/bin/env python
"""Report size and load time in headless Chromium, for synthetic runs of 100 and 2,000 images.

Builds a synthetic run (clustered embeddings, Ward tree, 160 px WebP
thumbnails of smooth synthetic parts, 28 x 28 heat maps, scores, a good
group), writes the report, and opens it ``--repeats`` times in a fresh tab of
Debian's headless Chromium (driven over the DevTools pipe, see
tests/_browser.py). Prints, per size: file size, bytes per image, the time to
write the page, and the load time (navigation start to the page's
``anomclust-ready`` mark: JSON parsed, galleries, map and header drawn),
median and maximum over the repeats, then the time to regroup at another K.

Usage::

    python tools/bench_report.py [--sizes 100 2000] [--repeats 5] [--k-max 15]

The page's own timings come from ``performance.mark``; nothing leaves the page.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from scipy.spatial.distance import cdist

import anomclust_lite as ac
from anomclust_lite.report import ReportImage, ReportRun, image_data_uri, render_report

GRID = (28, 28)


def synthetic_thumbnail(rng: np.random.Generator, cluster: int, size: int = 160) -> str:
    """A smooth synthetic 'part' (shaded disc, a defect streak whose angle depends on the cluster), as WebP."""
    from PIL import Image, ImageDraw, ImageFilter

    base = tuple(int(v) for v in rng.integers(90, 170, 3))
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(45, 70))
    c = size // 2 + int(rng.integers(-8, 9))
    draw.ellipse([c - r, c - r, c + r, c + r], fill=tuple(min(255, v + 50) for v in base))
    angle = cluster * 0.7 + rng.normal(0, 0.2)
    x0, y0 = c + int(rng.integers(-20, 21)), c + int(rng.integers(-20, 21))
    draw.line([x0, y0, x0 + int(40 * np.cos(angle)), y0 + int(40 * np.sin(angle))], fill=(40, 30, 30),
              width=int(rng.integers(2, 6)))
    noise = rng.normal(0, 6, (size, size, 3))
    arr = np.clip(np.asarray(img.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float64) + noise, 0, 255)
    return image_data_uri(Image.fromarray(arr.astype(np.uint8)), fmt="WEBP", quality=80)


def smooth_heat(rng: np.random.Generator) -> np.ndarray:
    """A 28 x 28 patch-score map: low background and one hot blob."""
    yy, xx = np.mgrid[0:GRID[0], 0:GRID[1]]
    cy, cx = rng.integers(4, GRID[0] - 4, 2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(1.5, 4.0) ** 2))
    return 0.3 + 0.05 * rng.random(GRID) + rng.uniform(0.1, 1.0) * blob


def synthetic_run(n: int, k: int = 6, *, seed: int = 0, trust: bool = True, good_fraction: float = 0.1,
                  k_max: int = 15, title: str = "Synthetic run") -> ReportRun:
    """A report of ``n`` synthetic images in ``k`` clusters (plus a good group when ``trust``)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    emb = rng.normal(0, 1, (k, 16))[truth] * 3 + rng.normal(0, 1, (n, 16))
    n_good = int(round(good_fraction * n)) if trust else 0
    good = np.zeros(n, dtype=bool)
    good[rng.choice(n, n_good, replace=False)] = True
    inside = np.flatnonzero(~good)
    z = ac.linkage_matrix(emb[inside], method="ward")
    labels = np.full(n, -1, dtype=np.int64)
    labels[inside] = ac.cut_linkage(z, k)
    dist = cdist(emb, emb)
    centre = np.full(n, np.nan)
    for c in range(k):
        m = labels == c
        centre[m] = np.linalg.norm(emb[m] - emb[m].mean(axis=0), axis=1)
    images = []
    for i in range(n):
        images.append(ReportImage(
            path=f"{'good' if good[i] else f'type_{truth[i]}'}/{i:05d}.png", cluster=int(labels[i]),
            thumbnail=synthetic_thumbnail(rng, int(truth[i])), label="good" if good[i] else f"type_{truth[i]}",
            distance=float(centre[i]), score=float(rng.uniform(0.4, 1.4)),
            anomaly_score=float(rng.uniform(0, 1)) if trust else None,
            confidence=float(rng.uniform(0, 1)) if trust else None,
            is_good=bool(good[i]) if trust else None, heat=smooth_heat(rng)))
    return ReportRun(images=images, k=k, title=title, linkage=z, k_max=k_max, distances=dist, embeddings=emb,
                     cluster_names={0: "scratch"} if trust else None, facts={"images": n, "synthetic": "yes"})


def measure(path: Path, repeats: int, other_k: int) -> "tuple[List[float], float, List[str]]":
    """Load times (s, from the page's ready mark) over ``repeats`` fresh tabs, a K change, and errors."""
    from _browser import Browser  # tools/_browser.py, beside this file

    loads: List[float] = []
    errors: List[str] = []
    regroup = float("nan")
    with Browser() as browser:
        for _ in range(repeats):
            page = browser.new_page()
            page.open(path.as_uri(), timeout=120)
            loads.append(page.evaluate("performance.getEntriesByName('anomclust-ready')[0].startTime") / 1000.0)
            regroup = page.evaluate(
                f"(() => {{ const t = performance.now(); window.anomclustReport.setK({other_k}, true);"
                " return (performance.now() - t) / 1000; })()")
            errors += page.errors()
            browser.send("Target.closeTarget", {"targetId": page.call("Target.getTargetInfo")["targetInfo"]["targetId"]})
    return loads, regroup, errors


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 2000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k-max", type=int, default=15)
    args = parser.parse_args(argv)
    print("images  file_MB  kB/image  write_s  load_median_s  load_max_s  regroup_s")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            t0 = time.perf_counter()
            run = synthetic_run(n, k_max=args.k_max)
            t1 = time.perf_counter()
            page = render_report(run)
            t2 = time.perf_counter()
            path = Path(tmp) / f"report_{n}.html"
            path.write_text(page, encoding="utf-8")
            size = path.stat().st_size
            loads, regroup, errors = measure(path, args.repeats, other_k=min(args.k_max, 12))
            print(f"{n:6d}  {size / 1e6:7.2f}  {size / n / 1e3:8.2f}  {t2 - t1:7.2f}  "
                  f"{statistics.median(loads):13.3f}  {max(loads):10.3f}  {regroup:9.3f}"
                  f"   (building the synthetic run: {t1 - t0:.1f} s)")
            if errors:
                print("  page errors:", errors)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
