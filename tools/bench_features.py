#!/usr/bin/env python
"""Feature-extraction throughput: images/s and where the time goes.

Runs :class:`anomclust_lite.Extractor` (decoding overlapped with
inference) on MVTec bottle images from the shared data folder with

1. the shared int8 ResNet-18 (``models/resnet18_l2l3_int8.onnx``, output
   ``relu_43``), and
2. a randomly initialised WideResNet-50-2 layer-2 model built with
   :func:`anomclust_lite.build_wrn50_layer2_onnx` (same cost as the real one; at most
   ``--wrn-images`` images because it is slow on small CPUs),

and prints the onnxruntime thread settings, images/s and the share of the
work spent decoding + preprocessing versus running the model. All ratios
come from the same run.

Usage::

    python tools/bench_features.py [--shared DIR] [--images 100] [--wrn-images 40]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from anomclust_lite import ExtractionResult, Extractor, display_path, find_images, shared_root

SHARED_MODEL = Path("models") / "resnet18_l2l3_int8.onnx"
BOTTLE = Path("data") / "mvtec" / "bottle"


def bottle_images(shared: Path, n: int) -> List[Path]:
    """``n`` bottle images: all of ``test/`` first, then ``train/good``."""
    paths = find_images(shared / BOTTLE / "test").paths + find_images(shared / BOTTLE / "train" / "good").paths
    return paths[:n]


def run(label: str, extractor: Extractor, paths: List[Path]) -> ExtractionResult:
    """Warm up on two images, then time one extraction of ``paths`` and print its figures."""
    extractor.extract(paths[:2])  # session warm-up, not timed
    result = extractor.extract_all(paths, on_error="raise")
    t = result.timings
    work = t["decode"] + t["inference"] + t["postprocess"]
    n = len(result.paths)
    print(f"\n{label}")
    print(f"  model      {display_path(extractor.model_path)}  output {extractor.output!r}  "
          f"grid {extractor.grid}  dim {extractor.dim}")
    print(f"  threads    {extractor.thread_settings}")
    print(f"  images     {n}  (batch size {extractor.describe()['batch_size']})")
    print(f"  wall       {t['total']:.2f} s  ->  {n / t['total']:.1f} images/s")
    print(f"  decode+preprocess {t['decode']:.2f} s (thread time, overlapped), inference {t['inference']:.2f} s, "
          f"pool+normalise {t['postprocess']:.2f} s, model loop waiting for images {t['wait']:.2f} s")
    share = t["decode"] / work if work > 0 else float("nan")
    verdict = "OK" if share < 0.20 else "ABOVE TARGET"
    print(f"  decode+preprocess share of the work: {share:.1%}  (target < 20%: {verdict}); "
          f"inference share {t['inference'] / work:.1%}")
    return result


def build_random_wrn50(folder: Path) -> Optional[Path]:
    """Write a random-init WRN-50 layer-2 model to ``folder``; None (with a message) if impossible."""
    try:
        from anomclust_lite import build_wrn50_layer2_onnx, random_wrn50_state_dict
    except ImportError as exc:
        print(f"\nWRN-50: skipped ({exc})")
        return None
    t0 = time.perf_counter()
    model = build_wrn50_layer2_onnx(random_wrn50_state_dict(seed=0))
    path = folder / "wrn50_layer2_random.onnx"
    path.write_bytes(model)
    print(f"\n(built a random-init WRN-50 layer-2 model in {time.perf_counter() - t0:.1f} s)")
    return path


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    parser.add_argument("--images", type=int, default=100, help="images for the ResNet-18 run (default 100)")
    parser.add_argument("--wrn-images", type=int, default=40, help="images for the WRN-50 run (default 40, 0 skips)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per model run (default 8)")
    parser.add_argument("--decode-workers", type=int, default=None, help="decoding threads (default min(4, CPUs))")
    args = parser.parse_args(argv)

    shared = shared_root(args.shared)
    model = shared / SHARED_MODEL
    if not model.is_file() or not (shared / BOTTLE).is_dir():
        print(f"shared data not found under {display_path(shared)} (use --shared or ANOMCLUST_SHARED)",
              file=sys.stderr)
        return 1
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, os.cpu_count() = {os.cpu_count()}, "
          f"providers {onnxruntime.get_available_providers()}")
    common = dict(batch_size=args.batch_size, threads=args.threads, decode_workers=args.decode_workers)
    paths = bottle_images(shared, args.images)
    run("ResNet-18 int8 (shared), layer2 relu_43", Extractor(model, output="relu_43", **common), paths)

    if args.wrn_images > 0:
        with tempfile.TemporaryDirectory() as tmp:
            wrn = build_random_wrn50(Path(tmp))
            if wrn is not None:
                run("WideResNet-50-2 layer2 (random weights), pooled in the graph",
                    Extractor(wrn, **common), bottle_images(shared, args.wrn_images))
    return 0


if __name__ == "__main__":
    sys.exit(main())
