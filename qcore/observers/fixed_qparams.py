"""FixedQParamsObserver: qparams known in advance, for ops with a fixed output range (sigmoid, tanh)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError
from qcore.observers.base import ObserverBase, build_spec
from qcore.qparams import quant_range

__all__ = ["FixedQParamsObserver"]


class FixedQParamsObserver(ObserverBase):
    """Always reports the given ``scale`` and ``zero_point``; observes nothing.

    ``quant_min``/``quant_max`` default to the dtype's range (torch.ao
    defaults to 0..255 whatever the dtype; for uint8 that is the same).
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(
        self,
        scale: float,
        zero_point: int,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_tensor_affine,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        is_dynamic: bool = False,
    ) -> None:
        name = type(self).__name__
        if is_dynamic:
            raise ConfigError(f"{name} does not support dynamic quantization (is_dynamic=True); its qparams are fixed")
        super().__init__(dtype, False)
        spec = build_spec(name, dtype=dtype, qscheme=qscheme, quant_min=quant_min, quant_max=quant_max)
        if spec.dtype.is_float:
            raise ConfigError(f"{name} needs an integer dtype for its fixed qparams, got {spec.dtype.name}")
        if spec.is_per_channel:
            raise ConfigError(f"{name} supports per-tensor qschemes only, got {spec.qscheme.value}")
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError(f"{name}: scale must be a positive finite number, got {scale}")
        lo, hi = quant_range(spec)
        if int(zero_point) != zero_point or not lo <= int(zero_point) <= hi:
            raise ConfigError(f"{name}: zero_point must be an integer in [{lo}, {hi}] (the quant range), got {zero_point}")
        self.spec = spec
        self.register_buffer("scale", torch.tensor([scale], dtype=torch.float))
        self.register_buffer("zero_point", torch.tensor([int(zero_point)], dtype=torch.int))

    @property
    def quant_min(self) -> int:
        return quant_range(self.spec)[0]

    @property
    def quant_max(self) -> int:
        return quant_range(self.spec)[1]

    def forward(self, x: Tensor) -> Tensor:
        return x

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """The fixed (scale, zero_point), as copies of the buffers."""
        return self.scale.clone(), self.zero_point.clone()

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale.item()}, zero_point={int(self.zero_point.item())}, dtype={self.dtype.name}, "
            f"qscheme={self.qscheme.value}, quant_min={self.quant_min}, quant_max={self.quant_max}"
        )
