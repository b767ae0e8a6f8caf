#!/usr/bin/env python
"""Check ``--device cuda`` against the CPU on real images: bags, reruns, and a fit's clusters.

For a machine with a GPU and onnxruntime-gpu (see README, *Feature extraction*).
On MVTec bottle test images from the shared folder it

1. extracts the bags with the embedded default backbone and the shared int8
   ResNet-18 (output ``relu_43``) on each device, twice, and prints the largest
   difference between devices, the smallest patch cosine, whether a rerun gave
   the same bits, and the seconds;
2. fits with the command line on each device (the defect types clustered,
   ``test/good`` as the normal images, ``--k 3``, no cache) and compares the
   two ``clusters.csv``: which columns are equal, and by how much the scores
   differ.

With ``--devices cpu`` only (no GPU) it runs the CPU half, so the tool itself
can be tested anywhere.

Usage::

    python tools/check_cuda.py [--shared DIR] [--per-type 25] [--devices cpu cuda] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from anomclust_lite import Extractor, display_path, find_images, shared_root

BOTTLE_TEST = Path("data") / "mvtec" / "bottle" / "test"
R18 = Path("models") / "resnet18_l2l3_int8.onnx"
DEFECTS = ("broken_large", "broken_small", "contamination")


def copy_subset(shared: Path, per_type: int, work: Path) -> Path:
    """``per_type`` images of each defect type and of ``good`` under ``work/data``; returns that folder."""
    data = work / "data"
    for kind in DEFECTS + ("good",):
        dest = data / ("normal" if kind == "good" else "defects") / kind
        dest.mkdir(parents=True, exist_ok=True)
        for path in find_images(shared / BOTTLE_TEST / kind).paths[:per_type]:
            shutil.copyfile(path, dest / path.name)
    return data


def extract_twice(model: Optional[Path], output: Optional[str], device: str, paths: List[Path]) -> Dict[str, object]:
    """Bags of ``paths`` on ``device``, timed, and whether a second extraction gave the same bits."""
    ext = Extractor(model, output=output, device=device)
    ext.extract(paths[:2])  # session set-up, not timed
    started = time.perf_counter()
    bags = ext.extract(paths)
    seconds = time.perf_counter() - started
    return {"bags": bags, "seconds": seconds, "rerun_identical": bool(np.array_equal(bags, ext.extract(paths))),
            "providers": ext.providers}


def compare_bags(label: str, model: Optional[Path], output: Optional[str], devices: Sequence[str],
                 paths: List[Path]) -> None:
    """Print each device's run and, with two devices, how far their bags are apart."""
    runs = {device: extract_twice(model, output, device, paths) for device in devices}
    for device, run in runs.items():
        print(f"{label} on {device}: {len(paths)} images in {run['seconds']:.2f} s, providers {run['providers']}, "
              f"rerun bit-identical: {run['rerun_identical']}")
    if len(runs) == 2:
        a, b = (np.asarray(runs[d]["bags"], dtype=np.float64) for d in devices)
        cosine = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
        print(f"{label} {devices[0]} vs {devices[1]}: max abs difference {np.abs(a - b).max():.3g} "
              f"(largest value {np.abs(a).max():.3g}), smallest patch cosine {cosine.min():.10f}")


def fit(data: Path, device: str, out: Path, model_args: Sequence[str]) -> Optional[List[Dict[str, str]]]:
    """The command line's fit on ``device``; its clusters.csv rows, or None (with its error) if it failed."""
    command = [sys.executable, "-m", "anomclust_lite", str(data / "defects"), "--normal", str(data / "normal"),
               "--k", "3", "--out", str(out), "--device", device, "--no-cache", "-q", *model_args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=out.parent)
    summary = done.stdout.strip().splitlines()[:2]
    print(f"fit on {device} ({time.perf_counter() - started:.1f} s, exit {done.returncode}): {' | '.join(summary)}")
    if done.returncode != 0:
        print(f"  {done.stderr.strip()[-500:]}")
        return None
    with open(out / "clusters.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def column_differences(a: List[Dict[str, str]], b: List[Dict[str, str]]) -> Dict[str, str]:
    """Per column of two clusters.csv: "equal", how many rows differ, or the largest numeric difference."""
    out = {}
    for column in a[0]:
        left, right = [row[column] for row in a], [row[column] for row in b]
        if left == right:
            out[column] = "equal"
            continue
        try:
            out[column] = f"max difference {max(abs(float(x) - float(y)) for x, y in zip(left, right)):.3g}"
        except ValueError:
            out[column] = f"{sum(x != y for x, y in zip(left, right))} rows differ"
    return out


def compare_fits(label: str, data: Path, devices: Sequence[str], work: Path, model_args: Sequence[str]) -> None:
    """Fit on each device and print how the two clusters.csv compare."""
    rows = {device: fit(data, device, work / f"fit_{label}_{device}", model_args) for device in devices}
    if len(devices) == 2 and all(rows.values()):
        a, b = (rows[d] for d in devices)
        if [r["path"] for r in a] != [r["path"] for r in b]:
            print(f"{label}: the two fits list different images")
            return
        diffs = column_differences(a, b)
        verdict = "identical" if diffs["cluster"] == "equal" else "DIFFERENT"
        print(f"{label}: clusters {verdict} on {devices[0]} and {devices[1]}; "
              + "; ".join(f"{k}: {v}" for k, v in diffs.items()))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", help="shared data folder (default $ANOMCLUST_SHARED or ../shared)")
    parser.add_argument("--per-type", type=int, default=25, help="images per bottle type at most (default 25: all 83)")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu", "cuda"],
                        help="devices to run and compare (default cpu cuda)")
    parser.add_argument("--work", help="folder for the copied images and the fits (default: a temporary one)")
    args = parser.parse_args(argv)
    shared = shared_root(args.shared)
    if not (shared / BOTTLE_TEST).is_dir() or not (shared / R18).is_file():
        print(f"shared data not found under {display_path(shared)} (use --shared or ANOMCLUST_SHARED)",
              file=sys.stderr)
        return 1
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, available providers {onnxruntime.get_available_providers()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        data = copy_subset(shared, args.per_type, work)
        paths = find_images(data).paths
        compare_bags("embedded ResNet-50 v2", None, None, args.devices, paths)
        compare_bags("int8 ResNet-18", shared / R18, "relu_43", args.devices, paths)
        compare_fits("embedded", data, args.devices, work, [])
        compare_fits("int8_r18", data, args.devices, work, ["--model", str(shared / R18), "--model-output", "relu_43"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
