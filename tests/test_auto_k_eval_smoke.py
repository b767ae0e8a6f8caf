"""tools/auto_k_eval.py end to end on bottle: the table, and a rerun that takes the scores from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

import auto_k_eval


@pytest.mark.realdata
def test_auto_k_eval_on_bottle_reuses_cached_scores(
    shared_dir: Path, shared_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--shared", str(shared_dir), "--datasets", "bottle", "--modes", "unsupervised", "--k-max", "6",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "table.md")]
    assert auto_k_eval.main(args) == 0
    first = (tmp_path / "table.md").read_text(encoding="utf-8")
    assert "| bottle | unsupervised | 4 (" in first  # true K of bottle
    assert "| L-method |" in first
    entries = sorted((tmp_path / "cache" / "scores").rglob("*.json"))
    assert len(entries) == 1  # the patch scores, in the feature cache's format

    import anomclust_lite.core.pipeline as pipeline

    def no_scoring(*a, **k):
        raise AssertionError("the rerun scored the bags again")

    monkeypatch.setattr(pipeline, "patch_scores", no_scoring)
    assert auto_k_eval.main(args) == 0
    # Same chosen K and NMI for every criterion (the second table holds run times, which differ).
    assert (tmp_path / "table.md").read_text(encoding="utf-8").split("\n\n")[0] == first.split("\n\n")[0]
    capsys.readouterr()
