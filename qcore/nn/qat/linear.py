"""QAT Linear: an ``nn.Linear`` whose forward uses the fake-quantized weight (torch.ao.nn.qat.Linear)."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrize import is_parametrized, transfer_parametrizations_and_params

from qcore.nn.qat._common import build_weight_fake_quant, detached_parameter, float_module_qconfig, require_qconfig

__all__ = ["Linear"]


class Linear(nn.Linear):
    """``F.linear(x, weight_fake_quant(weight), bias)``: training sees the weight on its integer grid.

    ``weight_fake_quant`` comes from ``qconfig.weight()``; convert reads its
    qparams (``weight_fake_quant.calculate_qparams()``) to quantize the weight.
    """

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Linear

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        qconfig: Any = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.qconfig = require_qconfig(type(self), qconfig)
        self.weight_fake_quant = build_weight_fake_quant(qconfig, device)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight_fake_quant(self.weight), self.bias)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Linear":
        """The QAT module sharing ``mod``'s weight and bias Parameters (and parametrizations)."""
        qconfig = float_module_qconfig(cls, mod)
        if isinstance(mod, nn.Sequential):  # the fused float LinearReLU: its Linear is the first part
            mod = mod[0]
        qat = cls(
            mod.in_features,
            mod.out_features,
            bias=mod.bias is not None,
            qconfig=qconfig,
            device=mod.weight.device,
        )
        for name in ("weight", "bias"):
            if is_parametrized(mod, name):
                transfer_parametrizations_and_params(mod, qat, name)
            else:
                setattr(qat, name, getattr(mod, name))
        return qat

    def to_float(self) -> nn.Module:
        """A plain ``nn.Linear`` with this module's current weight and bias (no fake quantization)."""
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        linear.weight = detached_parameter(self.weight)
        linear.bias = detached_parameter(self.bias)
        linear.train(self.training)
        return linear
