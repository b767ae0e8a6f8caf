"""The cluster command, ``anomclust-lite FOLDER``, as a sequence of small steps.

:func:`run_clustering` reads top to bottom: check the options, build the
estimator, collect the images, prepare the output folder, extract features,
fit, write the outputs, print the summary. Each step is a function of what
the earlier steps produced (:class:`Sources`, :class:`Features`,
:class:`Clustering`), so a new step or output slots in between without
touching the others. summary.json is built in :mod:`.summary`.

Every user error is a ``ValueError`` or ``OSError`` (incl.
``FileNotFoundError``) raised before any feature is extracted where possible;
:func:`cluster_command` (through :func:`.running.run_command`) turns it into
one line and exit status 1.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..core.defaults import DEFAULT_MEMORY_MB
from ..core.weights import describe_tau
from ..estimator.clusterer import AnomalyClusterer
from ..features.folders import ImageSet, collect_images, folder_labels, relative_name
from ..features.images import display_path
from ..files.cache_folder import CacheFolder
from .console import Console
from .extraction import ExtractorFactory, backbone_line, extract, extractor_record, make_extractor, skipped_note
from .cache import open_cache, trim_cache
from .folders import check_folder, prepare_out
from .naming import apply_review_names, cluster_majorities, cluster_names, read_review_for
from .output_set import staged_outputs
from .outputs import export_clusters, optional_number, write_csv, write_json, write_report
from .progress import duration
from .running import run_command
from .spill import bags_on_disk
from .summary import build_summary, consensus_text, k_text

__all__ = ["Sources", "Features", "Clustering", "run_clustering", "cluster_command"]


@dataclass(frozen=True)
class Sources:
    """The images to cluster (and the labelled normal images, with --normal)."""

    folder: Path
    images: ImageSet
    normal_folder: Optional[Path] = None
    normals: Optional[ImageSet] = None
    review: Optional[Any] = None


@dataclass(frozen=True)
class Features:
    """The extractor, what it made of the images (``ExtractionResult``-like objects) and the run's cache folder."""

    extractor: Any
    result: Any
    normal_result: Optional[Any]
    cache: Optional[CacheFolder]


@dataclass(frozen=True)
class Clustering:
    """The fitted model and, per readable image, its path, relative name and true label (from sub-folders)."""

    model: AnomalyClusterer
    paths: List[Path]
    rel: List[str]
    labels_true: Optional[List[str]]
    metrics: Optional[Dict[str, float]]


def cluster_command(args: argparse.Namespace) -> int:
    """``anomclust-lite FOLDER`` for parsed options: :func:`run_clustering`; returns the exit status."""
    return run_command(run_clustering, args)


def run_clustering(
    args: argparse.Namespace,
    *,
    extractor_factory: ExtractorFactory = make_extractor,
    console: Optional[Console] = None,
) -> Dict[str, Any]:
    """Run ``anomclust-lite FOLDER`` for parsed options; returns the summary written to summary.json.

    Raises ``ValueError`` / ``OSError`` (incl. ``FileNotFoundError``) for
    user errors; :func:`cluster_command` turns them into exit status 1.
    """
    console = console if console is not None else Console(args.quiet)
    started = time.perf_counter()
    timings: Dict[str, float] = {}
    folder, normal_folder, weights_mode = check_options(args)
    model = build_clusterer(args, weights_mode)
    check_model_file(args)
    sources = collect_sources(args, folder, normal_folder, console, timings)
    out = prepare_out(args.out, folder, "_clusters", command="cluster", normal=normal_folder,
                      export=args.export != "none")
    cache = open_cache(args, console)
    announce(sources, console)
    extractor = extractor_factory(args, None if cache is None else cache.store("features"))
    console.info(f"backbone: {backbone_line(extractor)}")
    with bags_on_disk(model, len(sources.images.paths), out, console) as bags_file:
        features = extract_features(args, sources, extractor, cache, console, timings, bags_file)
        clustering = fit_clusterer(args, model, sources, features, console, timings)
    with staged_outputs(out, "cluster") as stage:  # the outputs appear together, or not at all
        write_outputs(args, stage, sources, features, clustering, console, timings)
        trim_cache(cache, args, console)
        timings["total"] = time.perf_counter() - started
        summary = build_summary(args, out, sources, features, clustering, timings)
        write_json(stage / "summary.json", summary)
    print_summary(summary, sources, features, clustering, console)
    return summary


def check_options(args: argparse.Namespace) -> Tuple[Path, Optional[Path], str]:
    """The image folder, the normal folder (or None) and the weight mode, checked against each other."""
    folder = check_folder(args.folder, "image folder")
    normal_folder = check_folder(args.normal, "normal folder (--normal)") if args.normal else None
    weights_mode = args.weights or ("semi" if normal_folder is not None else "unsupervised")
    if weights_mode == "semi" and normal_folder is None:
        raise ValueError("--weights semi needs labelled normal images: pass --normal DIR")
    if weights_mode == "unsupervised" and normal_folder is not None:
        raise ValueError("--normal is ignored by --weights unsupervised; drop one of them")
    return folder, normal_folder, weights_mode


def build_clusterer(args: argparse.Namespace, weights_mode: str) -> AnomalyClusterer:
    """The estimator for the options, validated now (a bad combination fails before any extraction)."""
    model = AnomalyClusterer(
        args.k,
        weights=weights_mode,
        tau=args.tau,
        aggregate=args.aggregate,
        q=args.q,
        topk=args.topk,
        distance=args.distance,
        hausdorff_outer=args.hausdorff_outer,
        method=args.method,
        k_max=args.k_max,
        memory_mb=args.memory_mb if args.memory_mb is not None else DEFAULT_MEMORY_MB,
        n_threads=args.threads,
        seed=args.seed,
        reference_size=args.reference_size,
        bag_dtype=args.bag_dtype,
        good_group=args.good_group,
        good_rate=args.good_rate,
        new_type_rate=args.new_type_rate,
        exact=args.exact,
        bank_size=args.bank_size,
        fit_size=args.fit_size,
        project_out=args.project_out,
        consensus=args.consensus,
    )
    model.validate_params()
    return model


def check_model_file(args: argparse.Namespace) -> None:
    """A --model that is given must exist (checked before the long work)."""
    if args.model is not None and not Path(args.model).expanduser().is_file():
        raise FileNotFoundError(f"model {display_path(args.model)} does not exist; pass an existing .onnx file to --model")


def collect_sources(
    args: argparse.Namespace, folder: Path, normal_folder: Optional[Path], console: Console, timings: Dict[str, float]
) -> Sources:
    """List the images (and normal images); refuse too few; warn about unreadable folders and links."""
    t0 = time.perf_counter()
    default_excludes = not args.no_default_exclude
    images = collect_images(folder, excludes=args.exclude, default_excludes=default_excludes)
    normals = (
        collect_images(normal_folder, excludes=args.exclude, default_excludes=default_excludes)
        if normal_folder is not None
        else None
    )
    timings["listing"] = time.perf_counter() - t0
    n_found = len(images.paths)
    if n_found == 0:
        raise ValueError(
            f"no images found in {display_path(folder)} ({images.skipped_files} other files, "
            f"{len(images.excluded)} excluded)"
        )
    if n_found < 2:
        raise ValueError(f"need at least 2 images to cluster, found 1 in {display_path(folder)}")
    if args.k is not None and args.k > n_found:
        raise ValueError(f"--k {args.k} is larger than the number of images ({n_found}); choose --k <= {n_found}")
    if normals is not None and not normals.paths:
        raise ValueError(f"no images found in the normal folder {display_path(normal_folder)}")
    for problem in images.problems:
        console.warn(f"{display_path(problem.path)}: {problem.reason}")
    review = read_review_for(args.review, [relative_name(p, folder) for p in images.paths]) if args.review else None
    return Sources(folder, images, normal_folder, normals, review)


def announce(sources: Sources, console: Console) -> None:
    """Say how many images were found (and how many files were left out)."""
    images = sources.images
    console.info(
        f"{len(images.paths)} images in {display_path(sources.folder)}"
        + (f" ({len(images.excluded)} excluded, {images.skipped_files} other files skipped)"
           if images.excluded or images.skipped_files else "")
    )


def extract_features(
    args: argparse.Namespace,
    sources: Sources,
    extractor: Any,
    cache: Optional[CacheFolder],
    console: Console,
    timings: Dict[str, float],
    bags_file: Optional[Path] = None,
) -> Features:
    """Extract the features of the images (into ``bags_file`` when given) and of the normal images; refuse
    when too few could be read."""
    t0 = time.perf_counter()
    result = extract(extractor, sources.images.paths, args, console, "extracting features", bags_file)
    timings["extraction"] = time.perf_counter() - t0
    normal_result = None
    if sources.normals is not None:
        t0 = time.perf_counter()
        normal_result = extract(extractor, sources.normals.paths, args, console, "extracting normal features")
        timings["normal_extraction"] = time.perf_counter() - t0
        if normal_result.bags.shape[0] == 0:
            raise ValueError(
                f"none of the images in the normal folder {display_path(sources.normal_folder)} could be read"
            )
    n = len(result.paths)
    if n < 2:
        raise ValueError(f"need at least 2 readable images to cluster, found {n} (see the warnings above)")
    if args.k is not None and args.k > n:
        raise ValueError(f"--k {args.k} is larger than the number of readable images ({n}); choose --k <= {n}")
    return Features(extractor, result, normal_result, cache)


def fit_clusterer(
    args: argparse.Namespace,
    model: AnomalyClusterer,
    sources: Sources,
    features: Features,
    console: Console,
    timings: Dict[str, float],
) -> Clustering:
    """Fit the model on the readable images; score it against the sub-folder labels when there are any."""
    normal_bags = None if features.normal_result is None else features.normal_result.bags
    model.fit(features.result.bags, normal_bags=normal_bags, progress=console.stages(), cache=features.cache)
    timings.update(model.timings_)
    paths = list(features.result.paths)
    rel = [relative_name(p, sources.folder) for p in paths]
    labels_true = folder_labels(paths, sources.folder) if args.labels == "auto" else None
    metrics = None
    if labels_true is not None:
        from ..metrics import clustering_report

        metrics = {key: float(v) for key, v in clustering_report(labels_true, model.labels_).items()}
    return Clustering(model, paths, rel, labels_true, metrics)


# ---------------------------------------------------------------------- outputs


def write_outputs(
    args: argparse.Namespace,
    out: Path,
    sources: Sources,
    features: Features,
    clustering: Clustering,
    console: Console,
    timings: Dict[str, float],
) -> None:
    """Write clusters.csv, model.npz, report.html and the exported folders into ``out`` (the staging folder)."""
    console.info("writing results...")
    t0 = time.perf_counter()
    model = clustering.model
    if clustering.labels_true is not None:
        model.metadata_ = dict(model.metadata_, clusters=cluster_majorities(model.labels_, model.k_,
                                                                            clustering.labels_true))
    if sources.review is not None:
        carried = apply_review_names(model, sources.review, clustering.rel)
        console.info("names from the review: " + (", ".join(f"{c}={v}" for c, v in carried.items()) or "none"))
    names = cluster_names(model)
    write_clusters_csv(out, clustering, names)
    record = extractor_record(features.extractor)
    save_model(out, sources, clustering, record)
    t1 = time.perf_counter()
    write_report(out, model, clustering.paths, clustering.rel, clustering.labels_true, features.extractor,
                 report_facts(args, sources, features, clustering, record), clustering.metrics,
                 title=f"Anomaly clustering of {display_path(sources.folder.name)}", names=names)
    timings["report"] = time.perf_counter() - t1
    if args.export != "none":
        export_clusters(out, sources.folder, clustering.paths, model.labels_, args.export)
    timings["outputs"] = time.perf_counter() - t0


def write_clusters_csv(out: Path, clustering: Clustering, names: Dict[int, str]) -> None:
    """clusters.csv: path, cluster, name, distance to the centre, top patch score, trust fields (and the label)."""
    model, labels_true = clustering.model, clustering.labels_true
    labels = model.labels_
    top_scores = model.scores_.max(axis=1)
    rows = []
    for i, rel in enumerate(clustering.rel):
        row: List[object] = [rel, int(labels[i]), names.get(int(labels[i]), ""),
                             f"{model.center_distances_[i]:.6g}", f"{top_scores[i]:.6g}",
                             f"{model.anomaly_scores_[i]:.6g}", int(model.is_good_[i]),
                             optional_number(model.confidence_[i])]
        if labels_true is not None:
            row.append(labels_true[i])
        rows.append(row)
    header = ["path", "cluster", "name", "distance", "top_score", "anomaly_score", "is_good", "confidence"] + (
        ["label"] if labels_true is not None else [])
    write_csv(out / "clusters.csv", header, rows)


def save_model(out: Path, sources: Sources, clustering: Clustering, record: Dict[str, Any]) -> None:
    """model.npz: the fitted model, its extractor record (for ``assign``) and the report's heat-map scale."""
    from ..report.build import HEAT_RANGE_KEY, fit_heat_range  # the report's scale, reused by assign

    model = clustering.model
    model.save(out / "model.npz", metadata=dict(model.metadata_, extractor=record,
                                                 folder=display_path(sources.folder), n_images=len(clustering.paths),
                                                 **{HEAT_RANGE_KEY: list(fit_heat_range(model))}))


def report_facts(
    args: argparse.Namespace, sources: Sources, features: Features, clustering: Clustering, record: Dict[str, Any]
) -> Dict[str, object]:
    """The settings shown at the top of report.html."""
    model = clustering.model
    facts: Dict[str, object] = {
        "folder": display_path(sources.folder),
        "K": f"{model.k_} ({k_text(model.k_choice_)})",
        "weights": f"{model.weights}" + (f", tau = {describe_tau(model.effective_tau)}" if model.effective_tau else ""),
        "distance / method": f"{args.distance} / {args.method}" + consensus_text(model),
        "nuisance directions removed": f"{model.projection_.rank} (--project-out {model.project_out})",
        "backbone": backbone_line(features.extractor),
        "model": f"{record['model_path']} ({record['output']}, grid {record['grid'][0]}x{record['grid'][1]})",
    }
    if model.fit_sample_ is not None:
        n, s = len(model.labels_), len(model.fit_sample_)
        facts["fitted sample"] = f"{s} of {n} images (--fit-size {model.fit_size}); the other {n - s} assigned to its clusters"
    if sources.normal_folder is not None:
        facts["normal images"] = f"{display_path(sources.normal_folder)} ({features.normal_result.bags.shape[0]})"
    return facts


def print_summary(
    summary: Dict[str, Any], sources: Sources, features: Features, clustering: Clustering, console: Console
) -> None:
    """The result lines: K and the cluster sizes, a weak clustering, what was skipped, the metrics, the files."""
    model = clustering.model
    console.result(f"{summary['n_images']} images -> {summary['k']} clusters (K {k_text(model.k_choice_)}); "
                   f"sizes: {', '.join(map(str, summary['cluster_sizes']))}"
                   + (f"; {int((model.labels_ < 0).sum())} in the good group" if model.good_group_ else ""))
    if model.weak_:
        hint = "another K" if model.weights == "semi" else "another K or --normal"
        console.warn("weak clustering: " + "; ".join(model.weak_) + f" (see 'confidence' in clusters.csv; try {hint})")
    images = sources.images
    note = skipped_note(len(features.result.failures), len(images.paths), len(images.problems))
    if note is not None:
        console.result(note)
    metrics = summary["metrics"]
    if metrics is not None:
        console.result(
            f"against the folder labels: NMI {metrics['nmi']:.3f}, ARI {metrics['ari']:.3f}, "
            f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['f1_macro']:.3f}"
        )
    console.result(f"results in {summary['out']} (clusters.csv, summary.json, report.html, model.npz); "
                   f"total time {duration(summary['timings']['total'])}")
