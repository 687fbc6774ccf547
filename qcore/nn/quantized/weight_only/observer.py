"""GroupwiseMinMaxObserver: one scale and zero point per group of ``group_size`` consecutive weights in a row.

Groupwise quantization (int4 LLM weights, typically groups of 32-128) bounds
the error of each weight by its group's range instead of the whole row's. The
observer views a ``[rows, columns]`` weight as ``[rows * groups, group_size]``
and keeps per-channel min/max on that view, so every formula is the
per-channel one; ``calculate_qparams`` returns ``rows * groups`` values, row-major.
"""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError, ObserverError
from qcore.observers.per_channel import PerChannelMinMaxObserver
from qcore.quant_spec import DEFAULT_EPS

__all__ = ["GroupwiseMinMaxObserver"]


class GroupwiseMinMaxObserver(PerChannelMinMaxObserver):
    """Per-group min/max of a 2-d weight, groups of ``group_size`` along the last dimension (int4 by default)."""

    def __init__(
        self,
        group_size: int = 128,
        dtype: DTypeLike = dtypes.int4,
        qscheme: QSchemeLike = dtypes.per_channel_symmetric,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict[str, Any]] = None,
        eps: float = DEFAULT_EPS,
    ) -> None:
        if int(group_size) < 1:
            raise ConfigError(f"GroupwiseMinMaxObserver: group_size must be a positive integer, got {group_size}")
        super().__init__(0, dtype, qscheme, False, quant_min, quant_max, factory_kwargs, eps)
        self.group_size = int(group_size)

    def _channel_rows(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] % self.group_size:
            raise ObserverError(
                f"GroupwiseMinMaxObserver(group_size={self.group_size}) needs a 2-d weight whose columns divide into groups, "
                f"got shape {tuple(x.shape)}; choose a group_size that divides {x.shape[-1] if x.dim() else 0}"
            )
        return x.to(self.min_val.dtype).reshape(-1, self.group_size)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, {super().extra_repr()}"
