"""scikit-learn's estimator conventions, derived from the ``__init__`` signature.

``__init__`` stores every parameter under its own name, as given; validation
waits for ``fit``. :class:`ParamsMixin` then reads the parameter names off the
signature, so ``get_params``, ``set_params`` and ``repr`` never need a
hand-written list that could drift from the constructor.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Tuple

__all__ = ["ParamsMixin"]


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``__repr__`` from the subclass's ``__init__`` signature.

    Subclasses list in ``_machine_params`` the parameters that are settings of
    the machine rather than of the model (e.g. a thread count): ``set_params``
    and ``repr`` accept and show them, ``get_params`` leaves them out, so they
    are never saved with a model.
    """

    _machine_params: Tuple[str, ...] = ()

    @classmethod
    def _param_defaults(cls) -> Dict[str, Any]:
        """Every ``__init__`` parameter name (in signature order) with its default."""
        signature = inspect.signature(cls.__init__)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def _all_params(self) -> Dict[str, Any]:
        """Every ``__init__`` parameter with its current value, machine settings included."""
        return {name: getattr(self, name) for name in self._param_defaults()}

    def get_params(self) -> Dict[str, Any]:
        """The model's parameters (every ``__init__`` argument except machine settings), as stored."""
        return {name: value for name, value in self._all_params().items() if name not in self._machine_params}

    def set_params(self, **params: Any) -> "ParamsMixin":
        """Set ``__init__`` parameters by name; they are validated when next used (``fit``, ...).

        Raises ``ValueError`` for a name that is not a parameter. Returns ``self``.
        """
        known = self._param_defaults()
        for name, value in params.items():
            if name not in known:
                raise ValueError(
                    f"{name!r} is not a parameter of {type(self).__name__}; valid parameters: {', '.join(known)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        changed = [
            f"{name}={value!r}"
            for (name, default), value in zip(self._param_defaults().items(), self._all_params().values())
            if not _same(value, default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(value: Any, default: Any) -> bool:
    """Whether ``value`` is the default (identity first, so arrays never get compared elementwise)."""
    if value is default:
        return True
    try:
        return bool(type(value) is type(default) and value == default)
    except (TypeError, ValueError):
        return False
