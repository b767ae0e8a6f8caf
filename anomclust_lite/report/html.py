"""A self-contained HTML report of a clustering, drawn with Pillow.

The report is one HTML file that opens in a browser with no server and no
other files: the thumbnails and the overview chart are embedded as base64
``data:`` URIs. Structure (stable, for tools that read it):

- one ``<section class="cluster" id="cluster-K">`` per cluster, with a
  heading, the cluster's size, and when true labels are known its purity and
  label counts;
- inside it one ``<figure data-path="PATH">`` per image (most typical image,
  i.e. nearest the cluster centre, first), whose caption shows the path, the
  true label, the distance to the cluster centre and the top patch score;
- before the sections an overview image: the dendrogram of the linkage tree
  (top merges only when there are many images), coloured by cluster with the
  cut for K drawn as a dashed line, or a bar chart of the cluster sizes for
  non-hierarchical methods.

All text is HTML-escaped; characters that cannot be encoded (file names that
are not valid UTF-8) are written as backslash escapes.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.validation import check_finite_array, check_int

__all__ = [
    "ReportImage",
    "image_data_uri",
    "dendrogram_image",
    "cluster_size_chart",
    "render_report",
    "cluster_colour",
]

#: Categorical colours for clusters (cycled when K is larger).
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
_GREY = (150, 150, 150)


@dataclass(frozen=True)
class ReportImage:
    """One image of the report.

    Attributes
    ----------
    path : str
        Path shown in the caption and stored in ``data-path``.
    cluster : int
        Cluster id.
    thumbnail : str
        A ``data:`` URI (see :func:`image_data_uri`).
    label : str or None
        True label, when known.
    distance : float
        Distance to the cluster centre (NaN when unknown).
    score : float
        Top patch anomaly score (NaN when unknown).
    """

    path: str
    cluster: int
    thumbnail: str
    label: Optional[str] = None
    distance: float = math.nan
    score: float = math.nan


def cluster_colour(cluster: int) -> Tuple[int, int, int]:
    """RGB colour of cluster ``cluster`` in the report's palette.

    Examples
    --------
    >>> cluster_colour(0)
    (31, 119, 180)
    """
    return _PALETTE[check_int(cluster, "cluster", low=0) % len(_PALETTE)]


def image_data_uri(image: Image.Image, *, fmt: str = "JPEG", quality: int = 80) -> str:
    """Encode a PIL image as a base64 ``data:`` URI.

    Parameters
    ----------
    image : PIL.Image.Image
        Converted to RGB for JPEG.
    fmt : {"JPEG", "PNG"}, default "JPEG"
    quality : int, default 80
        JPEG quality (1-95).

    Returns
    -------
    str
        ``"data:image/jpeg;base64,..."`` or ``"data:image/png;base64,..."``.

    Examples
    --------
    >>> from PIL import Image
    >>> image_data_uri(Image.new("RGB", (4, 4)), fmt="PNG")[:22]
    'data:image/png;base64,'
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL image; got {type(image).__name__}")
    if fmt not in ("JPEG", "PNG"):
        raise ValueError(f"fmt must be 'JPEG' or 'PNG'; got {fmt!r}")
    quality = check_int(quality, "quality", low=1, high=95)
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG", optimize=True)
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def dendrogram_image(
    linkage: np.ndarray,
    labels: Optional[np.ndarray] = None,
    *,
    k: Optional[int] = None,
    max_leaves: int = 40,
    size: Tuple[int, int] = (960, 360),
) -> Image.Image:
    """Draw a linkage tree as a dendrogram.

    Parameters
    ----------
    linkage : (N - 1, 4) array_like
        A scipy linkage matrix with non-decreasing merge heights (Ward,
        complete, average and single linkage are).
    labels : (N,) array_like of int, optional
        Cluster of every image; the subtrees below the cut for ``k`` are drawn
        in their cluster's colour (see :func:`cluster_colour`).
    k : int, optional
        Number of clusters; draws the cut between the ``k``-th and ``k-1``-th
        last merges as a dashed line.
    max_leaves : int, default 40
        Only the top ``max_leaves - 1`` merges are drawn; each leaf then
        stands for a subtree and is labelled with its image count.
    size : (int, int), default (960, 360)
        Width and height in pixels.

    Returns
    -------
    PIL.Image.Image
        RGB image.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.cluster.hierarchy import linkage
    >>> z = linkage(np.array([[0.0], [0.1], [5.0], [5.2]]), "ward")
    >>> dendrogram_image(z, np.array([0, 0, 1, 1]), k=2).size
    (960, 360)
    """
    z = check_finite_array(linkage, "linkage", 2)
    if z.shape[1] != 4 or z.shape[0] < 1:
        raise ValueError(f"linkage must be a scipy linkage matrix of shape (N-1, 4) with N >= 2; got {z.shape}")
    n = z.shape[0] + 1
    max_leaves = check_int(max_leaves, "max_leaves", low=2)
    if k is not None:
        k = check_int(k, "k", low=1, high=n)
    lab = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) to match the linkage; got {lab.shape}")
    width, height = (check_int(size[0], "size[0]", low=64), check_int(size[1], "size[1]", low=64))

    p = min(n, max_leaves)
    first_shown = n - p  # merges with index >= first_shown are drawn
    rep = np.empty(2 * n - 1, dtype=np.int64)  # one original image inside every node
    rep[:n] = np.arange(n)
    for j in range(n - 1):
        rep[n + j] = rep[int(z[j, 0])]

    def count(node: int) -> int:
        return 1 if node < n else int(z[node - n, 3])

    def is_leaf(node: int) -> bool:
        return node < n + first_shown

    # In-order leaf positions, iteratively (deep trees would overflow recursion).
    xs: Dict[int, float] = {}
    leaves: List[int] = []
    stack = [(2 * n - 2, False)]
    while stack:
        node, done = stack.pop()
        if is_leaf(node):
            xs[node] = float(len(leaves))
            leaves.append(node)
        elif done:
            a, b = int(z[node - n, 0]), int(z[node - n, 1])
            xs[node] = (xs[a] + xs[b]) / 2.0
        else:
            a, b = int(z[node - n, 0]), int(z[node - n, 1])
            stack.extend([(node, True), (b, False), (a, False)])

    top_h = float(z[-1, 2]) or 1.0
    left, right, top, bottom = 40, 16, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x + 0.5) * plot_w / len(leaves)

    def py(h: float) -> float:
        return top + (1.0 - h / top_h) * plot_h

    def height_of(node: int) -> float:
        return 0.0 if is_leaf(node) else float(z[node - n, 2])

    cut_below = n + (n - k) if k is not None else -1  # nodes with id < cut_below are inside one cluster

    def colour(node: int) -> Tuple[int, int, int]:
        if lab is not None and node < cut_below:
            return cluster_colour(int(lab[rep[node]]))
        return _GREY

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    draw.line([(left - 4, top), (left - 4, top + plot_h)], fill=(0, 0, 0))
    draw.text((2, top - 4), f"{top_h:.3g}", fill=(0, 0, 0), font=font)
    draw.text((2, top + plot_h - 8), "0", fill=(0, 0, 0), font=font)
    for j in range(first_shown, n - 1):
        node = n + j
        a, b = int(z[j, 0]), int(z[j, 1])
        h = float(z[j, 2])
        for child in (a, b):  # each merge is drawn as a U in the colour of the merged cluster
            draw.line([(px(xs[child]), py(height_of(child))), (px(xs[child]), py(h))], fill=colour(node), width=2)
        draw.line([(px(xs[a]), py(h)), (px(xs[b]), py(h))], fill=colour(node), width=2)
    for leaf in leaves:
        x = px(xs[leaf])
        draw.ellipse([x - 3, py(0) - 3, x + 3, py(0) + 3], fill=colour(leaf))
        if lab is not None and (leaf < cut_below or k is None):
            draw.text((x - 6, py(0) + 6), f"c{int(lab[rep[leaf]])}", fill=(0, 0, 0), font=font)
        if leaf >= n:
            draw.text((x - 6, py(0) + 20), f"({count(leaf)})", fill=(80, 80, 80), font=font)
    if k is not None and 2 <= k <= n - 1:
        lo = float(z[n - k - 1, 2])
        hi = float(z[n - k, 2])
        y = py((lo + hi) / 2.0)
        for x0 in range(left, left + plot_w, 12):
            draw.line([(x0, y), (min(x0 + 6, left + plot_w), y)], fill=(200, 0, 0), width=1)
        draw.text((left + plot_w - 40, y - 12), f"K={k}", fill=(200, 0, 0), font=font)
    return img


def cluster_size_chart(sizes: Sequence[int], *, size: Tuple[int, int] = (960, 280)) -> Image.Image:
    """Draw a bar chart of the cluster sizes.

    Parameters
    ----------
    sizes : sequence of int
        Number of images in cluster 0, 1, ...
    size : (int, int), default (960, 280)
        Width and height in pixels.

    Returns
    -------
    PIL.Image.Image
        RGB image.

    Examples
    --------
    >>> cluster_size_chart([5, 3, 1]).size
    (960, 280)
    """
    counts = [check_int(s, "sizes", low=0) for s in sizes]
    if not counts:
        raise ValueError("sizes must hold at least one cluster size")
    width, height = (check_int(size[0], "size[0]", low=64), check_int(size[1], "size[1]", low=64))
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = _font()
    left, right, top, bottom = 16, 16, 20, 24
    slot = (width - left - right) / len(counts)
    top_count = max(max(counts), 1)
    for i, c in enumerate(counts):
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        y0 = top + (1.0 - c / top_count) * (height - top - bottom)
        draw.rectangle([x0, y0, x1, height - bottom], fill=cluster_colour(i))
        draw.text((x0, y0 - 12), str(c), fill=(0, 0, 0), font=font)
        draw.text((x0, height - bottom + 6), f"c{i}", fill=(0, 0, 0), font=font)
    return img


def _text(value: object) -> str:
    """Escaped HTML text; unencodable characters become backslash escapes."""
    s = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    return html.escape(s, quote=True)


def _fmt(x: float) -> str:
    return "–" if x is None or not math.isfinite(float(x)) else f"{float(x):.4g}"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.facts{border-collapse:collapse;margin:.5em 0 1em}
table.facts td{border:1px solid #ccc;padding:2px 8px;font-size:90%}
img.overview{max-width:100%;border:1px solid #ddd}
section.cluster{margin:1.5em 0;padding:.5em 1em;border-left:8px solid var(--c)}
section.cluster h2{margin:.2em 0}
.grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:136px;font-size:70%;word-break:break-all}
figure img{width:128px;height:auto;display:block}
nav a{margin-right:.8em}
"""


def render_report(
    images: Sequence[ReportImage],
    *,
    n_clusters: int,
    title: str = "Anomaly clustering",
    overview: Optional[Image.Image] = None,
    facts: Optional[Mapping[str, object]] = None,
    metrics: Optional[Mapping[str, float]] = None,
) -> str:
    """Render the report as one HTML string.

    Parameters
    ----------
    images : sequence of ReportImage
        Every clustered image; cluster ids must lie in ``0 .. n_clusters-1``.
    n_clusters : int
        K; every cluster gets a section, also an empty one.
    title : str
        Page title and heading.
    overview : PIL.Image.Image, optional
        Dendrogram or size chart, embedded as PNG.
    facts : mapping, optional
        Key/value pairs shown in a table (parameters, K choice, ...).
    metrics : mapping, optional
        Clustering metrics against the true labels (NMI, ARI, ...).

    Returns
    -------
    str
        The complete HTML document.

    Examples
    --------
    >>> from PIL import Image
    >>> uri = image_data_uri(Image.new("RGB", (8, 8)))
    >>> page = render_report([ReportImage("a.png", 0, uri)], n_clusters=1)
    >>> page.count('<section class="cluster"'), 'data-path="a.png"' in page
    (1, True)
    """
    n_clusters = check_int(n_clusters, "n_clusters", low=1)
    items = list(images)
    for it in items:
        if not isinstance(it, ReportImage):
            raise ValueError(f"images must hold ReportImage objects; got {type(it).__name__}")
        if not 0 <= it.cluster < n_clusters:
            raise ValueError(f"image {it.path!r} has cluster {it.cluster}, outside 0..{n_clusters - 1}")
    by_cluster: Dict[int, List[ReportImage]] = {c: [] for c in range(n_clusters)}
    for it in items:
        by_cluster[it.cluster].append(it)
    has_labels = any(it.label is not None for it in items)

    out: List[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f"<p>{len(items)} images in {n_clusters} clusters.</p>",
    ]
    if metrics:
        out.append("<p><b>Against the folder labels:</b> " + ", ".join(
            f"{_text(k)} = {_fmt(v)}" for k, v in metrics.items()) + "</p>")
    if facts:
        out.append('<table class="facts">')
        out.extend(f"<tr><td>{_text(k)}</td><td>{_text(v)}</td></tr>" for k, v in facts.items())
        out.append("</table>")
    if overview is not None:
        out.append(f'<img class="overview" alt="cluster overview" src="{image_data_uri(overview, fmt="PNG")}">')
    out.append("<nav>" + "".join(
        f'<a href="#cluster-{c}">cluster {c} ({len(by_cluster[c])})</a>' for c in range(n_clusters)) + "</nav>")

    for c in range(n_clusters):
        members = sorted(by_cluster[c], key=lambda it: (
            not math.isfinite(it.distance), it.distance if math.isfinite(it.distance) else 0.0, it.path))
        r, g, b = cluster_colour(c)
        out.append(f'<section class="cluster" id="cluster-{c}" style="--c:rgb({r},{g},{b})">')
        out.append(f"<h2>Cluster {c}</h2><p>{len(members)} image{'s' if len(members) != 1 else ''}")
        if has_labels and members:
            counts = Counter(it.label for it in members if it.label is not None)
            purity = max(counts.values()) / len(members) if counts else 0.0
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
            out.append(f"; purity {purity:.3f}; labels: " + ", ".join(
                f"{_text(lbl)} {cnt}" for lbl, cnt in ranked))
        out.append('</p><div class="grid">')
        for it in members:
            cap = [_text(it.path)]
            if it.label is not None:
                cap.append(f"label: {_text(it.label)}")
            cap.append(f"distance {_fmt(it.distance)} · score {_fmt(it.score)}")
            out.append(
                f'<figure data-path="{_text(it.path)}"><img loading="lazy" alt="{_text(it.path)}" '
                f'src="{it.thumbnail}"><figcaption>{"<br>".join(cap)}</figcaption></figure>'
            )
        out.append("</div></section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
