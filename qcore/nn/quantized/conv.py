"""Statically quantized convolutions (torch.ao.nn.quantized.Conv1d/2d/3d, ConvTranspose1d/2d/3d).

Reference numerics: dequantize the input and the weight, run torch's float
convolution in float32 (the same call ``nn.ConvNd`` makes, padding modes
included), quantize the result with the output qparams.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError
from qcore.nn.quantized.base import QuantizedModule, QuantizedWeightMixin, observe_weighted
from qcore.nn.quantized.scripting import FloatModuleTwin
from qcore.qtensor import QTensor

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

IntOrTuple = Union[int, tuple[int, ...]]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_FLOAT_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_FLOAT_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class _ConvNd(QuantizedWeightMixin, QuantizedModule):
    """Shared by all quantized convolutions; subclasses fix ``_NDIM``, ``_TRANSPOSED``, ``_WITH_RELU``."""

    _NDIM: ClassVar[int]
    _TRANSPOSED: ClassVar[bool] = False
    _WITH_RELU: ClassVar[bool] = False

    def _setup(
        self,
        float_cls: type,
        kwargs: dict[str, Any],
        weight_dtype: DTypeLike,
        output_dtype: DTypeLike,
        device: Any,
        dtype: Any,
    ) -> None:
        QuantizedModule.__init__(self, output_dtype)
        if dtype is not None and dtype != torch.float32:
            raise ConfigError(
                f"{type(self).__name__}: dtype={dtype!r} is the float factory dtype (float32 only); "
                "give the weight dtype as weight_dtype= and the activation dtype as output_dtype="
            )
        try:
            # Let torch validate and normalise the arguments exactly as nn.ConvNd does (no memory on "meta").
            ref = float_cls(**kwargs, device="meta")
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "padding_mode"):
            setattr(self, name, getattr(ref, name))
        self.transposed = self._TRANSPOSED
        self.output_padding = ref.output_padding
        self._reversed_padding_repeated_twice = list(ref._reversed_padding_repeated_twice)
        self._init_weight(tuple(ref.weight.shape), weight_dtype, bias=ref.bias is not None)
        if device is not None:
            self.to(device)

    def _get_name(self) -> str:
        return "Quantized" + type(self).__name__

    def _float_config(self) -> dict[str, Any]:
        """The constructor arguments of the matching float nn module."""
        config = dict(
            in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=self.kernel_size,
            stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups,
            bias=self._bias is not None, padding_mode=self.padding_mode,
        )
        if self._TRANSPOSED:
            config["output_padding"] = self.output_padding
        return config

    def _float_forward(self, x: Tensor) -> Tensor:
        w, b = self._weight_float(), self._bias
        if self._TRANSPOSED:
            y = _CONV_T[self._NDIM](x, w, b, self.stride, self.padding, self.output_padding, self.groups, self.dilation)
        elif self.padding_mode != "zeros":
            padded = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            y = _CONV[self._NDIM](padded, w, b, self.stride, 0, self.dilation, self.groups)
        else:
            y = _CONV[self._NDIM](x, w, b, self.stride, self.padding, self.dilation, self.groups)
        return F.relu(y) if self._WITH_RELU else y

    def forward(self, x: QTensor) -> QTensor:
        return self._quantize_output(self._float_forward(self._dequantized_input(x)))

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"{self._output_repr()}, {self._weight_repr()}"
        )
        if isinstance(self.padding, str) or any(p != 0 for p in self.padding):
            text += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            text += f", dilation={self.dilation}"
        if self._TRANSPOSED and self.output_padding != (0,) * len(self.output_padding):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self._bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text

    def to_float_reference(self) -> nn.Module:
        """The float nn.ConvNd (then ReLU for ConvReLU) holding the dequantized weight: the same float computation."""
        float_cls = (_FLOAT_CONV_T if self._TRANSPOSED else _FLOAT_CONV)[self._NDIM]
        conv = float_cls(**self._float_config(), device=self._qweight.device)
        with torch.no_grad():
            conv.weight.copy_(self._weight_float())
            if self._bias is not None:
                conv.bias.copy_(self._bias)
        conv.requires_grad_(False)
        return nn.Sequential(conv, nn.ReLU()) if self._WITH_RELU else conv

    def __prepare_scriptable__(self) -> nn.Module:
        return FloatModuleTwin(self.to_float_reference(), self.scale, self.zero_point, self.quant_min, self.quant_max, source=self)

    @classmethod
    def _float_types(cls) -> tuple[type, ...]:
        return ((_FLOAT_CONV_T if cls._TRANSPOSED else _FLOAT_CONV)[cls._NDIM],)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "_ConvNd":
        """From an observed float conv, a fused ConvReLU, or a QAT Conv / ConvReLU / ConvBn / ConvBnReLU (BN folded)."""
        observed = observe_weighted(
            cls, mod, cls._float_types(), use_precomputed_fake_quant, transpose=cls._TRANSPOSED, with_relu=cls._WITH_RELU
        )
        layer = observed.layer
        config = dict(
            in_channels=layer.in_channels, out_channels=layer.out_channels, kernel_size=layer.kernel_size,
            stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
            bias=observed.bias is not None, padding_mode=layer.padding_mode,
        )
        if cls._TRANSPOSED:
            config["output_padding"] = layer.output_padding
        out = observed.output
        qconv = cls(**config, weight_dtype=observed.weight.qdtype, output_dtype=out.dtype, device=observed.weight.device)
        qconv.set_weight_bias(observed.weight, observed.bias)
        qconv.set_output_qparams(out.scale, out.zero_point, out.dtype, out.quant_min, out.quant_max)
        return qconv


class _Conv(_ConvNd):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: Union[str, IntOrTuple] = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
        *,
        weight_dtype: DTypeLike = dtypes.int8,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        kwargs = dict(
            in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
            padding=padding, dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode,
        )
        self._setup(_FLOAT_CONV[self._NDIM], kwargs, weight_dtype, output_dtype, device, dtype)


class _ConvTranspose(_ConvNd):
    _TRANSPOSED = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
        *,
        weight_dtype: DTypeLike = dtypes.int8,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        kwargs = dict(
            in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride,
            padding=padding, output_padding=output_padding, groups=groups, bias=bias, dilation=dilation,
            padding_mode=padding_mode,
        )
        self._setup(_FLOAT_CONV_T[self._NDIM], kwargs, weight_dtype, output_dtype, device, dtype)


class Conv1d(_Conv):
    """Quantized 1-d convolution; padding modes zeros, reflect, replicate, circular."""

    _NDIM = 1


class Conv2d(_Conv):
    """Quantized 2-d convolution; padding modes zeros, reflect, replicate, circular."""

    _NDIM = 2


class Conv3d(_Conv):
    """Quantized 3-d convolution; padding modes zeros, reflect, replicate, circular."""

    _NDIM = 3


class ConvTranspose1d(_ConvTranspose):
    """Quantized 1-d transposed convolution (weight per channel along axis 0 or 1, as the observer says)."""

    _NDIM = 1


class ConvTranspose2d(_ConvTranspose):
    """Quantized 2-d transposed convolution (weight per channel along axis 0 or 1, as the observer says)."""

    _NDIM = 2


class ConvTranspose3d(_ConvTranspose):
    """Quantized 3-d transposed convolution (weight per channel along axis 0 or 1, as the observer says)."""

    _NDIM = 3
