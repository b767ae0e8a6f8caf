"""The command-line tool: ``anomclust-lite FOLDER`` and ``anomclust-lite assign MODEL.npz NEW_FOLDER``.

``main(argv)`` returns the exit status: 0 success, 1 user error (one line
``anomclust-lite: error: ...`` on stderr, no traceback), 2 usage error
(argparse), 130 interrupted (features extracted so far stay in the cache, so
a rerun resumes).

The work is split so that it can be reused and tested without a real model:
:func:`run_clustering` and :func:`run_assign` take the parsed options and an
``extractor_factory(options, cache_dir) -> extractor``; the extractor can be
anything with the interface of :class:`anomclust_lite.features.extractor.Extractor`
(``extract_all``, ``grid``, ``dim``, ``resize``, ``crop``, ``describe()``,
``model_hash``; ``extract_all`` is passed ``bag_dtype="float16"`` only with
``--bag-dtype float16``).

Robustness: bad image files are skipped with a warning each and a count on
stdout (or stop the run with ``--on-error fail``); every other user error is
one line on stderr and exit status 1, raised before any feature is extracted
where possible (the output and cache folders are probed with a real write);
outputs are written atomically, and features are cached as they are
extracted, so an interrupted run loses nothing and a rerun resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .parser import DEFAULT_EXCLUDE_NOTE, build_assign_parser, build_parser
from ..estimator.clusterer import AnomalyClusterer
from ..core.defaults import DEFAULT_MEMORY_MB
from ..core.kernel import pair_bytes
from ..features.folders import ImageSet, collect_images, folder_labels, relative_name
from ..features.images import ImageProblem, display_path
from ..files.safe_text import terminal_text
from .out_dir import check_output, claim_output, release_locks
from .outputs import PROG, export_clusters, write_assign_report, write_csv, write_json, write_report

__all__ = [
    "PROG",
    "DEFAULT_EXCLUDE_NOTE",
    "build_parser",
    "build_assign_parser",
    "ImageSet",
    "collect_images",
    "folder_labels",
    "make_extractor",
    "run_clustering",
    "run_assign",
    "main",
]

#: Bytes written (and fsync'ed) to probe that an output folder can take files.
PROBE_BYTES = 64 * 1024


class _Console:
    """Progress and warnings on stderr (silent with -q); results on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def info(self, message: str) -> None:
        if not self.quiet:  # one write per line: decoding threads may log at the same time
            print(terminal_text(message) + "\n", end="", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self.info(f"{PROG}: warning: {message}")

    def result(self, message: str) -> None:
        print(terminal_text(message), flush=True)

    def counter(self, label: str) -> Callable[[int, int], None]:
        """A ``progress(done, total)`` callback printing about ten updates."""
        state = {"last": -1}
        tty = sys.stderr.isatty()

        def progress(done: int, total: int) -> None:
            if self.quiet or total <= 0:
                return
            step = (10 * done) // total
            if tty:
                end = "\n" if done >= total else ""
                print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)
            elif step != state["last"] or done >= total:
                if done < total or state["last"] != 10:
                    print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)
                state["last"] = step if done < total else 10

        return progress


# ---------------------------------------------------------------------- output folder


def _prepare_out(out_arg: Optional[str], folder: Path, suffix: str, *, normal: Optional[Path] = None,
                 export: bool = False) -> Path:
    """Resolve, check (:mod:`.out_dir`: new, empty or ours; not nested with an input), probe, then mark and lock."""
    if out_arg is not None:
        out = Path(out_arg).expanduser().resolve()
    else:
        if folder.parent == folder:
            raise ValueError(f"cannot put the output beside {display_path(folder)}; pass --out DIR")
        out = folder.parent / f"{folder.name}{suffix}"
    inputs = [("image folder", folder)] + ([("normal folder (--normal)", normal)] if normal is not None else [])
    out = check_output(out, inputs, export=export)
    _probe_writable(out, "output folder", "choose another --out")
    return claim_output(out)


def _probe_writable(folder: Path, what: str, advice: str) -> None:
    """Create ``folder`` and write, fsync and remove a small file in it.

    Catches a read-only, unwritable or full folder before the long work; a
    disk that fills up later still fails at the write that hits it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix=".probe-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(bytes(PROBE_BYTES))
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"cannot write to {what} {display_path(folder)} ({reason}); {advice}") from None


def _cache_dir(args: argparse.Namespace, out: Path) -> Optional[Path]:
    if args.no_cache:
        return None
    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else out / ".features"
    _probe_writable(cache_dir, "feature cache folder", "choose another --cache-dir or pass --no-cache")
    return cache_dir


def _check_folder(text: str, what: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {display_path(path)} does not exist")
    if not path.is_dir():
        raise ValueError(f"{what} {display_path(path)} is not a folder")
    return path.resolve()


# ---------------------------------------------------------------------- extraction


def make_extractor(args: argparse.Namespace, cache_dir: Optional[Path]) -> Any:
    """The real :class:`~anomclust_lite.features.extractor.Extractor` for the parsed options."""
    from ..features.extractor import Extractor

    check_input_size(args)
    extractor = Extractor(
        args.model,
        backbone=getattr(args, "backbone", None),
        output=args.model_output,
        resize=args.resize,
        crop=args.crop,
        device=args.device,
        threads=args.threads,
        cache_dir=cache_dir,
        max_pixels=args.max_pixels,
    )
    check_patch_grid(args, *extractor.grid, extractor.dim)
    return extractor


def _memory_mb(args: argparse.Namespace) -> float:
    return args.memory_mb if getattr(args, "memory_mb", None) is not None else DEFAULT_MEMORY_MB


def check_input_size(args: argparse.Namespace, batch: int = 8) -> None:
    """Refuse --resize/--crop whose batch of model inputs (8 x 3 x S x S float32) exceeds max(--memory-mb, 64 MiB)."""
    side = args.crop if args.crop is not None else args.resize
    need = batch * 3 * side * side * 4
    limit = max(_memory_mb(args), 64)
    if need > limit * 2**20:
        raise ValueError(
            f"--resize {args.resize} --crop {args.crop} makes a batch of model inputs of {need / 2**20:.0f} MiB, "
            f"more than {limit:g} MiB (the larger of --memory-mb and 64 MiB); use smaller sizes or raise --memory-mb"
        )


def check_patch_grid(args: argparse.Namespace, h: int, w: int, d: int) -> None:
    """Refuse, before any image is read, a patch grid for which one image pair exceeds --memory-mb."""
    need = pair_bytes(h * w, d)
    if need > _memory_mb(args) * 2**20:
        raise ValueError(
            f"--resize {args.resize} --crop {args.crop} gives {h}x{w} = {h * w} patches of {d} dims per image; "
            f"scoring one image pair needs {need / 2**20:.0f} MiB, more than --memory-mb {_memory_mb(args):g}; "
            "use smaller sizes or raise --memory-mb"
        )


ExtractorFactory = Callable[[argparse.Namespace, Optional[Path]], Any]


def _extract(extractor: Any, paths: List[Path], args: argparse.Namespace, console: _Console, label: str) -> Any:
    on_error = "raise" if args.on_error == "fail" else "skip"
    bag_dtype = getattr(args, "bag_dtype", "float32")
    # Only ask for float16 when chosen, so extractors without a bag_dtype argument keep working.
    dtype_option = {} if bag_dtype == "float32" else {"bag_dtype": bag_dtype}
    result = extractor.extract_all(paths, on_error=on_error, progress=console.counter(label), **dtype_option)
    for problem in result.failures:
        console.warn(f"skipped {display_path(problem.path)}: {problem.reason}")
    return result


def _skipped_note(n_unreadable: int, n_total: int, n_problems: int) -> Optional[str]:
    """One line counting what was skipped, or None when nothing was."""
    parts = []
    if n_unreadable:
        parts.append(f"{n_unreadable} of {n_total} images could not be read")
    if n_problems:
        parts.append(f"{n_problems} broken links, link loops or unreadable folders")
    if not parts:
        return None
    return f"skipped: {'; '.join(parts)} (see the warnings, and 'skipped' in summary.json)"


def _problem_dicts(problems: Sequence[ImageProblem], folder: Path) -> List[Dict[str, str]]:
    return [{"path": relative_name(Path(p.path), folder), "reason": p.reason} for p in problems]


def _versions() -> Dict[str, Optional[str]]:
    import PIL
    import scipy

    from .. import __version__

    ort_version: Optional[str]
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "anomclust_lite": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pillow": PIL.__version__,
        "onnxruntime": ort_version,
    }


def _backbone_dict(extractor: Any) -> Optional[Dict[str, Any]]:
    backbone = getattr(extractor, "backbone_info", None)
    return None if backbone is None else backbone.as_dict()


def _backbone_line(extractor: Any) -> str:
    """Which backbone ran and where it came from, in one line."""
    backbone = getattr(extractor, "backbone_info", None)
    if backbone is None:
        return f"model {display_path(extractor.model_path)}"
    name = "" if backbone.name == "model" else f"{backbone.name}, "
    return f"{name}{backbone.description}; {backbone.origin}; file {display_path(backbone.path)}"


def _extractor_record(extractor: Any) -> Dict[str, Any]:
    """What ``assign`` needs to rebuild the same extractor (stored in model.npz)."""
    backbone = getattr(extractor, "backbone_info", None)
    return {
        "backbone": None if backbone is None or backbone.name == "model" else backbone.name,
        "model_path": display_path(os.path.abspath(extractor.model_path)),
        "model_sha256": extractor.model_hash,
        "output": extractor.output,
        "resize": extractor.resize,
        "crop": extractor.crop,
        "pool": extractor.pool,
        "grid": [int(v) for v in extractor.grid],
        "dim": int(extractor.dim),
    }


def run_clustering(
    args: argparse.Namespace,
    *,
    extractor_factory: ExtractorFactory = make_extractor,
    console: Optional[_Console] = None,
) -> Dict[str, Any]:
    """Run ``anomclust-lite FOLDER`` for parsed options; returns the summary written to summary.json.

    Raises ``ValueError`` / ``OSError`` (incl. ``FileNotFoundError``) for
    user errors; :func:`main` turns them into exit status 1.
    """
    console = console if console is not None else _Console(args.quiet)
    started = time.perf_counter()
    timings: Dict[str, float] = {}
    folder = _check_folder(args.folder, "image folder")
    normal_folder = _check_folder(args.normal, "normal folder (--normal)") if args.normal else None
    weights_mode = args.weights or ("semi" if normal_folder is not None else "unsupervised")
    if weights_mode == "semi" and normal_folder is None:
        raise ValueError("--weights semi needs labelled normal images: pass --normal DIR")
    if weights_mode == "unsupervised" and normal_folder is not None:
        raise ValueError("--normal is ignored by --weights unsupervised; drop one of them")
    clusterer = AnomalyClusterer(
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
    )
    clusterer.validate_params()  # a bad combination fails now, before any feature is extracted

    if args.model is not None and not Path(args.model).expanduser().is_file():
        raise FileNotFoundError(f"model {display_path(args.model)} does not exist; pass an existing .onnx file to --model")

    t0 = time.perf_counter()
    images = collect_images(folder, excludes=args.exclude, default_excludes=not args.no_default_exclude)
    normals = (
        collect_images(normal_folder, excludes=args.exclude, default_excludes=not args.no_default_exclude)
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

    out = _prepare_out(args.out, folder, "_clusters", normal=normal_folder, export=args.export != "none")
    cache_dir = _cache_dir(args, out)
    console.info(
        f"{n_found} images in {display_path(folder)}"
        + (f" ({len(images.excluded)} excluded, {images.skipped_files} other files skipped)"
           if images.excluded or images.skipped_files else "")
    )

    extractor = extractor_factory(args, cache_dir)
    console.info(f"backbone: {_backbone_line(extractor)}")
    t0 = time.perf_counter()
    result = _extract(extractor, images.paths, args, console, "extracting features")
    timings["extraction"] = time.perf_counter() - t0
    normal_result = None
    if normals is not None:
        t0 = time.perf_counter()
        normal_result = _extract(extractor, normals.paths, args, console, "extracting normal features")
        timings["normal_extraction"] = time.perf_counter() - t0
        if normal_result.bags.shape[0] == 0:
            raise ValueError(f"none of the images in the normal folder {display_path(normal_folder)} could be read")
    paths = list(result.paths)
    n = len(paths)
    if n < 2:
        raise ValueError(f"need at least 2 readable images to cluster, found {n} (see the warnings above)")
    if args.k is not None and args.k > n:
        raise ValueError(f"--k {args.k} is larger than the number of readable images ({n}); choose --k <= {n}")

    def stage(name: str) -> None:
        console.info(f"{name}...")

    clusterer.fit(result.bags, normal_bags=None if normal_result is None else normal_result.bags, progress=stage)
    timings.update(clusterer.timings_)
    labels = clusterer.labels_
    k = clusterer.k_

    rel = [relative_name(p, folder) for p in paths]
    labels_true = folder_labels(paths, folder) if args.labels == "auto" else None
    metrics = None
    if labels_true is not None:
        from ..metrics import clustering_report

        metrics = {key: float(v) for key, v in clustering_report(labels_true, labels).items()}

    console.info("writing results...")
    t0 = time.perf_counter()
    top_scores = clusterer.scores_.max(axis=1)
    if labels_true is not None:
        clusterer.metadata_ = dict(clusterer.metadata_, clusters=cluster_majorities(labels, k, labels_true))
    names = cluster_names(clusterer)
    rows = []
    for i in range(n):
        row: List[object] = [rel[i], int(labels[i]), names.get(int(labels[i]), ""),
                             f"{clusterer.center_distances_[i]:.6g}", f"{top_scores[i]:.6g}",
                             f"{clusterer.anomaly_scores_[i]:.6g}", int(clusterer.is_good_[i]),
                             _optional_number(clusterer.confidence_[i])]
        if labels_true is not None:
            row.append(labels_true[i])
        rows.append(row)
    header = ["path", "cluster", "name", "distance", "top_score", "anomaly_score", "is_good", "confidence"] + (
        ["label"] if labels_true is not None else [])
    write_csv(out / "clusters.csv", header, rows)

    record = _extractor_record(extractor)
    from ..report.build import HEAT_RANGE_KEY, fit_heat_range  # the report's scale, reused by assign

    clusterer.save(out / "model.npz", metadata=dict(clusterer.metadata_, extractor=record,
                                                     folder=display_path(folder), n_images=n,
                                                     **{HEAT_RANGE_KEY: list(fit_heat_range(clusterer))}))

    sizes = np.bincount(labels[labels >= 0], minlength=k).tolist()
    choice = clusterer.k_choice_
    k_text = (
        f"chosen by the L-method (corner of the merge-cost graph) among 3..{max(choice.scores)}"
        if choice.method == "l-method"
        else "given with --k" if choice.method == "fixed"
        else "= 1: all images have identical features" if choice.method == "identical-images"
        else "= 1: too few images" if choice.method == "too-few-images"
        else f"({choice.method.replace('-', ' ')})"
    )
    facts: Dict[str, object] = {
        "folder": display_path(folder),
        "K": f"{k} ({k_text})",
        "weights": f"{weights_mode}" + (f", tau = {clusterer.effective_tau:g}" if clusterer.effective_tau else ""),
        "distance / method": f"{args.distance} / {args.method}",
        "backbone": _backbone_line(extractor),
        "model": f"{record['model_path']} ({record['output']}, grid {record['grid'][0]}x{record['grid'][1]})",
    }
    if normal_folder is not None:
        facts["normal images"] = f"{display_path(normal_folder)} ({normal_result.bags.shape[0]})"
    t1 = time.perf_counter()
    write_report(out, clusterer, paths, rel, labels_true, extractor, facts, metrics,
            title=f"Anomaly clustering of {display_path(folder.name)}", names=names)
    timings["report"] = time.perf_counter() - t1
    if args.export != "none":
        export_clusters(out, folder, paths, labels, args.export)
    timings["outputs"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started

    params = clusterer.get_params()
    params.update(effective_tau=clusterer.effective_tau, n_threads=clusterer.n_threads, labels=args.labels,
                  export=args.export,
                  exclude=list(args.exclude), default_exclude=not args.no_default_exclude,
                  normal=None if normal_folder is None else display_path(normal_folder))
    summary: Dict[str, Any] = {
        "command": "cluster",
        "folder": display_path(folder),
        "out": display_path(out),
        "n_images": n,
        "k": k,
        "k_choice": choice.to_dict(),
        "cluster_sizes": sizes,
        "metrics": metrics,
        "labels": None if labels_true is None else {
            "source": "first-level sub-folders", "counts": {c: labels_true.count(c) for c in sorted(set(labels_true))}},
        "new_type_threshold": clusterer.new_type_threshold_,
        "good_group": {"on": clusterer.good_group_, "threshold": clusterer.good_threshold_,
                       "rate": clusterer.good_rate, "n_good": int(clusterer.is_good_.sum())},
        "confidence": {"mean": float(np.nanmean(clusterer.confidence_)),
                       "cohesion": [float(v) for v in clusterer.cohesion_]},
        "weak": clusterer.weak_,
        "parameters": params,
        "skipped": {
            "other_files": images.skipped_files,
            "excluded": [relative_name(p, folder) for p in images.excluded],
            "problems": _problem_dicts(images.problems, folder),
            "unreadable_images": _problem_dicts(result.failures, folder),
            "unreadable_normal_images": [] if normal_result is None else _problem_dicts(
                normal_result.failures, normal_folder),
        },
        "extraction": {"cache_hits": int(result.cache_hits), "computed": int(result.computed),
                       "cache_dir": None if cache_dir is None else display_path(cache_dir),
                       "timings": {key: float(v) for key, v in result.timings.items()}},
        "backbone": _backbone_dict(extractor),
        "extractor": extractor.describe(),
        "timings": {key: float(v) for key, v in timings.items()},
        "versions": _versions(),
    }
    write_json(out / "summary.json", summary)

    console.result(f"{n} images -> {k} clusters (K {k_text}); sizes: {', '.join(map(str, sizes))}"
                   + (f"; {int((labels < 0).sum())} in the good group" if clusterer.good_group_ else ""))
    if clusterer.weak_:
        console.warn("weak clustering: " + "; ".join(clusterer.weak_)
                     + " (see 'confidence' in clusters.csv; try another K or --normal)")
    note = _skipped_note(len(result.failures), n_found, len(images.problems))
    if note is not None:
        console.result(note)
    if metrics is not None:
        console.result(
            f"against the folder labels: NMI {metrics['nmi']:.3f}, ARI {metrics['ari']:.3f}, "
            f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['f1_macro']:.3f}"
        )
    console.result(f"results in {display_path(out)} (clusters.csv, summary.json, report.html, model.npz)")
    return summary


def _optional_number(value: float) -> str:
    """A CSV cell: the number, or empty for NaN (confidence of images in the good group)."""
    return "" if not np.isfinite(value) else f"{value:.4f}"


def cluster_majorities(labels: np.ndarray, k: int, labels_true: Sequence[str]) -> List[Dict[str, Any]]:
    """Per cluster, its majority folder label and purity (the fraction of its images with that label)."""
    out = []
    truth = np.asarray(labels_true, dtype=object)
    for c in range(k):
        values, counts = np.unique(truth[labels == c].astype(str), return_counts=True)
        best = int(np.argmax(counts))
        out.append({"cluster": c, "majority": str(values[best]), "purity": float(counts[best] / counts.sum())})
    return out


def cluster_names(model: AnomalyClusterer) -> Dict[int, str]:
    """Names of the clusters: set by hand ('name' command), else the majority label known at fit time."""
    names = {int(e["cluster"]): str(e["majority"]) for e in model.metadata_.get("clusters", [])
             if isinstance(e, dict) and "cluster" in e and "majority" in e}
    names.update({int(c): str(v) for c, v in model.metadata_.get("cluster_names", {}).items()})
    if model.good_group_:
        names[-1] = "good"
    return names


def _assign_extractor_options(args: argparse.Namespace, record: Dict[str, Any]) -> argparse.Namespace:
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
        device=args.device, threads=args.threads, max_pixels=args.max_pixels,
    )


def run_assign(
    args: argparse.Namespace,
    *,
    extractor_factory: ExtractorFactory = make_extractor,
    console: Optional[_Console] = None,
) -> Dict[str, Any]:
    """Run ``anomclust-lite assign MODEL.npz NEW_FOLDER``; returns a short summary dict."""
    console = console if console is not None else _Console(args.quiet)
    model = AnomalyClusterer.load(args.cluster_model)
    record = model.metadata_.get("extractor")
    if not isinstance(record, dict) or not {"model_path", "model_sha256", "output", "resize", "crop"} <= set(record):
        raise ValueError(f"{display_path(args.cluster_model)} does not record its feature extractor; "
                         "it was not written by the command-line tool")
    if args.memory_mb is not None:
        model.set_params(memory_mb=args.memory_mb)
    model.set_params(n_threads=args.threads)
    model.validate_params()
    folder = _check_folder(args.folder, "image folder")
    images = collect_images(folder, excludes=args.exclude, default_excludes=not args.no_default_exclude)
    if not images.paths:
        raise ValueError(f"no images found in {display_path(folder)}")
    for problem in images.problems:
        console.warn(f"{display_path(problem.path)}: {problem.reason}")
    out = _prepare_out(args.out, folder, "_assignments")
    cache_dir = _cache_dir(args, out)
    ext_args = _assign_extractor_options(args, record)
    extractor = extractor_factory(ext_args, cache_dir)
    if extractor.model_hash != record["model_sha256"]:
        raise ValueError(
            f"ONNX model {display_path(ext_args.model)} (sha256 {extractor.model_hash[:12]}...) is not the one "
            f"{display_path(args.cluster_model)} was made with (sha256 {str(record['model_sha256'])[:12]}...); "
            "pass the original with --model PATH"
        )
    made = {"grid": [int(v) for v in extractor.grid], "dim": int(extractor.dim), "pool": extractor.pool}
    differ = [key for key in made if key in record and record[key] != made[key]]
    if differ:
        raise ValueError(
            f"the feature extractor gives a different {', '.join(differ)} than {display_path(args.cluster_model)} "
            "recorded; the model file does not match"
        )
    console.info(f"{len(images.paths)} images in {display_path(folder)}")
    result = _extract(extractor, images.paths, args, console, "extracting features")
    if result.bags.shape[0] == 0:
        raise ValueError(f"none of the images in {display_path(folder)} could be read")
    console.info("assigning...")
    assignment = model.assign(result.bags, new_type_threshold=args.new_type_threshold)
    rel = [relative_name(p, folder) for p in result.paths]
    names = cluster_names(model)
    rows = [
        [rel[i], int(assignment.labels[i]), names.get(int(assignment.labels[i]), ""),
         f"{assignment.distances[i]:.6g}", f"{assignment.anomaly_scores[i]:.6g}", int(assignment.is_good[i]),
         _optional_number(assignment.confidence[i]), f"{assignment.novelty[i]:.6g}", int(assignment.new_type[i]),
         int(assignment.fitted[i])]
        for i in range(len(rel))
    ]
    write_csv(out / "assignments.csv", ["path", "cluster", "name", "distance", "anomaly_score", "is_good", "confidence",
                                        "novelty", "new_type", "fitted"], rows)
    threshold_text = (f"novelty > {assignment.threshold:.4g} (given)" if assignment.threshold is not None else
                      f"novelty above its cluster's threshold (calibrated at {model.new_type_rate:.0%} false flags)")
    facts = {"model": display_path(os.path.abspath(args.cluster_model)), "folder": display_path(folder),
             "new-type threshold": threshold_text}
    write_assign_report(out, model, assignment, result.paths, rel, extractor, facts,
                        title=f"Images of {display_path(folder.name)} assigned to the fitted clusters", names=names)
    sizes = np.bincount(assignment.labels[assignment.labels >= 0], minlength=model.k_).tolist()
    summary = {
        "command": "assign",
        "model": display_path(os.path.abspath(args.cluster_model)),
        "folder": display_path(folder),
        "n_images": len(rel),
        "cluster_sizes": sizes,
        "new_type": int(assignment.new_type.sum()),
        "is_good": int(assignment.is_good.sum()),
        "good_group": int((assignment.labels < 0).sum()),
        "fitted": int(assignment.fitted.sum()),
        "new_type_threshold": assignment.threshold,
        "new_type_thresholds": [float(v) for v in assignment.thresholds],
        "new_type_rate": model.new_type_rate,
        "unreadable_images": _problem_dicts(result.failures, folder),
    }
    console.result(
        f"{len(rel)} images assigned to {model.k_} clusters; sizes: {', '.join(map(str, sizes))}; "
        f"{summary['new_type']} possibly of a new type ("
        + (f"novelty > {assignment.threshold:.4g}" if assignment.threshold is not None else
           f"novelty above its cluster's threshold, calibrated to flag {model.new_type_rate:.0%} of the fitted images")
        + ")" + (f"; {summary['good_group']} in the good group" if model.good_group_ else "")
    )
    note = _skipped_note(len(result.failures), len(images.paths), len(images.problems))
    if note is not None:
        console.result(note)
    console.result(f"results in {display_path(out)} (assignments.csv, report.html)")
    return summary


# ---------------------------------------------------------------------- main


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None and text.startswith("["):
        text = f"{display_path(exc.filename)}: {exc.strerror}"
    return text or type(exc).__name__


class _ConsoleLogHandler(logging.Handler):
    """Shows the package's logged warnings (e.g. a damaged feature-cache entry) as CLI warnings.

    The extractor's warnings are left out: the CLI reports skipped images itself.
    """

    def __init__(self, console: _Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.shown: set = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "anomclust_lite.features.extractor":
            return
        message = " ".join(record.getMessage().split())
        if message not in self.shown:
            self.shown.add(message)
            self.console.warn(message)


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels: int) -> Any:
    """Raise Pillow's own decompression-bomb limit to ``max_pixels`` while running (restored after)."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    if saved is not None and max_pixels > saved:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _main_name(args_list: List[str]) -> int:
    """``anomclust-lite name OUT ID=NAME ...``: exit 0, 1 (user error) or 2 (usage)."""
    from .naming import build_name_parser, run_name

    try:
        args = build_name_parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    try:
        run_name(args)
        return 0
    except (ValueError, OSError) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``anomclust-lite`` / ``python -m anomclust_lite``; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["backbones"]:
        from .backbones import run_backbones

        return run_backbones(args_list[1:])
    if args_list and args_list[0] == "name":
        return _main_name(args_list[1:])
    assign = bool(args_list) and args_list[0] == "assign"
    parser = build_assign_parser() if assign else build_parser()
    try:
        args = parser.parse_args(args_list[1:] if assign else args_list)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return int(exc.code) if isinstance(exc.code, int) else 2
    console = _Console(args.quiet)
    package_logger = logging.getLogger("anomclust_lite")
    log_handler = _ConsoleLogHandler(console)
    package_logger.addHandler(log_handler)
    try:
        with warnings.catch_warnings(record=True) as caught, _pillow_pixel_limit(args.max_pixels):
            warnings.simplefilter("always")
            if assign:
                run_assign(args, console=console)
            else:
                run_clustering(args, console=console)
        shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
        for message in dict.fromkeys(str(w.message) for w in shown):
            console.warn(message)
        return 0
    except BrokenPipeError:  # stdout closed early (e.g. piped into `head`): stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        note = "" if args.no_cache else "; features extracted so far are cached, a rerun continues from there"
        print(f"{PROG}: interrupted{note}", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # ImageLoadError, ModelNotFoundError are among these
        print(f"{PROG}: error: {terminal_text(_one_line(exc))}", file=sys.stderr)
        return 1
    finally:
        release_locks()
        package_logger.removeHandler(log_handler)
