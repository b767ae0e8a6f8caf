#!/usr/bin/env python
"""Feature-extraction throughput: images/s and where the time goes.

Runs :class:`anomclust_lite.Extractor` (decoding overlapped with
inference) on MVTec bottle images from the shared data folder with

1. the default backbone (the embedded ResNet-50 v2 layer 2),
2. the shared int8 ResNet-18 (``models/resnet18_l2l3_int8.onnx``, output
   ``relu_43``), and
3. a randomly initialised WideResNet-50-2 layer-2 model built with
   :func:`anomclust_lite.build_wrn50_layer2_onnx` (same cost as the real one; at most
   ``--wrn-images`` images because it is slow on small CPUs),

and prints the onnxruntime thread settings, images/s and the share of the
work spent decoding + preprocessing versus running the model. With
``--devices cpu cuda`` each model runs on both (onnxruntime-gpu needed) and the
CUDA/CPU ratios of images/s and of the inference stage (model run, then pooling and
normalisation on the CPU) per image are printed. All
ratios come from the same run.

Usage::

    python tools/bench_features.py [--shared DIR] [--images 100] [--wrn-images 40] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from anomclust_lite import ExtractionResult, Extractor, display_path, find_images, shared_root

SHARED_MODEL = Path("models") / "resnet18_l2l3_int8.onnx"
BOTTLE = Path("data") / "mvtec" / "bottle"


def bottle_images(shared: Path, n: int) -> List[Path]:
    """``n`` bottle images: all of ``test/`` first, then ``train/good`` (if there), then again from the start."""
    train = shared / BOTTLE / "train" / "good"
    paths = find_images(shared / BOTTLE / "test").paths + (find_images(train).paths if train.is_dir() else [])
    return [paths[i % len(paths)] for i in range(n)]  # repeated (decoded and run again) when n is larger


def run(label: str, extractor: Extractor, paths: List[Path]) -> ExtractionResult:
    """Warm up on two images, then time one extraction of ``paths`` and print its figures."""
    extractor.extract(paths[:2])  # session warm-up, not timed
    result = extractor.extract_all(paths, on_error="raise")
    t = result.timings
    work = t["decode"] + t["inference"] + t["postprocess"]
    n = len(result.paths)
    print(f"\n{label}  [device {extractor.device}, providers {extractor.providers}]")
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
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu"],
                        help="where the models run, each in turn (default cpu; cuda needs onnxruntime-gpu)")
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
    results: Dict[str, Dict[str, ExtractionResult]] = {}
    for device in args.devices:
        kw = dict(common, device=device)
        results.setdefault("ResNet-50 v2 layer2 (embedded default)", {})[device] = run(
            "ResNet-50 v2 layer2 (embedded default)", Extractor(**kw), paths)
        results.setdefault("ResNet-18 int8 (shared)", {})[device] = run(
            "ResNet-18 int8 (shared), layer2 relu_43", Extractor(model, output="relu_43", **kw), paths)
        if args.wrn_images > 0:
            with tempfile.TemporaryDirectory() as tmp:
                wrn = build_random_wrn50(Path(tmp))
                if wrn is not None:
                    results.setdefault("WideResNet-50-2 layer2 (random)", {})[device] = run(
                        "WideResNet-50-2 layer2 (random weights), pooled in the graph",
                        Extractor(wrn, **kw), bottle_images(shared, args.wrn_images))
    print_device_ratios(results)
    return 0


def print_device_ratios(results: "Dict[str, Dict[str, ExtractionResult]]") -> None:
    """CUDA over CPU: images/s of the whole extraction, and the inference stage's time per image (when both ran).

    The inference stage is the model run and the pooling and L2 normalisation of
    its output, which stay on the CPU.
    """
    for label, by_device in results.items():
        if "cpu" not in by_device or "cuda" not in by_device:
            continue
        cpu, cuda = by_device["cpu"], by_device["cuda"]
        rate = (len(cuda.paths) / cuda.timings["total"]) / (len(cpu.paths) / cpu.timings["total"])
        model = (cpu.timings["inference"] / len(cpu.paths)) / (cuda.timings["inference"] / len(cuda.paths))
        print(f"\n{label}: CUDA/CPU images/s {rate:.2f}x, model + pool/normalise time per image CPU/CUDA {model:.1f}x "
              f"({1000 * cpu.timings['inference'] / len(cpu.paths):.1f} -> "
              f"{1000 * cuda.timings['inference'] / len(cuda.paths):.2f} ms)")


if __name__ == "__main__":
    sys.exit(main())
