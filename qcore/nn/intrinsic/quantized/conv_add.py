"""Quantized convolutions fused with a residual add: ConvAdd1d/2d, ConvAddReLU1d/2d (torch.ao has the 2-d ones).

Reference numerics: ``quantize(conv(x) + extra)`` (ReLU before quantizing
for the ReLU classes), in float32 on dequantized values. The convolution's
result is never rounded onto a grid of its own (one rounding fewer than a
quantized conv followed by a quantized add): that is what the fused kernels
compute.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore.errors import ConfigError, QuantizationError
from qcore.nn.intrinsic import modules as nni
from qcore.nn.quantized.base import module_label, observe_weighted
from qcore.nn.quantized.conv import Conv1d, Conv2d
from qcore.nn.quantized.scripting import ScriptableTwin, _qparam_buffers, fake_quantize_output
from qcore.qtensor import QTensor

__all__ = ["ConvAdd1d", "ConvAddReLU1d", "ConvAdd2d", "ConvAddReLU2d", "ConvAddTwin", "CONV_ADD_CLASSES"]


class _ConvAddMixin:
    """``quantize(conv(input) + extra_input)`` (ReLU after the add with ``_RELU_AFTER_ADD``), listed before the
    quantized convolution class it extends (which gives the weights, the conv and its errors)."""

    _FLOAT_MODULE: ClassVar[type]
    _RELU_AFTER_ADD: ClassVar[bool] = False

    def forward(self, input: QTensor, extra_input: QTensor) -> QTensor:  # type: ignore[override]
        y = self._float_forward(self._dequantized_input(input))
        extra = self._dequantized_input(extra_input)
        try:
            y = y + extra
        except RuntimeError:
            raise QuantizationError(
                f"{module_label(self)}: extra_input of shape {tuple(extra.shape)} cannot be added to the convolution's "
                f"output of shape {tuple(y.shape)}; pass a residual of the output's shape (or one that broadcasts to it)"
            ) from None
        if self._RELU_AFTER_ADD:
            y = F.relu(y)
        return self._quantize_output(y)

    def _float_conv(self) -> nn.Module:
        """The float convolution holding the dequantized weight (the conv class's own float reference)."""
        return super().to_float_reference()  # type: ignore[misc]

    def to_float_reference(self) -> nn.Module:
        """The fused float module (a convolution holding the dequantized weight, then add, then ReLU) it computes."""
        if self._RELU_AFTER_ADD:
            return self._FLOAT_MODULE(self._float_conv(), torch.add, nn.ReLU())
        return self._FLOAT_MODULE(self._float_conv(), torch.add)

    def __prepare_scriptable__(self) -> nn.Module:
        return ConvAddTwin(self._float_conv(), self._RELU_AFTER_ADD, self.scale, self.zero_point,
                           self.quant_min, self.quant_max, source=self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> nn.Module:
        """From an observed fused float ``ConvAdd{1,2}d`` (``ConvAddReLU{1,2}d`` for the ReLU classes)."""
        if type(mod) is not cls._FLOAT_MODULE:
            raise ConfigError(f"{cls.__name__}.from_float expects a fused float {cls._FLOAT_MODULE.__name__} "
                              f"(conv then add{' then ReLU' if cls._RELU_AFTER_ADD else ''}), got {type(mod).__name__}")
        observed = observe_weighted(cls, mod, cls._float_types(), use_precomputed_fake_quant,
                                    fused_types=(cls._FLOAT_MODULE,))
        layer, out = observed.layer, observed.output
        qconv = cls(
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride, padding=layer.padding,
            dilation=layer.dilation, groups=layer.groups, bias=observed.bias is not None,
            padding_mode=layer.padding_mode, weight_dtype=observed.weight.qdtype, output_dtype=out.dtype,
            device=observed.weight.device,
        )
        qconv.set_weight_bias(observed.weight, observed.bias)
        qconv.set_output_qparams(out.scale, out.zero_point, out.dtype, out.quant_min, out.quant_max)
        return qconv


class ConvAdd1d(_ConvAddMixin, Conv1d):
    """``quantize(conv1d(input) + extra_input)``; from the fused float ``ConvAdd1d`` (FX fusion of ``conv(x) + y``)."""

    _FLOAT_MODULE: ClassVar[type] = nni.ConvAdd1d


class ConvAddReLU1d(_ConvAddMixin, Conv1d):
    """``quantize(relu(conv1d(input) + extra_input))``; from the fused float ``ConvAddReLU1d``."""

    _FLOAT_MODULE: ClassVar[type] = nni.ConvAddReLU1d
    _RELU_AFTER_ADD: ClassVar[bool] = True


class ConvAdd2d(_ConvAddMixin, Conv2d):
    """``quantize(conv2d(input) + extra_input)``: a Conv2d whose output is added to a second quantized tensor.

    Converted from the fused float ``qcore.nn.intrinsic.ConvAdd2d`` that FX
    fusion makes of ``conv(x) + y`` (or a user builds for eager mode).
    """

    _FLOAT_MODULE: ClassVar[type] = nni.ConvAdd2d


class ConvAddReLU2d(_ConvAddMixin, Conv2d):
    """``quantize(relu(conv2d(input) + extra_input))``; from the fused float ``ConvAddReLU2d``."""

    _FLOAT_MODULE: ClassVar[type] = nni.ConvAddReLU2d
    _RELU_AFTER_ADD: ClassVar[bool] = True


#: The fused conv + add reference modules, by their convolution's dimensions and whether ReLU follows.
CONV_ADD_CLASSES = {(1, False): ConvAdd1d, (1, True): ConvAddReLU1d, (2, False): ConvAdd2d, (2, True): ConvAddReLU2d}


class ConvAddTwin(ScriptableTwin):
    """TorchScript twin of a quantized ConvAdd2d / ConvAddReLU2d: float conv + add (+ ReLU), re-quantized."""

    def __init__(self, conv: nn.Module, relu: bool, scale: Tensor, zero_point: Tensor, quant_min: int,
                 quant_max: int, source: Optional[nn.Module] = None) -> None:
        super().__init__(source)
        self.op = conv
        self.relu = bool(relu)
        _qparam_buffers(self, scale, zero_point)
        self.quant_min = int(quant_min)
        self.quant_max = int(quant_max)

    def forward(self, x: Tensor, extra: Tensor) -> Tensor:  # type: ignore[override]
        if torch.jit.is_scripting():
            return self.reference_add(x, extra)
        return self._eager_forward_add(x, extra)

    def reference_add(self, x: Tensor, extra: Tensor) -> Tensor:
        y = self.op(x) + extra
        if self.relu:
            y = torch.relu(y)
        return fake_quantize_output(y, self.scale, self.zero_point, self.quant_min, self.quant_max)

    @torch.jit.unused
    def _eager_forward_add(self, x: Tensor, extra: Tensor) -> Tensor:
        source = self._qcore_source.module
        if source is None:
            return self.reference_add(x, extra)
        return source(x, extra)

    def extra_repr(self) -> str:
        return (f"relu={self.relu}, scale={float(self.scale)}, zero_point={int(self.zero_point)}, "
                f"quant_min={self.quant_min}, quant_max={self.quant_max}")
