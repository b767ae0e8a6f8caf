"""Closed standard streams and Ctrl-C at any moment (issue 14), in real subprocesses.

The command runs as installed (``anomclust_lite.cli.entry.run``, what the
``anomclust-lite`` script and ``python -m anomclust_lite`` call). Ctrl-C is
sent by the process to itself at a chosen moment (a hook installed before the
program starts): while importing, while parsing the options, while extracting
features, while writing the outputs and while installing them. Each exits
with status 130, one ``interrupted`` line and no traceback, and leaves the
earlier outputs or the new ones, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

from _cli_support import fixture_base_folder, fixture_model_path  # noqa: F401 (fixtures)
from _cli_support import model_args

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX streams and signals")

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("clusters.csv", "summary.json", "model.npz", "report.html")
#: Options of every run here.
RUN = ("-q", "--no-cache", "--export", "symlink")

_RUNNER = textwrap.dedent("""
    import os, signal, sys
    where, argv = sys.argv[1], sys.argv[2:]
    sig = signal.SIGKILL if where.startswith("kill-") else signal.SIGINT
    where = where[len("kill-"):] if where.startswith("kill-") else where

    def interrupt():
        os.kill(os.getpid(), sig)

    if where == "import":  # while the program imports NumPy (and the rest of the package)
        class Hook:
            def find_spec(self, name, path=None, target=None):
                if name == "numpy":
                    interrupt()
                return None
        sys.meta_path.insert(0, Hook())
    elif where == "argparse":
        import argparse
        real_parse = argparse.ArgumentParser.parse_args
        def parse(self, *args, **kwargs):
            interrupt()
            return real_parse(self, *args, **kwargs)
        argparse.ArgumentParser.parse_args = parse
    elif where == "extraction":  # on the second batch the model runs
        from anomclust_lite.features import onnx_session
        real_run, calls = onnx_session.BackboneSession.run, []
        def run_model(self, batch):
            calls.append(1)
            if len(calls) == 3:
                interrupt()
            return real_run(self, batch)
        onnx_session.BackboneSession.run = run_model
    elif where in ("writing", "installing"):  # writing report.html; or at the install's first file rename
        import contextlib
        from anomclust_lite.files import atomic
        real_open, real_replace = atomic.atomic_open, os.replace
        @contextlib.contextmanager
        def atomic_open(path, *args, **kwargs):
            if where == "writing" and os.path.basename(path) == "report.html":
                interrupt()
            with real_open(path, *args, **kwargs) as fh:
                yield fh
        def replace(src, dst, *args, **kwargs):
            if where == "installing" and ".anomclust-pending" in os.fspath(src):
                interrupt()
            return real_replace(src, dst, *args, **kwargs)
        atomic.atomic_open, os.replace = atomic_open, replace

    from anomclust_lite.cli.entry import run
    sys.exit(run(argv))
""")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, whatever the test process ignores


def _run(where: str, argv: List[object]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUNNER, where, *map(str, argv)], capture_output=True, text=True,
                          env=_env(), timeout=300, preexec_fn=_default_sigint)


def _k_everywhere(out: Path) -> set:
    """The K each output says (clusters.csv, summary.json, model.npz, report.html)."""
    from _report_html import parse

    from anomclust_lite import AnomalyClusterer

    clusters = {line.split(",")[1] for line in (out / "clusters.csv").read_text().splitlines()[1:]}
    summary = json.loads((out / "summary.json").read_text())
    model = AnomalyClusterer.load(out / "model.npz")
    report = parse((out / "report.html").read_text(encoding="utf-8")).data
    return {len(clusters), summary["k"], model.k_, report["k_fit"]}


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory, base_folder, model_path) -> Path:
    """An output folder with an earlier run's outputs (K=2, exported as links), made once, in-process."""
    from anomclust_lite.cli.main import main

    out = tmp_path_factory.mktemp("earlier") / "out"
    assert main([str(a) for a in [base_folder, *model_args(model_path), *RUN, "--k", "2", "--out", out]]) == 0
    return out


def _copy_of(earlier: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(earlier, tmp_path / "out", symlinks=True))


@pytest.mark.parametrize("where", ["import", "argparse", "extraction", "writing", "installing"])
def test_ctrl_c_at_any_moment_exits_130_without_a_traceback(where, base_folder, model_path, earlier_run, tmp_path):
    out = _copy_of(earlier_run, tmp_path)
    before = {name: (out / name).read_bytes() for name in OUTPUTS}
    proc = _run(where, [base_folder, *model_args(model_path), "--k", "3", "--out", out, *RUN])
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("anomclust-lite: interrupted")
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    after = {name: (out / name).read_bytes() for name in OUTPUTS}
    if where == "installing":  # Ctrl-C after the commit is held back until the new set is installed
        assert _k_everywhere(out) == {3}
    else:
        assert after == before and _k_everywhere(out) == {2}
    assert not [p.name for p in out.iterdir() if p.name.startswith((".anomclust-staging-", ".anomclust-pending"))]


@pytest.mark.parametrize("where,k", [("writing", 2), ("installing", 3)])
def test_a_run_killed_while_writing_leaves_the_old_or_the_new_set(where, k, base_folder, model_path, earlier_run,
                                                                  tmp_path):
    out = _copy_of(earlier_run, tmp_path)
    proc = _run(f"kill-{where}", [base_folder, *model_args(model_path), "--k", "3", "--out", out, *RUN])
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    reader = _run("none", ["name", out, "0=first"])  # takes the folder's lock: finishes or drops the killed run's set
    assert reader.returncode == 0, reader.stderr
    assert _k_everywhere(out) == {k}
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("cluster_")) == [f"cluster_{c}" for c in range(k)]
    assert not [p.name for p in out.iterdir() if p.name.startswith((".anomclust-staging-", ".anomclust-pending"))]


@pytest.mark.parametrize("redirect", [">&-", "2>&-", "<&-", ">&- 2>&- <&-"])
def test_closed_standard_streams_change_nothing(redirect, base_folder, model_path, tmp_path):
    out = tmp_path / "out"
    args = " ".join(f"'{a}'" for a in [base_folder, *model_args(model_path), "--k", "2", "--out", out, "--no-cache"])
    python = f"'{sys.executable}' -m anomclust_lite"
    cases = [(args, 0)] + ([("/nonexistent-folder", 1), ("--no-such-option", 2)] if " " not in redirect else [])
    for argv, expected in cases:
        proc = subprocess.run(["sh", "-c", f"exec {python} {argv} {redirect}"], capture_output=True, text=True,
                              env=_env(), timeout=300)
        assert proc.returncode == expected, (argv, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        if "2>&-" not in redirect and expected:
            assert "error" in proc.stderr
    assert _k_everywhere(out) == {2}
    json.loads((out / "summary.json").read_text())
