"""PNG charts of the reproduction, drawn with Pillow only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anomclust_lite.core import defaults
from anomclust_lite.report.charts import cluster_colour

#: Legend names of the embeddings in the purity charts.
SHORT_NAMES = {
    "avg_pool": "avg pooling",
    "max_hausdorff": "max-Hausdorff",
    "wa_unsup": "WA unsup",
    "wa_semi": "WA semi",
    "wa_mask": "WA GT mask",
}

Series = Sequence[Tuple[str, Sequence[float], Sequence[float]]]
#: Plot-area margins: left, right (room for the legend), top, bottom.
MARGINS = (64, 170, 36, 52)


def _round_ticks(xs: Sequence[float], log_x: bool) -> List[float]:
    """The x ticks: every x when there are at most 8, else round values (1-2-5 per decade, or steps of a fifth)."""
    ticks = sorted(set(xs))
    if len(ticks) <= 8:
        return ticks
    lo, hi = min(xs), max(xs)
    if log_x:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        return [m * 10.0**e for e in decades for m in (1, 2, 5) if lo <= m * 10.0**e <= hi * (1 + 1e-9)]
    step = 10 ** math.floor(math.log10(hi - lo)) if hi > lo else 1.0
    step = step * 2 if (hi - lo) / step > 5 else step / 5 if (hi - lo) / step < 2 else step
    return [v * step for v in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def _projections(
    xs_all: Sequence[float], log_x: bool, y_range: Tuple[float, float], size: Tuple[int, int]
) -> Tuple[Callable[[float], float], Callable[[float], float]]:
    """Data -> pixel maps ``(px, py)`` of the plot area."""
    width, height = size
    left, right, top, bottom = MARGINS
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: float(v))
    x0, x1 = tx(min(xs_all)), tx(max(xs_all))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = y_range

    def px(v: float) -> float:
        return left + (tx(v) - x0) / (x1 - x0) * (width - left - right)

    def py(v: float) -> float:
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    return px, py


def line_chart(
    series: Series,
    *,
    title: str,
    x_label: str,
    y_label: str,
    log_x: bool = False,
    y_range: Tuple[float, float] = (0.0, 1.0),
    size: Tuple[int, int] = (720, 440),
) -> Image.Image:
    """Draw named ``(x, y)`` series as a line chart with markers and a legend."""
    width, height = size
    left, right, top, bottom = MARGINS
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs_all = [x for _, xs, _ in series for x in xs]
    px, py = _projections(xs_all, log_x, y_range, size)
    y0, y1 = y_range
    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for i in range(6):
        v = y0 + (y1 - y0) * i / 5
        draw.line([left, py(v), width - right, py(v)], fill=(225, 225, 225))
        draw.text((8, py(v) - 6), f"{v:.2f}", fill=(0, 0, 0), font=font)
    for v in _round_ticks(xs_all, log_x):
        draw.line([px(v), height - bottom, px(v), height - bottom + 4], fill=(0, 0, 0))
        draw.text((px(v) - 12, height - bottom + 8), f"{v:.3g}", fill=(0, 0, 0), font=font)
    draw.text((left, 10), title, fill=(0, 0, 0), font=font)
    draw.text(((width - right + left) // 2 - 40, height - 20), x_label, fill=(0, 0, 0), font=font)
    draw.text((8, top - 16), y_label, fill=(0, 0, 0), font=font)
    for i, (name, xs, ys) in enumerate(series):
        colour = cluster_colour(i)
        pts = [(px(x), py(min(max(y, y0), y1))) for x, y in zip(xs, ys)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        if len(pts) <= 30:
            for x, y in pts:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        ly = top + 8 + 16 * i
        draw.line([width - right + 10, ly + 6, width - right + 30, ly + 6], fill=colour, width=3)
        draw.text((width - right + 36, ly), name, fill=(0, 0, 0), font=font)
    return img


def _tau_series(results: Dict[str, Dict[str, Any]], key: str, taus: List[float]) -> List[Tuple[str, Any, Any]]:
    """NMI against tau per data set, their mean, and the mean over the 80 % subsets."""
    series, sub = [], []
    for n, res in results.items():
        d = res[key][defaults.DEFAULT_AGGREGATE] if key == "tau_unsup" else res[key]
        series.append((n, taus, [d[repr(t)][0] for t in taus]))
        sub.append([d[repr(t)][1] for t in taus])
    if len(series) > 1:
        series.append(("mean", taus, [float(np.mean([s[2][i] for s in series])) for i in range(len(taus))]))
    series.append(("mean, 80% subsets", taus, np.mean(np.asarray(sub), axis=0).tolist()))
    return series


def write_charts(results: Dict[str, Dict[str, Any]], out: Path) -> List[str]:
    """PNG charts; returns the file names written."""
    written = []
    first = next(iter(results.values()))
    taus = [float(t) for t in first["tau_semi"]]
    agg = defaults.DEFAULT_AGGREGATE
    for kind, key in (("unsupervised", "tau_unsup"), ("semi", "tau_semi")):
        title = f"NMI vs tau, {'unsupervised (' + agg + ')' if kind == 'unsupervised' else 'semi-supervised'}"
        chart = line_chart(_tau_series(results, key, taus), title=title, x_label="tau (log scale)", y_label="NMI",
                           log_x=len(taus) > 1)
        chart.save(out / f"tau_{kind}.png")
        written.append(f"tau_{kind}.png")
    fracs = [float(f) for f in first["normal_fraction"]]
    series = [(n, fracs, [res["normal_fraction"][repr(f)]["nmi"] for f in fracs]) for n, res in results.items()]
    line_chart(
        series, title="NMI vs share of labelled normal images", x_label="share (log scale)", y_label="NMI",
        log_x=len(fracs) > 1,
    ).save(out / "normal_fraction.png")
    written.append("normal_fraction.png")
    for n, res in results.items():
        series = []
        for key, summ in res["table3"].items():
            ks = np.asarray(summ["curve_k"], dtype=float)
            series.append((SHORT_NAMES[key], (ks / ks[-1]).tolist(), summ["curve_purity"]))
        line_chart(series, title=f"Purity vs K/N, {n} (Ward)", x_label="K / N", y_label="purity").save(
            out / f"purity_{n}.png"
        )
        written.append(f"purity_{n}.png")
    return written
