"""Quantize and DeQuantize: what QuantStub and DeQuantStub become at convert (torch.ao.nn.quantized names)."""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import QuantizationError
from qcore.nn.quantized.base import QuantizedModule, module_label, output_qparams_from
from qcore.nn.quantized.scripting import FakeQuantizeTwin, IdentityTwin
from qcore.qtensor import QTensor

__all__ = ["Quantize", "DeQuantize"]


class Quantize(QuantizedModule):
    """Quantizes a float tensor per tensor with fixed qparams: float in, QTensor out.

    ``factory_kwargs`` is accepted for torch.ao compatibility (``device`` is used).
    """

    def __init__(
        self,
        scale: Union[float, Tensor],
        zero_point: Union[int, Tensor],
        dtype: DTypeLike = dtypes.uint8,
        factory_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        super().__init__(dtype)
        device = (factory_kwargs or {}).get("device")
        if device is not None:
            self.to(device)
        self.set_output_qparams(scale, zero_point, dtype)

    def forward(self, x: Tensor) -> QTensor:
        if isinstance(x, QTensor):
            raise QuantizationError(
                f"{module_label(self)}: the input is already quantized (a QTensor); remove the extra QuantStub, "
                "or put a DeQuantStub before it"
            )
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, Tensor) else type(x).__name__
            raise QuantizationError(f"{module_label(self)}: expected a float tensor to quantize, got {got}")
        return self._quantize_output(x)

    def __prepare_scriptable__(self) -> nn.Module:
        return FakeQuantizeTwin(self.scale, self.zero_point, self.quant_min, self.quant_max, source=self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Quantize":
        """From a prepared (calibrated) QuantStub: the qparams of ``mod.activation_post_process``."""
        qp = output_qparams_from(getattr(mod, "activation_post_process", None), f"{cls.__name__}.from_float")
        module = cls(qp.scale, qp.zero_point, qp.dtype)
        module.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return module


class DeQuantize(nn.Module):
    """Dequantizes a QTensor to float32; a float input passes through unchanged, as with torch.ao."""

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, QTensor):
            return x.dequantize()
        if isinstance(x, Tensor) and x.is_floating_point():
            return x
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise QuantizationError(f"{module_label(self)}: expected a QTensor to dequantize, got {got}")

    def __prepare_scriptable__(self) -> nn.Module:
        return IdentityTwin(source=self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "DeQuantize":
        """From a DeQuantStub (it holds nothing to convert)."""
        return cls()
