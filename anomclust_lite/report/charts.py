"""Static charts of a clustering drawn with Pillow: the dendrogram and the cluster sizes.

The page draws its interactive parts itself; these images are its overview
of the tree (or, for non-hierarchical methods, of the cluster sizes) at the
fitted K.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..core.validation import check_finite_array, check_int

__all__ = ["cluster_colour", "dendrogram_image", "cluster_size_chart", "PALETTE"]

#: Categorical colours for clusters (cycled when K is larger).
PALETTE = [
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


def cluster_colour(cluster: int) -> Tuple[int, int, int]:
    """RGB colour of cluster ``cluster`` in the report's palette.

    Examples
    --------
    >>> cluster_colour(0)
    (31, 119, 180)
    """
    return PALETTE[check_int(cluster, "cluster", low=0) % len(PALETTE)]


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
    lay = _Layout(z, max_leaves, (width, height))
    cut_below = n + (n - k) if k is not None else -1  # nodes with id < cut_below are inside one cluster

    def colour(node: int) -> Tuple[int, int, int]:
        if lab is not None and node < cut_below:
            return cluster_colour(int(lab[lay.rep[node]]))
        return _GREY

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    _draw_merges(draw, lay, colour)
    for leaf in lay.leaves:
        x = lay.px(lay.xs[leaf])
        draw.ellipse([x - 3, lay.py(0) - 3, x + 3, lay.py(0) + 3], fill=colour(leaf))
        if lab is not None and (leaf < cut_below or k is None):
            draw.text((x - 6, lay.py(0) + 6), f"c{int(lab[lay.rep[leaf]])}", fill=(0, 0, 0), font=_font())
        if leaf >= n:
            draw.text((x - 6, lay.py(0) + 20), f"({lay.count(leaf)})", fill=(80, 80, 80), font=_font())
    if k is not None and 2 <= k <= n - 1:
        _draw_cut(draw, lay, k)
    return img


class _Layout:
    """The drawn part of a linkage tree: its top merges, leaf order, x of every node, plot geometry."""

    LEFT, RIGHT, TOP, BOTTOM = 40, 16, 16, 44

    def __init__(self, z: np.ndarray, max_leaves: int, size: Tuple[int, int]) -> None:
        self.z, self.n = z, z.shape[0] + 1
        self.first_shown = self.n - min(self.n, max_leaves)  # merges with index >= first_shown are drawn
        self.rep = np.empty(2 * self.n - 1, dtype=np.int64)  # one original image inside every node
        self.rep[: self.n] = np.arange(self.n)
        for j in range(self.n - 1):
            self.rep[self.n + j] = self.rep[int(z[j, 0])]
        self.xs, self.leaves = self._positions()
        self.top_h = float(z[-1, 2]) or 1.0
        self.plot_w = size[0] - self.LEFT - self.RIGHT
        self.plot_h = size[1] - self.TOP - self.BOTTOM

    def _positions(self) -> Tuple[Dict[int, float], List[int]]:
        """In-order leaf positions, iteratively (deep trees would overflow recursion)."""
        xs: Dict[int, float] = {}
        leaves: List[int] = []
        stack = [(2 * self.n - 2, False)]
        while stack:
            node, done = stack.pop()
            if self.is_leaf(node):
                xs[node] = float(len(leaves))
                leaves.append(node)
                continue
            a, b = self.children(node)
            if done:
                xs[node] = (xs[a] + xs[b]) / 2.0
            else:
                stack.extend([(node, True), (b, False), (a, False)])
        return xs, leaves

    def children(self, node: int) -> Tuple[int, int]:
        return int(self.z[node - self.n, 0]), int(self.z[node - self.n, 1])

    def count(self, node: int) -> int:
        return 1 if node < self.n else int(self.z[node - self.n, 3])

    def is_leaf(self, node: int) -> bool:
        return node < self.n + self.first_shown

    def height_of(self, node: int) -> float:
        return 0.0 if self.is_leaf(node) else float(self.z[node - self.n, 2])

    def px(self, x: float) -> float:
        return self.LEFT + (x + 0.5) * self.plot_w / len(self.leaves)

    def py(self, h: float) -> float:
        return self.TOP + (1.0 - h / self.top_h) * self.plot_h


def _draw_merges(draw: ImageDraw.ImageDraw, lay: _Layout, colour) -> None:  # type: ignore[no-untyped-def]
    """The height axis and every drawn merge, as a U in the colour of the merged cluster."""
    top, bottom = lay.TOP, lay.TOP + lay.plot_h
    draw.line([(lay.LEFT - 4, top), (lay.LEFT - 4, bottom)], fill=(0, 0, 0))
    draw.text((2, top - 4), f"{lay.top_h:.3g}", fill=(0, 0, 0), font=_font())
    draw.text((2, bottom - 8), "0", fill=(0, 0, 0), font=_font())
    for j in range(lay.first_shown, lay.n - 1):
        node = lay.n + j
        a, b = lay.children(node)
        h = float(lay.z[j, 2])
        for child in (a, b):
            x = lay.px(lay.xs[child])
            draw.line([(x, lay.py(lay.height_of(child))), (x, lay.py(h))], fill=colour(node), width=2)
        draw.line([(lay.px(lay.xs[a]), lay.py(h)), (lay.px(lay.xs[b]), lay.py(h))], fill=colour(node), width=2)


def _draw_cut(draw: ImageDraw.ImageDraw, lay: _Layout, k: int) -> None:
    """The cut for ``k`` clusters: a dashed line between the merges it separates."""
    lo, hi = float(lay.z[lay.n - k - 1, 2]), float(lay.z[lay.n - k, 2])
    y = lay.py((lo + hi) / 2.0)
    right = lay.LEFT + lay.plot_w
    for x0 in range(lay.LEFT, right, 12):
        draw.line([(x0, y), (min(x0 + 6, right), y)], fill=(200, 0, 0), width=1)
    draw.text((right - 40, y - 12), f"K={k}", fill=(200, 0, 0), font=_font())


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
