"""Feature extraction as the commands use it: building the extractor, running it, recording it, reporting skips.

The commands take an ``extractor_factory(options, feature_store) -> extractor``
(default :func:`make_extractor`; ``feature_store`` is the run's cache folder's
feature store, or None), so they can be run and tested without a
real model. The extractor can be anything with the interface of
:class:`anomclust_lite.features.extractor.Extractor` (``extract_all``,
``settings``, ``grid``, ``dim``, ``model_path``, ``model_hash``,
``describe()``, optionally ``backbone_info``; ``extract_all`` is passed
``bag_dtype="float16"`` only with ``--bag-dtype float16``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..core.defaults import DEFAULT_MEMORY_MB
from ..files.array_store import ArrayStore
from ..features.folders import relative_name
from ..features.images import ImageProblem, display_path
from .console import Console

__all__ = [
    "ExtractorFactory",
    "RECORDED_SETTINGS",
    "make_extractor",
    "extract",
    "extractor_record",
    "backbone_line",
    "backbone_dict",
    "skipped_note",
    "problem_dicts",
]

ExtractorFactory = Callable[[argparse.Namespace, Optional[ArrayStore]], Any]

#: The extractor's bag-defining settings (:attr:`Extractor.settings`) that model.npz records for ``assign``.
RECORDED_SETTINGS = ("model_sha256", "output", "resize", "crop", "pool")


def make_extractor(args: argparse.Namespace, cache_dir: Optional[ArrayStore]) -> Any:
    """The real :class:`~anomclust_lite.features.extractor.Extractor` for the parsed options.

    The Extractor checks ``--resize``/``--crop`` against ``--memory-mb`` itself
    (:mod:`anomclust_lite.features.memory`, the one memory check): the input
    batch before the model is opened, one image pair's scoring once the
    model's patch grid is known.
    """
    from ..features.extractor import Extractor

    memory_mb = getattr(args, "memory_mb", None)
    return Extractor(
        args.model,
        backbone=getattr(args, "backbone", None),
        output=args.model_output,
        resize=args.resize,
        crop=args.crop,
        device=args.device,
        threads=args.threads,
        cache_dir=cache_dir,
        max_pixels=args.max_pixels,
        memory_mb=DEFAULT_MEMORY_MB if memory_mb is None else memory_mb,
    )


def extract(extractor: Any, paths: List[Path], args: argparse.Namespace, console: Console, label: str,
            bags_file: Optional[Path] = None) -> Any:
    """The features of ``paths`` (written into ``bags_file`` when given), with progress under ``label``; a
    warning per image skipped."""
    on_error = "raise" if args.on_error == "fail" else "skip"
    bag_dtype = getattr(args, "bag_dtype", "float32")
    # Only pass the options that were chosen, so extractors without those arguments keep working.
    options: Dict[str, Any] = {} if bag_dtype == "float32" else {"bag_dtype": bag_dtype}
    if bags_file is not None:
        options["bags_file"] = bags_file
    result = extractor.extract_all(paths, on_error=on_error, progress=console.counter(label), **options)
    for problem in result.failures:
        console.warn(f"skipped {display_path(problem.path)}: {problem.reason}")
    hits = int(getattr(result, "cache_hits", 0))
    if hits:
        console.info(f"{label}: {hits} of {len(paths)} images from the cache, {int(result.computed)} through the model")
    return result


def extractor_record(extractor: Any) -> Dict[str, Any]:
    """What ``assign`` needs to rebuild the same extractor (stored in model.npz).

    The backbone's name (None for a model file), the model file, the
    :data:`RECORDED_SETTINGS` of the extractor's ``settings``, the patch
    grid and size, and the device the backbone ran on.
    """
    backbone = getattr(extractor, "backbone_info", None)
    settings = extractor.settings
    return {
        "backbone": None if backbone is None or backbone.name == "model" else backbone.name,
        "model_path": display_path(os.path.abspath(extractor.model_path)),
        **{key: settings[key] for key in RECORDED_SETTINGS},
        "grid": [int(v) for v in extractor.grid],
        "dim": int(extractor.dim),
        "device": str(getattr(extractor, "device", "cpu")),
    }


def backbone_dict(extractor: Any) -> Optional[Dict[str, Any]]:
    """The backbone that ran, for summary.json (None for an extractor without one)."""
    backbone = getattr(extractor, "backbone_info", None)
    return None if backbone is None else backbone.as_dict()


def backbone_line(extractor: Any) -> str:
    """Which backbone ran and where it came from, in one line."""
    backbone = getattr(extractor, "backbone_info", None)
    if backbone is None:
        return f"model {display_path(extractor.model_path)}"
    name = "" if backbone.name == "model" else f"{backbone.name}, "
    return f"{name}{backbone.description}; {backbone.origin}; file {display_path(backbone.path)}"


def skipped_note(n_unreadable: int, n_total: int, n_problems: int) -> Optional[str]:
    """One line counting what was skipped, or None when nothing was."""
    parts = []
    if n_unreadable:
        parts.append(f"{n_unreadable} of {n_total} images could not be read")
    if n_problems:
        parts.append(f"{n_problems} broken links, link loops or unreadable folders")
    if not parts:
        return None
    return f"skipped: {'; '.join(parts)} (see the warnings, and 'skipped' in summary.json)"


def problem_dicts(problems: Sequence[ImageProblem], folder: Path) -> List[Dict[str, str]]:
    """JSON-ready ``{"path", "reason"}`` of every problem, paths relative to ``folder``."""
    return [{"path": relative_name(Path(p.path), folder), "reason": p.reason} for p in problems]
