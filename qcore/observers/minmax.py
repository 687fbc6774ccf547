"""Per-tensor min/max observers: the running extremes, or their exponential moving average."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError
from qcore.observers.base import UniformQuantizationObserverBase, is_unset
from qcore.quant_spec import DEFAULT_EPS, QuantSpec

__all__ = ["MinMaxObserver", "MovingAverageMinMaxObserver"]


def check_averaging_constant(owner: str, value: float) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{owner}: averaging_constant must be in (0, 1], got {value}; 0.01 is the usual choice")
    return value


class MinMaxObserver(UniformQuantizationObserverBase):
    """Records the running minimum and maximum of its inputs; qparams cover that whole range.

    Buffers ``min_val``/``max_val`` start at (+inf, -inf), as in torch.ao.
    """

    per_channel = False

    min_val: Tensor
    max_val: Tensor

    def __init__(
        self,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict[str, Any]] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
    ) -> None:
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.register_buffer("min_val", torch.tensor(float("inf"), **kwargs))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **kwargs))

    def forward(self, x_orig: Tensor) -> Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().to(self.min_val.dtype)
        min_cur, max_cur = torch.aminmax(x)
        self._require_finite(x, min_cur, max_cur)
        self._update(min_cur, max_cur)
        return x_orig

    def _update(self, min_cur: Tensor, max_cur: Tensor) -> None:
        self.min_val.copy_(torch.min(min_cur, self.min_val))
        self.max_val.copy_(torch.max(max_cur, self.max_val))

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """qparams covering ``[min_val, max_val]`` (widened to include zero)."""
        return self._calculate_qparams(self.min_val, self.max_val)

    def reset_min_max_vals(self) -> None:
        """Forget what was observed."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))

    def extra_repr(self) -> str:
        return f"{self._spec_repr()}, min_val={self.min_val}, max_val={self.max_val}"


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Tracks ``min += c * (batch_min - min)`` (and likewise max); the first batch sets them.

    Dynamic quantization (``is_dynamic=True``) needs ``averaging_constant=1``,
    so the qparams come from the latest input only.
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
        factory_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        name = type(self).__name__
        constant = check_averaging_constant(name, averaging_constant)
        if is_dynamic and constant != 1:
            raise ConfigError(
                f"{name}: dynamic quantization (is_dynamic=True) needs averaging_constant=1 so qparams follow "
                f"each input, got {constant}"
            )
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        self.averaging_constant = constant

    def _check_spec(self, spec: QuantSpec) -> None:
        super()._check_spec(spec)
        constant = self.__dict__.get("averaging_constant", 1.0)  # the constructor checks it before it is set
        if spec.is_dynamic and constant != 1:
            raise ConfigError(
                f"{type(self).__name__}: dynamic quantization (is_dynamic=True) needs averaging_constant=1, got {constant}"
            )

    def _update(self, min_cur: Tensor, max_cur: Tensor) -> None:
        if is_unset(self.min_val, self.max_val):
            self.min_val.copy_(min_cur)
            self.max_val.copy_(max_cur)
            return
        c = self.averaging_constant
        self.min_val.copy_(self.min_val + c * (min_cur - self.min_val))
        self.max_val.copy_(self.max_val + c * (max_cur - self.max_val))

    def extra_repr(self) -> str:
        return f"averaging_constant={self.averaging_constant}, {super().extra_repr()}"
