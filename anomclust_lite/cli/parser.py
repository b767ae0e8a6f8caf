"""Command-line options of ``anomclust-lite``: the two argument parsers and their value types.

Kept apart from the modules that run the commands (:mod:`.cluster`, :mod:`.assign`), so that
the option set (names, defaults, help texts) can be read in one place.
"""

from __future__ import annotations

import argparse
from typing import Callable, Optional

import numpy as np

from ..clustering.auto_k import DEFAULT_K_MAX
from ..estimator.params import CONSENSUS_MODES, DEFAULT_REFERENCE_SIZE, DISTANCES, WEIGHT_MODES
from ..clustering.dispatch import METHODS
from ..core.anomaly import DEFAULT_RATE
from ..core.coreset import MIN_CORESET_PATCHES
from ..core.defaults import (
    BAG_DTYPES,
    DEFAULT_AGGREGATE,
    DEFAULT_BANK_SIZE,
    DEFAULT_CONSENSUS,
    DEFAULT_FIT_SIZE,
    DEFAULT_SCORE_REFERENCE,
    DEFAULT_SUBSAMPLE_FROM,
    DEFAULT_MEMORY_MB,
    DEFAULT_METHOD,
    DEFAULT_PROJECT_OUT,
    DEFAULT_TAU_SEMI,
    DEFAULT_TAU_UNSUPERVISED,
    DEFAULT_TOPK_FRACTION,
    THREADS_PER_CPU_MAX,
)
from ..core.validation import check_n_threads
from ..core.weights import check_tau
from ..features.images import DEFAULT_MAX_PIXELS
from .cache import add_cache_options
from .outputs import PROG
from ..core.scores import AGGREGATES

__all__ = ["DEFAULT_EXCLUDE_NOTE", "build_parser", "build_assign_parser"]

#: What is skipped by default (``--no-default-exclude`` keeps it).
DEFAULT_EXCLUDE_NOTE = "files whose name (without extension) ends with '_mask', and folders named 'ground_truth'"

_DESCRIPTION = """\
Group the images of defective parts in FOLDER into clusters of defect types
(Anomaly Clustering, Sohn et al., WACV 2023).

Every image is cut into patches (a grid of feature vectors from a small CNN,
an ONNX model). Patches that look unusual - the defect - get most of the
weight, and each image becomes the weighted average of its patches, so that
images with similar defects end up close together. The images are then
clustered; results go to --out.

To assign new images to the clusters of an earlier run:
  %(prog)s assign OUT/model.npz NEW_FOLDER [--out DIR]
To name clusters by hand (stored in model.npz, shown by assign):
  %(prog)s name OUT 3=scratch 5=crack
To list the backbones (feature extractors), or build the paper's WideResNet-50-2:
  %(prog)s backbones [build wrn50 [--checkpoint PATH]]
(a FOLDER literally named 'assign', 'name' or 'backbones' must be given as ./assign, ./name, ./backbones)."""

_EPILOG = """\
weights (how much each patch counts):
  unsupervised  a patch scores high when it is unlike the patches of the other
                images in FOLDER; no labels needed (default without --normal)
  semi          a patch scores high when it is unlike every patch of the
                labelled defect-free images in --normal (default with --normal;
                usually better when you have such images)
  topk          only the --topk highest-scoring patches count
  uniform       every patch counts the same (plain average, a baseline)
  --tau sets how sharply the weight concentrates on the highest-scoring
  patches: a patch whose score is higher by tau gets e (2.7) times the weight.
  Smaller tau = only the most anomalous patches count; larger = closer to a
  plain average. Scores are patch distances between 0 and 2. Written Cx
  (e.g. 0.4x), tau is C times each image's own standard deviation of its
  patch scores, so it follows how spread that image's scores are (the
  semi-supervised default: scores against many good images are lower and
  closer together than against a few).

number of clusters:
  without --k, K is read off the corner of the merge-cost graph (L-method):
  merging two different defect types costs much more than merging within a
  type, so the cost of each merge falls steeply, then flattens; K (at most
  --k-max, never 2; 1 with fewer than 6 images) is where the two straight
  lines that fit the graph best meet. The fit error of every K (lower is
  better) is in summary.json. On MVTec bottle, pill and MTD it lands within
  2 of the true number of types; pass --k when you know it. A K larger than
  the number of defect types is fine (over-clustering); it must not exceed
  the number of images.

labels:
  if every image sits in a first-level sub-folder (FOLDER/good/..,
  FOLDER/scratch/..) and there are at least two, the sub-folder names are
  taken as the true types and NMI, ARI, accuracy and macro-F1 are printed.

unreadable images:
  empty, truncated or corrupt files, non-images with an image extension,
  unreadable files, images over --max-pixels pixels (default 89,478,485) and
  images the model turns into NaN or inf are skipped with a warning each and
  a count on stdout (--on-error fail stops at the first one instead); broken
  links, link loops and unreadable folders are skipped the same way. All are
  listed in summary.json. 16-bit, alpha, palette, CMYK and EXIF-rotated
  images are converted (alpha over black) and images smaller than --crop are
  upsampled.

skipped files:
  by default, files whose name ends with '_mask' (before the extension) and
  everything in folders named 'ground_truth' are skipped (MVTec AD masks;
  --no-default-exclude keeps them). Add patterns with --exclude, matched
  against the path relative to FOLDER and against the file name, e.g. for
  the Magnetic Tile Defect data, whose masks are .png files beside the .jpg
  images: --exclude '*.png'.

outputs (in --out, default FOLDER/../<name>_clusters):
  clusters.csv   path, cluster, distance to the cluster centre (to the
                 cluster's medoid for hausdorff-* distances), top patch
                 score, true label
  summary.json   parameters, K and how it was chosen, cluster sizes,
                 metrics, skipped files, timings, versions
  report.html    one offline page to review the clusters: regroup at any K,
                 a map, sort, zoom with heat maps, name clusters, move
                 images, export review.csv/review.json
  model.npz      everything needed by '%(prog)s assign'
  cluster_<k>/   the images themselves, with --export symlink|copy
  Every file is written to a temporary file and renamed, so an interrupted
  run leaves the previous results (or none), never a half-written file. The
  output folder is checked for writing (and space for a small file) before
  any feature is extracted.

cache:
  features, patch scores and embeddings are cached in one folder shared by
  every run (default the user cache; --cache-dir DIR, --no-cache), keyed by
  the images' content and every setting they depend on: a rerun on the same
  images with another --k, --method or clustering option scores nothing, one
  with another --tau skips the patch comparisons, and a rerun after Ctrl-C
  continues where it stopped. The least recently used entries go when the
  folder outgrows --cache-max-mb. 'anomclust-lite cache info|clear' shows or
  empties it.

memory:
  the features take N x M x D x 4 bytes (x 2 with --bag-dtype float16; e.g.
  100 images x 784 patches x 128 dims = 40 MB), the distance computations at
  most --memory-mb on top.

exit status: 0 success, 1 error (bad folder, no images, ...; one line on
stderr), 2 bad option, 130 interrupted (Ctrl-C)."""

_ASSIGN_DESCRIPTION = """\
Assign the images in NEW_FOLDER to the clusters of an earlier run, saved in
its model.npz. The same feature extractor (recorded in the model) is used;
every image goes to the cluster whose centre is nearest. Images unlike
anything the model was fitted on (novelty above their cluster's threshold,
set so that 5 percent of the fitted images would be flagged) are flagged new_type;
images in the good group never are. Images that were part of the earlier run
keep their cluster (column fitted = 1).

Writes assignments.csv (path, cluster, name, distance, anomaly_score,
is_good, confidence, novelty, new_type, fitted) and report.html (the clusters
and the possible new types, to review) to --out (default
NEW_FOLDER/../<name>_assignments)."""


# ---------------------------------------------------------------------- arguments


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers ``>= low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_k_max = _int_at_least(2)
_non_negative_int = _int_at_least(0)


def _project_out(text: str) -> "int | str":
    """``--project-out``: ``auto`` or an integer >= 0."""
    if text == "auto":
        return text
    try:
        return _non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 0, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _rate(text: str) -> float:
    """A stated false-reject or false-flag rate: a fraction in (0, 1) such as ``0.05``."""
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) such as 0.05 for 5 %, got {text!r}")
    return value


def _bank_size(text: str) -> "int | float":
    """``--bank-size``: a fraction in (0, 1] such as ``0.1``, or a whole number of patches such as ``20000``."""
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return _fraction(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction in (0, 1] (e.g. 0.1) or a number of patches >= 1 (e.g. 20000), got {text!r}") from None


def _tau(text: str) -> "float | str":
    """``--tau``: a positive number, or ``Cx`` (relative to each image's score spread)."""
    try:
        return check_tau(text.strip() if text.strip().lower().endswith("x") else _positive_float(text), "--tau")
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"expected a positive number (e.g. 0.02) or Cx with C > 0 (e.g. 0.4x), got {text!r}") from None


def _threads(text: str) -> int:
    try:
        return check_n_threads(_positive_int(text), "--threads")  # type: ignore[return-value]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _crop(text: str) -> Optional[int]:
    if text.strip().lower() in ("0", "none"):
        return None
    return _positive_int(text)


def _add_extractor_options(p: argparse.ArgumentParser, *, for_assign: bool) -> None:
    g = p.add_argument_group("feature extractor")
    if for_assign:
        g.add_argument("--model", metavar="PATH",
                       help="ONNX model file; default: the one recorded in the model.npz (it must be the same file)")
    else:
        which = g.add_mutually_exclusive_group()
        which.add_argument("--model", metavar="PATH",
                           help="an ONNX feature-extractor model file; default: --backbone, else $ANOMCLUST_MODEL, "
                                "else the built-in ResNet-50 v2 backbone (no download)")
        which.add_argument("--backbone", metavar="NAME",
                           help="a backbone by name: resnet50v2 (built in, the default), wrn50 (the paper's "
                                f"WideResNet-50-2, once built with '{PROG} backbones build wrn50'), or a name given "
                                f"at that build; '{PROG} backbones' lists them")
        g.add_argument("--model-output", metavar="NAME",
                       help="which output of the model to use, when it has several (e.g. relu_43)")
        g.add_argument("--resize", type=_positive_int, default=256, metavar="PIXELS",
                       help="resize the shorter image side to this many pixels (default 256)")
        g.add_argument("--crop", type=_crop, default=224, metavar="N|none",
                       help="centre crop of N x N pixels after resizing (default 224); 0 or 'none' resizes the "
                            "whole frame to RESIZE x RESIZE instead")
    g.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images with more than N pixels (width x height; also after resizing), as possible "
                        f"decompression bombs (default {DEFAULT_MAX_PIXELS:,}, Pillow's limit)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the backbone runs (default cpu); cuda needs onnxruntime-gpu installed instead of "
                        "onnxruntime and never falls back to the CPU")
    g.add_argument("--threads", type=_threads, metavar="N",
                   help="CPU threads of the model and of the scoring kernels (default: one per core; "
                        f"at most {THREADS_PER_CPU_MAX} per core)")
    add_cache_options(p, g)


def _add_common_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("files and output")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip images whose path relative to the folder, or file name, matches GLOB "
                        "(repeatable; e.g. --exclude '*.png')")
    g.add_argument("--no-default-exclude", action="store_true",
                   help=f"do not skip {DEFAULT_EXCLUDE_NOTE}")
    g.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                   help="an unreadable image: skip it with a warning (default) or stop with an error")
    g.add_argument("--memory-mb", type=_positive_float, metavar="MIB",
                   help=f"working memory of the distance computations in MiB (default {DEFAULT_MEMORY_MB:g})")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")


def _add_exact_option(g: "argparse._ArgumentGroup") -> None:
    """``--exact``: every approximation that makes large runs fast, off."""
    g.add_argument("--exact", action="store_true",
                   help="switch every approximation off. Default: with --normal, score against a coreset of "
                        f"{DEFAULT_BANK_SIZE * 100:g}%% of the normal patches (at least {MIN_CORESET_PATCHES}); "
                        f"without, score against {DEFAULT_SCORE_REFERENCE} sampled images from "
                        f"{DEFAULT_SUBSAMPLE_FROM} images on; above {DEFAULT_FIT_SIZE} images, fit a sample of "
                        f"{DEFAULT_FIT_SIZE} and assign the rest. Slower (README 'Speed')")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``anomclust-lite FOLDER [options]``."""
    from .. import __version__

    p = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG % {"prog": PROG},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", metavar="FOLDER", help="folder of images (searched recursively)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--out", metavar="DIR", help="output folder (default FOLDER/../<name>_clusters; not inside FOLDER)")
    p.add_argument("--k", type=_positive_int, metavar="N", help="number of clusters (default: chosen automatically)")
    p.add_argument("--k-max", type=_k_max, default=DEFAULT_K_MAX, metavar="N",
                   help=f"largest K tried when choosing K automatically (default {DEFAULT_K_MAX})")
    p.add_argument("--labels", choices=("auto", "none"), default="auto",
                   help="auto: use first-level sub-folder names as true types when possible (default); none: never")
    p.add_argument("--review", metavar="FILE",
                   help="name the clusters from a review exported from an earlier run's report (review.csv or "
                        "review.json): each cluster takes the name most of its images carry there")
    p.add_argument("--export", choices=("none", "symlink", "copy"), default="none",
                   help="also put the images into OUT/cluster_<k>/ as symlinks or copies (default none)")
    _add_method_options(p)
    _add_extractor_options(p, for_assign=False)
    _add_common_options(p)
    return p


def _add_method_options(p: argparse.ArgumentParser) -> None:
    """The "method" group of the cluster command."""
    g = p.add_argument_group("method")
    g.add_argument("--normal", metavar="DIR",
                   help="folder of labelled defect-free images: enables semi-supervised weights")
    g.add_argument("--weights", choices=WEIGHT_MODES,
                   help="how patches are weighted (see below); default semi with --normal, else unsupervised")
    g.add_argument("--tau", type=_tau, metavar="T|Cx",
                   help=f"weight temperature (see below): a number, or Cx for C times each image's own score "
                        f"spread; default {DEFAULT_TAU_UNSUPERVISED:g} unsupervised, {DEFAULT_TAU_SEMI} semi; "
                        "with --weights topk: none = equal weights on the top patches")
    g.add_argument("--aggregate", choices=AGGREGATES, default=DEFAULT_AGGREGATE,
                   help="unsupervised scores: how a patch's distances to the other images are combined "
                        f"(default {DEFAULT_AGGREGATE})")
    g.add_argument("--q", type=_fraction, default=DEFAULT_TOPK_FRACTION,
                   help=f"fraction of nearest images averaged by --aggregate topk_mean (default {DEFAULT_TOPK_FRACTION:g})")
    g.add_argument("--topk", type=_positive_int, metavar="K",
                   help="patches kept by --weights topk (default: a tenth of the patches)")
    g.add_argument("--distance", choices=DISTANCES, default="wa",
                   help="wa: distance between the weighted averages (the method; default); hausdorff-*: "
                        "unweighted patch-set distances (baselines)")
    g.add_argument("--hausdorff-outer", choices=("max", "mean"), default="max",
                   help="how the two directions of a Hausdorff distance are combined (default max)")
    g.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help=f"clustering algorithm (default {DEFAULT_METHOD})")
    g.add_argument("--project-out", type=_project_out, default="auto", metavar="R",
                   help="remove the R main directions of variation of the images' patches (what good parts vary "
                        f"in) from the embeddings before clustering; auto: {DEFAULT_PROJECT_OUT} for features of "
                        "128 or more dimensions (default); 0: the paper's method (README 'The method in one paragraph')")
    g.add_argument("--consensus", choices=CONSENSUS_MODES, default=DEFAULT_CONSENSUS,
                   help="auto: with --method ward and softmax weights, cluster by the consensus of the Ward trees at "
                        "0.5-1.5 times tau (more accurate on average: +0.013 NMI on the shared data, BENCHMARKS.md "
                        f"'Consensus Ward'); off: the one tree at tau, the paper's method (default {DEFAULT_CONSENSUS})")
    g.add_argument("--seed", type=_non_negative_int, default=0, metavar="N", help="random seed (default 0)")
    g.add_argument("--bag-dtype", choices=BAG_DTYPES, default="float32",
                   help="how the features are held in memory: float16 halves it (results within 1e-3 NMI; "
                        "default float32)")
    g.add_argument("--reference-size", type=_positive_int, default=DEFAULT_REFERENCE_SIZE, metavar="N",
                   help="images (or images' worth of normal patches) kept in model.npz to weight new images "
                        f"in 'assign' (default {DEFAULT_REFERENCE_SIZE})")
    _add_exact_option(g)
    g.add_argument("--bank-size", type=_bank_size, default=DEFAULT_BANK_SIZE, metavar="F|N",
                   help=f"with --normal, the coreset of the normal patches scored against (and of the novelty "
                        f"reference's patches kept in model.npz): a fraction "
                        f"(default {DEFAULT_BANK_SIZE:g}, at least {MIN_CORESET_PATCHES} patches) or a number of "
                        "patches; larger is slower and closer to --exact (README 'Speed')")
    g.add_argument("--fit-size", type=_int_at_least(2), default=DEFAULT_FIT_SIZE, metavar="N",
                   help=f"above N images (default {DEFAULT_FIT_SIZE}), fit a seeded sample of N and assign the "
                        "others to its clusters in chunks; their features then stay on disk in a temporary file "
                        "inside --out while the run lasts, so memory does not grow with the number of images "
                        "(README 'Memory model')")
    _add_trust_options(g)


def _add_trust_options(g: "argparse._ArgumentGroup") -> None:
    """The good group and the stated rates of the cluster command (calibrated when fitting)."""
    g.add_argument("--good-group", choices=("off", "auto"), default="off",
                   help="auto: with --normal, set the likely-good images apart (cluster -1, is_good = 1) and "
                        "cluster the rest, K counting defect clusters only; off: cluster every image, the "
                        "paper's protocol (default off: on pill it also sets apart many subtly defective "
                        "images, see BENCHMARKS.md)")
    g.add_argument("--good-rate", type=_rate, default=DEFAULT_RATE, metavar="R",
                   help=f"with --normal, the stated rate at which a good part is not counted good (is_good = 0; "
                        f"default {DEFAULT_RATE:g}); higher keeps more subtly defective parts out of is_good")
    g.add_argument("--new-type-rate", type=_rate, default=DEFAULT_RATE, metavar="R",
                   help=f"the stated rate at which 'assign' flags an image like the fitted ones as a new type "
                        f"(default {DEFAULT_RATE:g}); higher catches more new types at more false flags "
                        "(README 'How far to trust the results')")


def build_assign_parser() -> argparse.ArgumentParser:
    """The parser of ``anomclust-lite assign MODEL.npz NEW_FOLDER [options]``."""
    p = argparse.ArgumentParser(
        prog=f"{PROG} assign",
        description=_ASSIGN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("cluster_model", metavar="MODEL.npz", help="model.npz written by a clustering run")
    p.add_argument("folder", metavar="NEW_FOLDER", help="folder of new images (searched recursively)")
    p.add_argument("--out", metavar="DIR", help="output folder (default NEW_FOLDER/../<name>_assignments)")
    p.add_argument("--new-type-threshold", type=_positive_float, metavar="X",
                   help="flag images whose novelty exceeds X as new types, in every cluster "
                        "(default: each cluster's threshold stored in the model)")
    _add_extractor_options(p, for_assign=True)
    _add_common_options(p)
    return p
