"""The reproduction's Markdown tables, built from the per-dataset results.

Most tables have a label column, one column per data set and a ``mean``
column: :func:`_header` and :func:`_line` write those, so each table
function only says which number goes in which row.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from anomclust_lite import AGGREGATES
from anomclust_lite.core import defaults

from .experiments import METRIC_KEYS, PURITY_TARGETS
from .timing import StageRecord, maxrss_mib

Results = Dict[str, Dict[str, Any]]

METRIC_NAMES = {"nmi": "NMI", "ari": "ARI", "accuracy": "F1 micro (=acc)", "f1_macro": "F1 macro"}
#: The paper's WideResNet-50 NMI (Table 1): (unsupervised WA, semi-supervised WA).
PAPER_WRN50_NMI = {"bottle": (0.495, 0.607), "pill": (0.469, 0.515), "mtd": (0.179, 0.390)}
#: Rows of Tables 1 and 3: result key, label.
T1_ROWS = (
    ("avg_pool", "Average pooling (uniform weights)"),
    ("max_hausdorff", "Max-Hausdorff"),
    ("wa_unsup", "WA unsupervised"),
    ("wa_semi", "WA semi-supervised"),
    ("wa_mask", "WA ground-truth-mask weights"),
)


def _f(v: Optional[float], digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _header(first: str, results: Results, *extra: str) -> List[str]:
    """``first``, one column per data set, ``mean``, then ``extra``."""
    return [first] + list(results) + ["mean"] + list(extra)


def _line(label: Any, values: Sequence[Optional[float]], *tail: str, cells: Optional[Sequence[str]] = None) -> List[Any]:
    """``label``, one cell per data set (``cells``, default the values), their mean, then ``tail``."""
    return [label] + list(cells if cells is not None else map(_f, values)) + [_f(_mean(values))] + list(tail)


def _first(results: Results) -> Dict[str, Any]:
    return next(iter(results.values()))


def table1_md(results: Results) -> str:
    """Table 1 analogue: the five embeddings with Ward, four metrics, beside the paper's NMI."""
    out = [
        "## Table 1 analogue: main results (Ward)\n",
        f"WA unsupervised: aggregate `{defaults.DEFAULT_AGGREGATE}`, tau = {defaults.DEFAULT_TAU_UNSUPERVISED}; "
        f"WA semi-supervised: tau = {defaults.DEFAULT_TAU_SEMI}.\n",
    ]
    for key in METRIC_KEYS:
        rows = [_line(label, [res["table1"][row][key] for res in results.values()]) for row, label in T1_ROWS]
        if key == "nmi":
            rows += [
                _line(f"*paper, WRN-50: {label}*", [PAPER_WRN50_NMI.get(n, (None, None))[j] for n in results])
                for j, label in enumerate(("WA unsupervised", "WA semi-supervised"))
            ]
        out.append(f"### {METRIC_NAMES[key]}\n\n" + _table(_header("method", results), rows))
    return "\n".join(out)


def table2_md(results: Results) -> str:
    """Table 2 analogue: every clustering method on max-Hausdorff distances and WA embeddings."""
    out = ["## Table 2 analogue: clustering methods\n"]
    header = ["method"] + [f"{n} {kind}" for n in results for kind in ("Haus", "WA")] + ["mean Haus", "mean WA"]
    for key in ("nmi", "ari"):
        rows = []
        for method in _first(results)["table2"]:
            haus = [res["table2"][method]["max_hausdorff"][key] for res in results.values()]
            wa = [res["table2"][method]["wa_unsup"][key] for res in results.values()]
            rows.append([method] + [_f(v) for pair in zip(haus, wa) for v in pair] + [_f(_mean(haus)), _f(_mean(wa))])
        out.append(
            f"### {METRIC_NAMES[key]} (Haus = max-Hausdorff distances; WA = WA unsupervised embeddings)\n\n"
            + _table(header, rows)
        )
    return "\n".join(out)


def table3_md(results: Results) -> str:
    """Table 3 analogue: purity with over-clustering (mAUC, R@P) per data set and embedding, and means."""
    columns = ["mauc"] + [f"r@{p}" for p in PURITY_TARGETS]
    labels = dict(T1_ROWS)
    rows = [
        [n, labels[key]] + [_f(summ[c]) for c in columns]
        for n, res in results.items()
        for key, summ in res["table3"].items()
    ]
    rows += [
        ["**mean**", label] + [_f(_mean([res["table3"][key][c] for res in results.values()])) for c in columns]
        for key, label in T1_ROWS
    ]
    header = ["dataset", "embedding", "mAUC"] + [f"R@{p}" for p in PURITY_TARGETS]
    return (
        "## Table 3 analogue: purity with over-clustering (Ward linkage cut at every K)\n\n"
        "mAUC: mean purity over K/N; R@P: 1 - K_min/N at the smallest K reaching purity P.\n\n"
        + _table(header, rows)
    )


def table5_md(results: Results) -> str:
    """Table 5 analogue: the Hausdorff variants, and the patch-score aggregates (with an oracle tau column)."""
    variants = [
        _line(v, [res["hausdorff"][v]["nmi"] for res in results.values()]) for v in _first(results)["hausdorff"]
    ]
    aggregates = [
        _line(
            agg + (f" (q={defaults.DEFAULT_TOPK_FRACTION})" if agg == "topk_mean" else ""),
            [res["aggregates"][agg]["nmi"] for res in results.values()],
            _f(_mean([max(v[0] for v in res["tau_unsup"][agg].values()) for res in results.values()])),
        )
        for agg in AGGREGATES
    ]
    return "\n".join([
        "## Table 5 analogue: bag distances and score aggregates (Ward, NMI)\n",
        "### Hausdorff variants (inner/outer; '-' = symmetric inner)\n\n"
        + _table(_header("variant", results), variants),
        f"### WA unsupervised, patch-score aggregate (tau = {defaults.DEFAULT_TAU_UNSUPERVISED}; last column: "
        "mean of each dataset's best tau in the grid, an oracle)\n\n"
        + _table(_header("aggregate", results, "mean (best tau per set)"), aggregates),
    ])


def _tau_table(results: Results, sweeps: List[Dict[str, List[float]]]) -> str:
    """One line per tau of ``sweeps`` (one per data set, ``{tau: [NMI, NMI over subsets]}``)."""
    rows = [
        _line(t, [s[t][0] for s in sweeps], _f(_mean([s[t][1] for s in sweeps])))
        for t in _first(results)["tau_semi"]
    ]
    return _table(_header("tau", results, "mean (sub)"), rows)


def tau_md(results: Results) -> str:
    """Figure 6 analogue: NMI against tau, unsupervised (default aggregate), semi-supervised, every aggregate."""
    agg0 = defaults.DEFAULT_AGGREGATE
    unsup = [res["tau_unsup"][agg0] for res in results.values()]
    semi = [res["tau_semi"] for res in results.values()]
    rows = [
        [t] + [
            " / ".join(_f(_mean([res["tau_unsup"][agg][t][i] for res in results.values()])) for i in (0, 1))
            for agg in AGGREGATES
        ]
        for t in _first(results)["tau_semi"]
    ]
    return "\n".join([
        "## Tau sensitivity (Figure 6 analogue; Ward NMI; tau in patch-distance units)\n",
        "Each cell: NMI on all images; `sub`: mean NMI over seeded 80 % subsamples of the images "
        "(less noisy; the defaults were chosen on it).\n",
        f"### Unsupervised, aggregate `{agg0}`\n\n" + _tau_table(results, unsup),
        "### Semi-supervised (all labelled normal images)\n\n" + _tau_table(results, semi),
        "### Unsupervised, every aggregate: mean over datasets (all images / sub)\n\n"
        + _table(["tau"] + list(AGGREGATES), rows),
    ])


def normal_fraction_md(results: Results) -> str:
    """Figure 8 analogue: WA semi-supervised NMI against the share of labelled normal images."""
    rows = []
    for f in _first(results)["normal_fraction"]:
        points = [res["normal_fraction"][f] for res in results.values()]
        cells = [f"{_f(p['nmi'])} ({p['n_normal']})" for p in points]
        rows.append(_line(f"{float(f) * 100:g} %", [p["nmi"] for p in points], cells=cells))
    return (
        "## Labelled normal images (Figure 8 analogue; WA semi-supervised, Ward NMI)\n\n"
        f"Nested seeded subsamples of the normal set; tau = {defaults.DEFAULT_TAU_SEMI}. "
        "In brackets: number of normal images.\n\n" + _table(_header("share", results), rows)
    )


def good_group_md(results: Results) -> str:
    """The second table of issue 16: the estimator with the good group set apart vs the paper's protocol."""
    rows = []
    for mode in ("off", "auto"):
        for key in ("nmi", "ari", "f1_macro"):
            rows.append(_line(f"{mode}: {key}", [res["good_group"][mode][key] for res in results.values()]))
    for key in ("good_precision", "good_recall"):
        rows.append(_line(f"auto: {key.replace('_', ' ')}", [res["good_group"]["auto"][key] for res in results.values()]))
    rows.append(_line("auto: good group size", [float(res["good_group"]["auto"]["good_size"]) for res in results.values()],
                      cells=[str(res["good_group"]["auto"]["good_size"]) for res in results.values()]))
    return (
        "## The good group (issue 16): semi-supervised, the estimator's defaults\n\n"
        "`off` is the paper's protocol (every image clustered into K classes, as in the tables above); "
        "`auto` sets the images at or below the threshold calibrated on the normal images apart (the good "
        "group, one more cluster in the metrics) and clusters the rest into K - 1 defect types. Precision / "
        "recall: of the good group for the defect-free class.\n\n" + _table(_header("setting", results), rows)
    )


def timing_md(records: Sequence[StageRecord], total_wall: float, total_cpu: float) -> str:
    """Wall, CPU and memory of every stage, and the total."""
    rows = [
        [r.dataset, r.stage, f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}", f"{r.traced_peak_mib:.0f}", f"{r.maxrss_mib:.0f}", r.note]
        for r in records
    ]
    rows.append(["**total**", "", f"{total_wall:.1f}", f"{total_cpu:.1f}", "", f"{maxrss_mib():.0f}", ""])
    return (
        "## Time and memory per stage\n\n"
        f"Machine: {os.cpu_count()} logical CPUs. Peak = `tracemalloc` peak of the stage (NumPy and Python "
        "allocations; not onnxruntime's own memory); maxrss = `resource.getrusage(RUSAGE_SELF).ru_maxrss` of "
        "the process after the stage (a high-water mark over the whole run so far). CPU = user + system "
        "seconds of the process.\n\n"
        + _table(["dataset", "stage", "wall s", "CPU s", "peak MiB (tracemalloc)", "maxrss MiB", "note"], rows)
    )


def all_tables(results: Results, records: Sequence[StageRecord], total_wall: float, total_cpu: float) -> Dict[str, str]:
    """``{file name: Markdown}`` of every table, in the order of ``summary.md``."""
    return {
        "table1_main.md": table1_md(results),
        "table2_methods.md": table2_md(results),
        "table3_purity.md": table3_md(results),
        "table5_variants.md": table5_md(results),
        "tau.md": tau_md(results),
        "normal_fraction.md": normal_fraction_md(results),
        "good_group.md": good_group_md(results),
        "timing.md": timing_md(records, total_wall, total_cpu),
    }
