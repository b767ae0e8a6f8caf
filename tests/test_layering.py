"""The package's shape: lazy root exports, a NumPy/SciPy core, small modules and functions.

The size rule (no module over 500 lines, no function body over 60 lines,
docstrings not counted) is checked per package in :data:`SIZED`; a package
joins the list when it meets the rule; every package and tools/ meet it
now, and the whole-package check keeps it that way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import anomclust_lite

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "anomclust_lite"
MAX_MODULE_LINES = 500
MAX_BODY_LINES = 60
#: Packages (or modules) of anomclust_lite that meet the size rule.
SIZED = ("core", "clustering", "metrics", "estimator", "features", "backbones", "files", "report", "cli",
         "datasets.py", "__init__.py", "__main__.py")
#: Layers that import only the standard library, NumPy, SciPy and the layers listed.
PURE_LAYERS = {"core": ("core",), "clustering": ("core", "clustering"), "metrics": ("core", "metrics")}
#: Layers above the core that must still not load the feature stack (of the root only __version__).
NUMERIC_LAYERS = {"estimator": ("core", "clustering", "metrics", "files", "estimator", "__version__")}
THIRD_PARTY_ALLOWED = ("numpy", "scipy")
#: Named exceptions: the blocked kernel limits the BLAS thread count while its own threads run
#: (threadpoolctl, a declared runtime dependency, imported on first use; no numerics).
EXEMPT = {"anomclust_lite/core/kernel.py": ("threadpoolctl",)}


# --------------------------------------------------------------------------- helpers (extend freely)


def python_files(target: Path) -> List[Path]:
    """``target`` itself (a module) or every ``.py`` file below it (a package)."""
    return [target] if target.is_file() else sorted(target.rglob("*.py"))


def _body_lines(node: ast.AST) -> int:
    """Lines of a function body, its docstring not counted."""
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def size_violations(target: Path, *, max_module: int = MAX_MODULE_LINES, max_body: int = MAX_BODY_LINES) -> List[str]:
    """Every module over ``max_module`` lines and function body over ``max_body`` lines below ``target``."""
    found = []
    for path in python_files(target):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(REPO_ROOT)
        n_lines = len(text.splitlines())
        if n_lines > max_module:
            found.append(f"{rel}: {n_lines} lines (max {max_module})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > max_body:
                found.append(f"{rel}:{node.lineno} {node.name}(): body of {_body_lines(node)} lines (max {max_body})")
    return found


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module
                continue
            base = package.split(".")
            base = base[: len(base) - node.level + 1]
            if node.module:
                yield ".".join(base + [node.module])
            else:  # from . import name: a submodule or a name of the package itself
                yield from (".".join(base + [alias.name]) for alias in node.names)


def layer_violations(layer: str, allowed_layers: "tuple[str, ...]") -> List[str]:
    """Imports of ``anomclust_lite/<layer>`` outside the stdlib, NumPy, SciPy and ``allowed_layers``."""
    found = []
    for path in python_files(PACKAGE / layer):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "anomclust_lite":
                inner: Optional[str] = name.split(".")[1] if name.count(".") else None
                ok = inner in allowed_layers
            else:
                ok = top in sys.stdlib_module_names or top in THIRD_PARTY_ALLOWED or top == "__future__"
                ok = ok or top in EXEMPT.get(path.relative_to(REPO_ROOT).as_posix(), ())
            if not ok:
                found.append(f"{path.relative_to(REPO_ROOT)} imports {name}")
    return found


# --------------------------------------------------------------------------- the checks


def _run(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_does_no_work():
    """``import anomclust_lite`` loads no submodule and not even NumPy."""
    out = _run("import sys, anomclust_lite\n"
               "print(sorted(m for m in sys.modules if m.startswith(('anomclust_lite.', 'numpy', 'PIL'))))")
    assert out == "[]"


def test_core_names_load_neither_pillow_nor_onnxruntime():
    pure = [name for name, module in anomclust_lite._EXPORTS.items() if module.split(".")[1] in PURE_LAYERS]
    assert "patch_scores" in pure and "embed_bags" in pure and "cluster" in pure and "nmi" in pure
    out = _run("import sys, anomclust_lite\n"
               "anomclust_lite.patch_scores\n"
               f"for name in {pure!r}: getattr(anomclust_lite, name)\n"
               "print([m for m in ('PIL', 'onnxruntime') if m in sys.modules])")
    assert out == "[]"


def test_lazy_exports_match_all():
    assert set(anomclust_lite.__all__) - {"__version__"} == set(anomclust_lite._EXPORTS)
    assert set(anomclust_lite.__all__) <= set(dir(anomclust_lite))
    for name in anomclust_lite.__all__:
        assert getattr(anomclust_lite, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'patch_score'"):
        anomclust_lite.patch_score  # noqa: B018


def test_cluster_is_the_function_after_the_subpackage_loads():
    """Loading ``anomclust_lite.clustering`` (bound on the root by the import system) hides no public name."""
    out = _run("import anomclust_lite, anomclust_lite.clustering.kmeans, anomclust_lite.clustering.auto_k\n"
               "import anomclust_lite.metrics.supervised\n"
               "from anomclust_lite.clustering.dispatch import cluster\n"
               "print(anomclust_lite.cluster is cluster, anomclust_lite.metrics.__name__)")
    assert out == "True anomclust_lite.metrics"
    out = _run("import anomclust_lite\n"
               "f = anomclust_lite.cluster\n"
               "import anomclust_lite.clustering.kmeans\n"
               "print(anomclust_lite.cluster is f, callable(f))")
    assert out == "True True"


def test_no_subpackage_shares_a_name_with_a_public_function():
    """A submodule named like an exported function would replace it on the root once imported."""
    children = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    clashes = {name for name, module in anomclust_lite._EXPORTS.items() if name in children and module != f".{name}"}
    assert "clustering" in children and clashes == set()


@pytest.mark.parametrize("layer", sorted(PURE_LAYERS))
def test_pure_layers_import_only_numpy_scipy_and_lower_layers(layer):
    assert layer_violations(layer, PURE_LAYERS[layer]) == []


@pytest.mark.parametrize("layer", sorted(NUMERIC_LAYERS))
def test_estimator_does_not_import_the_feature_stack(layer):
    """No features/, report/, cli/, PIL or onnxruntime below the estimator (numpy/scipy only)."""
    assert layer_violations(layer, NUMERIC_LAYERS[layer]) == []


def test_root_imports_only_the_standard_library():
    assert [m for m in imported_modules(PACKAGE / "__init__.py") if m.split(".")[0] not in sys.stdlib_module_names
            and m != "__future__"] == []


def test_layer_check_can_fail(tmp_path):
    """The helpers see a forbidden import and an oversized function."""
    assert any("PIL" in v for v in layer_violations("datasets.py", ("core",)))
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_BODY_LINES + 1))
    big = PACKAGE.parent / "tests" / "_tmp_oversized_module.py"
    try:
        big.write_text(f'def f():\n    """Doc."""\n{body}\n', encoding="utf-8")
        assert [v.split(" ", 1)[1] for v in size_violations(big)] == [f"f(): body of {MAX_BODY_LINES + 1} lines (max 60)"]
        assert size_violations(big, max_body=MAX_BODY_LINES + 1) == []
        assert len(size_violations(big, max_module=10)) == 2
    finally:
        big.unlink()


@pytest.mark.parametrize("target", SIZED)
def test_finished_packages_have_small_modules_and_functions(target):
    assert size_violations(PACKAGE / target) == []


def test_whole_package_and_tools_have_small_modules_and_functions():
    assert size_violations(PACKAGE) + size_violations(REPO_ROOT / "tools") == []
