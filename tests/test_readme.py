"""The README's Python example runs as written, and its two commands are the CI's."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def test_readme_python_examples_run(capsys) -> None:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no ```python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_ci_runs_the_readme_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ('python -m pip install -e ".[test]"', "python -m pytest -q"):
        assert command in readme and command in ci
