"""QAT Conv1d/2d/3d: convolutions whose forward uses the fake-quantized weight (torch.ao.nn.qat.Conv*)."""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import torch
from torch import nn

from qcore.nn.qat._common import build_weight_fake_quant, float_conv_module, float_module_qconfig, require_qconfig

__all__ = ["Conv1d", "Conv2d", "Conv3d"]


class _ConvNd(nn.Module):
    """What the QAT convolutions share; mixed in before the ``nn.ConvNd`` of the right dimension.

    Subclasses name ``_FLOAT_MODULE`` (what ``from_float`` accepts),
    ``_FLOAT_CONV_MODULE`` (the ``nn.ConvNd`` that ``to_float`` builds) and, for
    fused conv + relu, ``_FLOAT_RELU_MODULE`` and ``_FUSED_FLOAT_MODULE``.
    """

    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]]
    _FLOAT_BN_MODULE: ClassVar[Optional[type[nn.Module]]] = None
    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = None
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = None

    weight: nn.Parameter
    bias: Optional[nn.Parameter]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Union[str, Any] = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        qconfig: Any = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        self._FLOAT_CONV_MODULE.__init__(
            self,  # type: ignore[arg-type]
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.qconfig = require_qconfig(type(self), qconfig)
        self.weight_fake_quant = build_weight_fake_quant(qconfig, device)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias)  # type: ignore[attr-defined]

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """The QAT module sharing the float conv's weight and bias Parameters."""
        qconfig = float_module_qconfig(cls, mod)
        conv = mod[0] if isinstance(mod, nn.Sequential) else mod  # fused ConvReLU: the conv is part 0
        qat = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            qconfig=qconfig,
            device=conv.weight.device,
        )
        qat.weight = conv.weight
        qat.bias = conv.bias
        return qat

    def to_float(self) -> nn.Module:
        """The float conv with the current weight (wrapped with ReLU in the fused float module for ConvReLU)."""
        return float_conv_module(self, self.weight, self.bias)


class Conv1d(_ConvNd, nn.Conv1d):
    """QAT ``nn.Conv1d``: the weight goes through ``weight_fake_quant`` on every forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Conv1d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]] = nn.Conv1d


class Conv2d(_ConvNd, nn.Conv2d):
    """QAT ``nn.Conv2d``: the weight goes through ``weight_fake_quant`` on every forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Conv2d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]] = nn.Conv2d


class Conv3d(_ConvNd, nn.Conv3d):
    """QAT ``nn.Conv3d``: the weight goes through ``weight_fake_quant`` on every forward."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Conv3d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]] = nn.Conv3d
