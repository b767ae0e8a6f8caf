"""Every Examples section in the package runs and prints what it shows."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import anomclust_lite

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(anomclust_lite.__path__, prefix="anomclust_lite.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_public_functions_have_examples() -> None:
    """Each public function or class exported at top level shows a runnable example (or is a constant)."""
    missing = []
    for name in anomclust_lite.__all__:
        obj = getattr(anomclust_lite, name)
        if callable(obj) and not isinstance(obj, type) and ">>>" not in (obj.__doc__ or ""):
            missing.append(name)
    assert not missing, missing
