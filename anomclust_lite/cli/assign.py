"""The assign command, ``anomclust-lite assign MODEL.npz NEW_FOLDER``: new images into the clusters of a run.

The model.npz of a clustering run records its feature extractor
(:func:`.extraction.extractor_record`); the same ONNX model (checked by its
SHA-256) and settings are used for the new images, and every image goes to
the nearest cluster centre (see :mod:`anomclust_lite.estimator.assign`).
:func:`run_assign` reads top to bottom: load the model, collect the images,
prepare the output, build and check the extractor, extract, assign, write
assignments.csv and report.html, print the summary.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..estimator.assign import Assignment
from ..estimator.clusterer import AnomalyClusterer
from ..features.folders import ImageSet, collect_images, relative_name
from ..features.images import display_path
from .console import Console
from .extraction import ExtractorFactory, extract, make_extractor, problem_dicts, skipped_note
from .cache import open_cache, trim_cache
from .folders import check_folder, prepare_out
from .naming import cluster_names, fit_notes
from .output_set import check_member, open_run_folder, staged_outputs
from .outputs import optional_number, write_assign_report, write_csv
from .running import run_command
from .spill import bags_on_disk

__all__ = ["run_assign", "assign_command"]

#: What a model.npz must record of its extractor for ``assign`` to rebuild it.
_RECORD_KEYS = {"model_path", "model_sha256", "output", "resize", "crop"}
#: The columns of assignments.csv.
ASSIGNMENT_COLUMNS = ["path", "cluster", "name", "distance", "anomaly_score", "is_good", "confidence", "novelty",
                      "new_type", "fitted"]


def assign_command(args: argparse.Namespace) -> int:
    """``anomclust-lite assign`` for parsed options: :func:`run_assign`; returns the exit status."""
    return run_command(run_assign, args)


def run_assign(
    args: argparse.Namespace,
    *,
    extractor_factory: ExtractorFactory = make_extractor,
    console: Optional[Console] = None,
) -> Dict[str, Any]:
    """Run ``anomclust-lite assign MODEL.npz NEW_FOLDER``; returns a short summary dict."""
    console = console if console is not None else Console(args.quiet)
    model, record = load_model(args)
    folder = check_folder(args.folder, "image folder")
    images = collect_new_images(args, folder, console)
    out = prepare_out(args.out, folder, "_assignments", command="assign")
    cache = open_cache(args, console)
    ext_args = extractor_options(args, record)
    extractor = extractor_factory(ext_args, None if cache is None else cache.store("features"))
    check_extractor(extractor, record, ext_args.model, args.cluster_model)
    warn_other_device(record, ext_args.device, console)
    console.info(f"{len(images.paths)} images in {display_path(folder)}")
    with bags_on_disk(model, len(images.paths), out, console) as bags_file:
        result = extract(extractor, images.paths, args, console, "extracting features", bags_file)
        if result.bags.shape[0] == 0:
            raise ValueError(f"none of the images in {display_path(folder)} could be read")
        console.info("assigning...")
        assignment = model.assign(result.bags, new_type_threshold=args.new_type_threshold)
    rel = [relative_name(p, folder) for p in result.paths]
    names = cluster_names(model)
    facts = {"model": display_path(os.path.abspath(args.cluster_model)), "folder": display_path(folder),
             "new-type threshold": threshold_text(model, assignment)}
    with staged_outputs(out, "assign") as stage:  # assignments.csv and report.html appear together
        write_assignments_csv(stage, rel, assignment, names)
        write_assign_report(stage, model, assignment, result.paths, rel, extractor, facts,
                            title=f"Images of {display_path(folder.name)} assigned to the fitted clusters", names=names,
                            notes=fit_notes(model))
    summary = build_assign_summary(args, model, assignment, folder, rel, result.failures)
    trim_cache(cache, args, console)
    print_assign_summary(summary, model, assignment, images, len(result.failures), out, console)
    return summary


def load_model(args: argparse.Namespace) -> Tuple[AnomalyClusterer, Dict[str, Any]]:
    """The fitted model with this machine's --memory-mb and --threads, and its extractor record.

    In a run's output folder, an interrupted write there is finished (or
    dropped) first and model.npz is checked against the run's manifest
    (:mod:`.output_set`).
    """
    path = Path(args.cluster_model)
    open_run_folder(path.resolve().parent)
    check_member(path.resolve())
    model = AnomalyClusterer.load(path)
    record = model.metadata_.get("extractor")
    if not isinstance(record, dict) or not _RECORD_KEYS <= set(record):
        raise ValueError(f"{display_path(args.cluster_model)} does not record its feature extractor; "
                         "it was not written by the command-line tool")
    if args.memory_mb is not None:
        model.set_params(memory_mb=args.memory_mb)
    model.set_params(n_threads=args.threads)
    model.validate_params()
    return model, record


def collect_new_images(args: argparse.Namespace, folder: Path, console: Console) -> ImageSet:
    """The images to assign; refuse none; warn about unreadable folders and links."""
    images = collect_images(folder, excludes=args.exclude, default_excludes=not args.no_default_exclude)
    if not images.paths:
        raise ValueError(f"no images found in {display_path(folder)}")
    for problem in images.problems:
        console.warn(f"{display_path(problem.path)}: {problem.reason}")
    return images


def extractor_options(args: argparse.Namespace, record: Dict[str, Any]) -> argparse.Namespace:
    """Extractor options rebuilt from the settings recorded in model.npz (``record``)."""
    model_path = args.model or record["model_path"]
    backbone = record.get("backbone")
    if args.model is None and isinstance(backbone, str) and not os.path.isfile(model_path):
        model_path = None  # a named backbone: found again by name (same model bytes, checked by SHA-256)
    elif not os.path.isfile(model_path):
        raise FileNotFoundError(
            f"the ONNX model the clusters were made with, {display_path(model_path)}, does not exist; "
            "pass it with --model PATH"
        )
    return argparse.Namespace(
        model=model_path, backbone=backbone if model_path is None else None, model_output=record["output"],
        resize=record["resize"], crop=record["crop"],
        device=args.device, threads=args.threads, max_pixels=args.max_pixels, memory_mb=args.memory_mb,
    )


def check_extractor(extractor: Any, record: Dict[str, Any], model_path: Optional[str], cluster_model: str) -> None:
    """Refuse an extractor that is not the one the model was made with (other ONNX file, grid, dims or pooling)."""
    if extractor.model_hash != record["model_sha256"]:
        raise ValueError(
            f"ONNX model {display_path(model_path)} (sha256 {extractor.model_hash[:12]}...) is not the one "
            f"{display_path(cluster_model)} was made with (sha256 {str(record['model_sha256'])[:12]}...); "
            "pass the original with --model PATH"
        )
    made = {"grid": [int(v) for v in extractor.grid], "dim": int(extractor.dim), "pool": extractor.pool}
    differ = [key for key in made if key in record and record[key] != made[key]]
    if differ:
        raise ValueError(
            f"the feature extractor gives a different {', '.join(differ)} than {display_path(cluster_model)} "
            "recorded; the model file does not match"
        )


def warn_other_device(record: Dict[str, Any], device: str, console: Console) -> None:
    """Warn when the backbone runs on another device than at the fit (a model.npz without the record: silent)."""
    fitted = record.get("device")
    if fitted in ("cpu", "cuda") and fitted != device:
        console.warn(
            f"the clusters were fitted with the backbone on {fitted} and it runs on {device} here: a float model "
            f"gives the same scores to about 1e-6, an int8 model's can differ by up to 0.01, so images at a "
            f"threshold may flip (--device {fitted} gives the fit's results exactly)"
        )


def write_assignments_csv(out: Path, rel: List[str], assignment: Assignment, names: Dict[int, str]) -> None:
    """assignments.csv: one row per image in :data:`ASSIGNMENT_COLUMNS`."""
    rows = [
        [rel[i], int(assignment.labels[i]), names.get(int(assignment.labels[i]), ""),
         f"{assignment.distances[i]:.6g}", f"{assignment.anomaly_scores[i]:.6g}", int(assignment.is_good[i]),
         optional_number(assignment.confidence[i]), f"{assignment.novelty[i]:.6g}", int(assignment.new_type[i]),
         int(assignment.fitted[i])]
        for i in range(len(rel))
    ]
    write_csv(out / "assignments.csv", ASSIGNMENT_COLUMNS, rows)


def threshold_text(model: AnomalyClusterer, assignment: Assignment) -> str:
    """The report's line on how new types were flagged."""
    if assignment.threshold is not None:
        return f"novelty > {assignment.threshold:.4g} (given)"
    return f"novelty above its cluster's threshold (calibrated at {model.new_type_rate:.0%} false flags at most)"


def build_assign_summary(args: argparse.Namespace, model: AnomalyClusterer, assignment: Assignment, folder: Path,
                         rel: List[str], failures: List[Any]) -> Dict[str, Any]:
    """What ``run_assign`` returns: counts, cluster sizes, thresholds and the unreadable images."""
    return {
        "command": "assign",
        "model": display_path(os.path.abspath(args.cluster_model)),
        "folder": display_path(folder),
        "n_images": len(rel),
        "cluster_sizes": np.bincount(assignment.labels[assignment.labels >= 0], minlength=model.k_).tolist(),
        "new_type": int(assignment.new_type.sum()),
        "is_good": int(assignment.is_good.sum()),
        "good_group": int((assignment.labels < 0).sum()),
        "fitted": int(assignment.fitted.sum()),
        "new_type_threshold": assignment.threshold,
        "new_type_thresholds": [float(v) for v in assignment.thresholds],
        "new_type_rate": model.new_type_rate,
        "unreadable_images": problem_dicts(failures, folder),
    }


def _good_text(summary: Dict[str, Any], model: AnomalyClusterer) -> str:
    """The summary's words on good parts: the good group, or (set apart or not) the images likely good."""
    if model.good_group_:
        return f"; {summary['good_group']} in the good group"
    if model.good_threshold_ is None:
        return ""
    return f"; {summary['is_good']} likely good (is_good = 1, clustered as well: --good-group off)"


def print_assign_summary(summary: Dict[str, Any], model: AnomalyClusterer, assignment: Assignment, images: ImageSet,
                         n_unreadable: int, out: Path, console: Console) -> None:
    """The result lines: sizes, possible new types, the good group, what was skipped, where the files are."""
    console.result(
        f"{summary['n_images']} images assigned to {model.k_} clusters; "
        f"sizes: {', '.join(map(str, summary['cluster_sizes']))} (by nearest centre, new types included); "
        f"{summary['new_type']} possibly of a new type ("
        + (f"novelty > {assignment.threshold:.4g}" if assignment.threshold is not None else
           f"novelty above its cluster's threshold, calibrated to flag at most {model.new_type_rate:.0%} of images "
           "like the fitted ones")
        + ")" + _good_text(summary, model)
    )
    note = skipped_note(n_unreadable, len(images.paths), len(images.problems))
    if note is not None:
        console.result(note)
    console.result(f"results in {display_path(out)} (assignments.csv, report.html)")
