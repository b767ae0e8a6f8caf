"""tools/eval_trust.py, the issue-16 benchmark: its measures on toy numbers, and one small real run."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import eval_trust


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    pos, neg = rng.normal(0.5, 1, 17), np.round(rng.normal(0, 1, 40), 1)  # ties included
    want = roc_auc_score(np.r_[np.ones(17), np.zeros(40)], np.r_[pos, neg])
    assert eval_trust.auroc(pos, neg) == pytest.approx(want)


def test_best_recall_flags_at_most_the_rate_of_the_held_out_images():
    neg = np.arange(10.0)  # 10 held-out images: at 10 % one of them may lie above the threshold (9 > 8)
    assert eval_trust.best_recall(np.array([8.5, 9.5, 7.0, 8.0]), neg, 0.10) == 0.5
    assert eval_trust.best_recall(np.array([8.5, 9.5]), neg, 0.0) == 0.5  # nothing above 9 but 9.5
    assert eval_trust.best_recall(np.array([8.5, 9.5]), neg, 0.05) == 0.5  # floor(0.5) = 0 allowed


def test_best_recall_is_monotone_in_the_rate():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 50), rng.normal(0, 1, 80)
    got = [eval_trust.best_recall(pos, neg, r) for r in (0.0, 0.05, 0.1, 0.2, 0.5)]
    assert got == sorted(got)


def test_eval_trust_runs_on_a_small_real_set(shared_dir, tmp_path, capsys):
    model = shared_dir / "models" / "resnet50v2_layer2_fp32.onnx"
    assert eval_trust.main(["--shared", str(shared_dir), "--model", str(model), "--output", "layer2",
                            "--work", str(tmp_path), "--datasets", "mtd", "--mtd-per-class", "4",
                            "--normal-bank", "8", "--reference-size", "8"]) == 0
    out = capsys.readouterr().out
    number = r"\d\.\d+"
    for mode in ("unsup", "semi"):
        assert re.search(rf"^\| mtd \| {mode} \| {number} \({number}\) \| {number} / {number} \|", out, re.M), out
        types = re.findall(rf"^\| mtd \| {mode} \| (\w+) \| ({number}) \| ({number}) \| ({number}) \| ({number}) \|$",
                           out, re.M)
        assert sorted(t[0] for t in types) == ["Blowhole", "Break", "Crack", "Fray", "Uneven"]
        assert all(0 <= float(v) <= 1 for t in types for v in t[1:])
    assert re.search(rf"^\| mtd \| mean \| \| {number} \| {number} \| {number} \| {number} \|$", out, re.M), out
