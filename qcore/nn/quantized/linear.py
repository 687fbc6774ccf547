"""Statically quantized Linear (torch.ao.nn.quantized.Linear): quantized weight, QTensor in and out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.nn.quantized.base import QuantizedModule, QuantizedWeightMixin, observe_weighted
from qcore.nn.quantized.scripting import FloatModuleTwin
from qcore.qtensor import QTensor

__all__ = ["Linear"]


class Linear(QuantizedWeightMixin, QuantizedModule):
    """``y = quantize(x.dequantize() @ weight.dequantize().T + bias)`` with the output qparams.

    ``dtype`` is the weight dtype (int8 as torch.ao; uint8 also works),
    ``output_dtype`` the activation dtype (uint8, or int8 for symmetric schemes).
    """

    _FLOAT_TYPES: tuple[type, ...] = (nn.Linear,)
    _WITH_RELU = False

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        dtype: DTypeLike = dtypes.int8,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        QuantizedModule.__init__(self, output_dtype)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_weight((self.out_features, self.in_features), dtype, bias=bias_)

    def _get_name(self) -> str:
        return "Quantized" + type(self).__name__

    def _float_forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self._weight_float(), self._bias)
        return F.relu(y) if self._WITH_RELU else y

    def forward(self, x: QTensor) -> QTensor:
        return self._quantize_output(self._float_forward(self._dequantized_input(x)))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._output_repr()}, {self._weight_repr()}"

    def to_float_reference(self) -> nn.Module:
        """A float ``nn.Linear`` (followed by ReLU for LinearReLU) holding the dequantized weight."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self._bias is not None, device=self._qweight.device)
        with torch.no_grad():
            linear.weight.copy_(self._weight_float())
            if self._bias is not None:
                linear.bias.copy_(self._bias)
        linear.requires_grad_(False)
        return nn.Sequential(linear, nn.ReLU()) if self._WITH_RELU else linear

    def __prepare_scriptable__(self) -> nn.Module:
        return FloatModuleTwin(self.to_float_reference(), self.scale, self.zero_point, self.quant_min, self.quant_max, source=self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Linear":
        """From an observed float Linear, a fused LinearReLU, or a QAT Linear / LinearReLU / LinearBn1d."""
        observed = observe_weighted(cls, mod, cls._FLOAT_TYPES, use_precomputed_fake_quant, with_relu=cls._WITH_RELU)
        layer = observed.layer
        out = observed.output
        qlinear = cls(
            layer.in_features, layer.out_features, observed.bias is not None, observed.weight.qdtype, output_dtype=out.dtype
        )
        qlinear.to(observed.weight.device)
        qlinear.set_weight_bias(observed.weight, observed.bias)
        qlinear.set_output_qparams(out.scale, out.zero_point, out.dtype, out.quant_min, out.quant_max)
        return qlinear
