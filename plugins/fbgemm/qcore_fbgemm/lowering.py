"""The lowering table: reference quantized module type -> factory of its fbgemm kernel module.

It merges the static modules (:mod:`qcore_fbgemm.static`) with the dynamic
and weight-only ones (``qcore_fbgemm.dynamic.DYNAMIC_LOWERINGS``, when that
package is present). Types match exactly: a user's subclass of a reference
module keeps its own forward and stays as it is.
"""

from __future__ import annotations

import importlib
from typing import Callable, Optional

from torch import nn

__all__ = ["lowerings", "lower_module"]

Factory = Callable[[nn.Module], Optional[nn.Module]]

_table: Optional[dict[type, Factory]] = None


def _dynamic_lowerings() -> dict[type, Factory]:
    try:
        dynamic = importlib.import_module("qcore_fbgemm.dynamic")
    except ModuleNotFoundError as exc:
        if exc.name not in ("qcore_fbgemm.dynamic",):
            raise
        return {}
    return dict(getattr(dynamic, "DYNAMIC_LOWERINGS", {}))


def lowerings() -> dict[type, Factory]:
    """The whole table, built on first use."""
    global _table
    if _table is None:
        from qcore_fbgemm.static import STATIC_LOWERINGS

        table = dict(STATIC_LOWERINGS)
        table.update(_dynamic_lowerings())
        _table = table
    return _table


def lower_module(module: nn.Module) -> Optional[nn.Module]:
    """The kernel-backed replacement of a reference quantized module, or None to keep it."""
    factory = lowerings().get(type(module))
    return None if factory is None else factory(module)
