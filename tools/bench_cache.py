"""Never score twice: time a cold run of the CLI, then reruns that change only what the caches let skip.

Runs ``python -m anomclust_lite`` (this checkout) on a shared category,
semi-supervised (``FOLDER = <category>/test``, ``--normal <category>/train/good``),
all runs sharing one fresh cache folder:

1. **cold**: nothing cached but, with ``--seed-features``, the features (so
   the cold run extracts nothing and the ratio measures scoring alone);
2. **another --k** (``--k 3``);
3. **another --method** (``--method average --k 3``);
4. **another --tau** (scores cached, embeddings recomputed);
5. **the same options again** (its clusters.csv must be byte-identical to
   the cold run's).

Prints every run's wall time (the process, start-up included), its stage
timings from summary.json, and the ratios to the cold run, measured in this
one invocation.

``--seed-features DIR``: a feature cache of the same model and settings
(e.g. /work/feats/r50v2_layer2 with the R50v2 reference ONNX); the entries of
the category's images are copied into the fresh cache folder (DIR is only
read: sidecars and the copied files). Without it the cold run extracts too.

Example::

    python tools/bench_cache.py --shared /work/shared --category bottle \\
        --model /work/shared/models/resnet50v2_layer2_fp32.onnx --seed-features /work/feats/r50v2_layer2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import anomclust_lite as ac

REPO = Path(__file__).resolve().parents[1]
RUNS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("cold", ()),
    ("another --k", ("--k", "3")),
    ("another --method", ("--method", "average", "--k", "3")),
    ("another --tau", ("--tau", "0.08")),
    ("same options again", ()),
)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", type=Path, default=Path(os.environ.get("ANOMCLUST_SHARED", "../shared")))
    p.add_argument("--category", default="bottle")
    p.add_argument("--model", help="ONNX model (default: the embedded backbone)")
    p.add_argument("--seed-features", type=Path, help="feature cache to copy the category's entries from")
    p.add_argument("--work", type=Path, help="folder for the cache and outputs (default: a temporary one)")
    return p.parse_args(argv)


def _matching_settings(seed: Path, model_sha256: str, resize: int, crop: Optional[int]) -> Dict[str, object]:
    """The entry settings of ``seed`` made with this model, resize and crop (read from a sidecar)."""
    for sidecar in sorted(seed.glob("??/*.json")):
        settings = json.loads(sidecar.read_text()).get("settings", {})
        if (settings.get("model_sha256"), settings.get("resize"), settings.get("crop")) == (model_sha256, resize, crop):
            return settings
    raise SystemExit(f"{seed} holds no entry of model sha256 {model_sha256[:12]}... at resize {resize} crop {crop}")


def seed_features(seed: Path, cache: Path, images: List[Path], model: Optional[str]) -> int:
    """Copy the entries of ``images`` from the feature cache ``seed`` into ``cache/features``; how many."""
    extractor = ac.Extractor(model, resize=256, crop=224)
    settings = _matching_settings(seed, extractor.model_hash, 256, 224)
    copied = 0
    for path in images:
        key = ac.FeatureCache.key(hashlib.sha256(path.read_bytes()).hexdigest(), settings)
        sources = [seed / key[:2] / f"{key}{ext}" for ext in (".npy", ".json")]
        if all(s.is_file() for s in sources):
            (cache / "features" / key[:2]).mkdir(parents=True, exist_ok=True)
            for s in sources:
                shutil.copyfile(s, cache / "features" / key[:2] / s.name)
            copied += 1
    return copied


def run_cli(args: argparse.Namespace, cache: Path, out: Path, extra: Sequence[str]) -> Tuple[float, Dict]:
    """One CLI run in a fresh process; its wall time and summary.json."""
    data = args.shared / "data" / "mvtec" / args.category
    cmd = [sys.executable, "-m", "anomclust_lite", str(data / "test"), "--normal", str(data / "train" / "good"),
           "--out", str(out), "--cache-dir", str(cache), "-q", *extra]
    if args.model:
        cmd += ["--model", args.model]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, json.loads((out / "summary.json").read_text())


def _stages(summary: Dict) -> str:
    t = summary["timings"]
    keys = ("extraction", "normal_extraction", "scoring", "distances", "clustering", "novelty", "report", "outputs",
            "total")
    return "  ".join(f"{k} {t[k]:.1f}" for k in keys if k in t)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cache-"))
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    data = args.shared / "data" / "mvtec" / args.category
    images = sorted(p for p in data.rglob("*.png") if "ground_truth" not in p.parts and ("test" in p.parts or "good" in p.parts))
    if args.seed_features is not None:
        print(f"features of {seed_features(args.seed_features, cache, images, args.model)} of {len(images)} images "
              f"copied from {args.seed_features}: the cold run extracts nothing")
    print(f"{args.category}: semi-supervised, model {args.model or 'embedded ResNet-50 v2'}; cache {cache}")
    cold: Optional[float] = None
    for i, (name, extra) in enumerate(RUNS):
        out = work / f"out{i}"
        shutil.rmtree(out, ignore_errors=True)
        seconds, summary = run_cli(args, cache, out, extra)
        cold = seconds if cold is None else cold
        hits = summary["extraction"]["cache_hits"]
        print(f"{name:<20} {seconds:7.1f} s  ratio {seconds / cold:6.3f}  features from cache {hits:4d}  "
              f"cached steps: {', '.join(summary.get('cache', {}).get('steps', [])) or '-'}")
        print(f"{'':<20} stages (s): {_stages(summary)}")
    same = (work / "out0" / "clusters.csv").read_bytes() == (work / f"out{len(RUNS) - 1}" / "clusters.csv").read_bytes()
    print(f"clusters.csv of the warm rerun byte-identical to the cold run's: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
