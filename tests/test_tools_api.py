"""tools/ use only the package's public API and meet the size rule (issue 13)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import List

from conftest import REPO_ROOT

TOOLS = REPO_ROOT / "tools"
#: Modules a tool may import from, and only names in their ``__all__``: the root, the documented
#: defaults, the evaluation protocol, the report (its run, page and thumbnails), the report's colours.
PUBLIC_MODULES = ("anomclust_lite", "anomclust_lite.core.defaults", "anomclust_lite.datasets",
                  "anomclust_lite.report", "anomclust_lite.report.charts")
#: Tools still importing private modules: none (every tool is on the public API).
NOT_YET: "tuple[str, ...]" = ()


def private_uses(source: str, where: str) -> List[str]:
    """Imports of non-public modules or names of the package, and ``sys.path`` changes, in ``source``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [f"{where}: import {a.name}" for a in node.names
                    if a.name.startswith("anomclust_lite.") and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("anomclust_lite"):
            names = [a.name for a in node.names]
            if node.module == "anomclust_lite.core" and names == ["defaults"]:
                continue
            if node.module not in PUBLIC_MODULES:
                out.append(f"{where}: from {node.module} import {', '.join(names)}")
                continue
            public = set(importlib.import_module(node.module).__all__)
            out += [f"{where}: {name} is not public in {node.module}" for name in names if name not in public]
        elif isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
            out.append(f"{where}:{node.lineno}: sys.path")
    return out


def test_tools_import_only_public_names():
    files = sorted(p for p in TOOLS.rglob("*.py") if p.name not in NOT_YET)
    assert len(files) >= 8
    problems = [p for f in files for p in private_uses(f.read_text(encoding="utf-8"), str(f.relative_to(REPO_ROOT)))]
    assert problems == []


def test_the_check_catches_private_imports():
    source = ("import sys\nsys.path.insert(0, '.')\nfrom anomclust_lite.core.kernel import plan_tasks\n"
              "from anomclust_lite.datasets import _require_dir\nimport anomclust_lite.files.atomic\n"
              "import anomclust_lite as ac\nfrom anomclust_lite.core import defaults\n")
    assert len(private_uses(source, "probe")) == 4


def test_tools_have_small_modules_and_functions():
    from test_layering import size_violations

    assert size_violations(TOOLS) == []
