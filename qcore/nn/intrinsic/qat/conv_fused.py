"""QAT fused convolutions (torch.ao.nn.intrinsic.qat): ConvBn*, ConvBnReLU*, ConvReLU*.

ConvBn* / ConvBnReLU* train with the batch norm folded into the weight that is
fake-quantized (Jacob et al. 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", section 3.2)::

    scale  = bn.weight / sqrt(bn.running_var + bn.eps)
    y      = conv(x, weight_fake_quant(weight * scale[:, None, ...]), 0) / scale[None, :, None, ...]
    y      = bn(y + bias)            # batch statistics in training, running ones when frozen
    (relu) = relu(y)

The BN running statistics keep updating until ``freeze_bn_stats()`` (per
module, or ``model.apply(qcore.nn.intrinsic.qat.freeze_bn_stats)``) turns BN
to eval behaviour; ``update_bn_stats()`` turns it back.

Folding at convert: ``mod.fold_bn()`` returns the float ``(weight, bias)`` with
the BN running statistics folded in (``weight * gamma / sqrt(var + eps)`` and
``(bias - mean) * gamma / sqrt(var + eps) + beta``, computed exactly as
``torch.nn.utils.fusion.fuse_conv_bn_weights`` and therefore as torch.ao's
convert); ``mod.to_float()`` returns the float conv (``ConvReLU*`` fused float
module for the ReLU variants) holding them. A quantized conv's ``from_float``
does, for any of these modules::

    weight, bias = mod.fold_bn() if hasattr(mod, "fold_bn") else (mod.weight.detach(), mod.bias)
    mod.weight_fake_quant(weight)        # torch.ao observes the (folded) weight once more
    scale, zero_point = mod.weight_fake_quant.calculate_qparams()
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init
from torch.nn.utils.fusion import fuse_conv_bn_weights

from qcore.nn.intrinsic import modules as nni
from qcore.nn.intrinsic.qat._bn import BnFoldMixin, freeze_bn_stats, update_bn_stats
from qcore.nn.qat import conv as nnqat_conv
from qcore.nn.qat._common import float_conv_module, float_module_qconfig

__all__ = [
    "ConvBn1d",
    "ConvBn2d",
    "ConvBn3d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvBnReLU3d",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvReLU3d",
    "freeze_bn_stats",
    "update_bn_stats",
]


class _ConvBnNd(BnFoldMixin, nn.modules.conv._ConvNd, nni.FusedModule):
    """Conv + BatchNorm trained with the BN scale folded into the fake-quantized weight.

    Subclasses name ``_FLOAT_MODULE`` (the fused float module ``from_float``
    accepts), ``_FLOAT_CONV_MODULE``, ``_FLOAT_BN_MODULE`` and, with ReLU,
    ``_FLOAT_RELU_MODULE`` and ``_FUSED_FLOAT_MODULE`` (what ``to_float`` returns).
    """

    _version = 2  # state_dict layout: weight, bias, bn.*, weight_fake_quant.* (torch.ao's version 2)
    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]]
    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = None
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = None
    _FUSE_BN_WEIGHTS = staticmethod(fuse_conv_bn_weights)

    bias: Optional[nn.Parameter]

    def __init__(
        self,
        # Conv arguments
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Union[str, Any] = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: Optional[bool] = None,
        padding_mode: str = "zeros",
        # BatchNorm arguments (num_features = out_channels, affine and track_running_stats always on)
        eps: float = 1e-05,
        momentum: Optional[float] = 0.1,
        # this module's own
        freeze_bn: bool = False,
        qconfig: Any = None,
    ) -> None:
        # The conv is built without bias: the bias is added after un-scaling (see forward).
        self._FLOAT_CONV_MODULE.__init__(
            self,  # type: ignore[arg-type]
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=False,
            padding_mode=padding_mode,
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        self._init_bn(out_channels, eps, momentum, freeze_bn, qconfig)

    def reset_bn_parameters(self) -> None:
        """Reset BN statistics, draw gamma ~ U(0, 1), zero beta, and re-draw the conv bias like nn.Conv."""
        super().reset_bn_parameters()
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self._folded_forward(input, self._conv_forward)  # type: ignore[attr-defined]
        return F.relu(out) if self._FLOAT_RELU_MODULE is not None else out

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "_ConvBnNd":
        """The QAT module from the fused float ConvBn(ReLU), sharing its conv and BN Parameters and buffers."""
        qconfig = float_module_qconfig(cls, mod)
        conv, bn = mod[0], mod[1]  # type: ignore[index]
        qat = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
            bn.eps,
            bn.momentum,
            False,
            qconfig,
        )
        return qat._share_float_parameters(conv, bn)

    def to_float(self) -> nn.Module:
        """The BN-folded float conv (inside the fused float ConvReLU for the ReLU variants)."""
        return float_conv_module(self, *self.fold_bn())


class ConvBn1d(_ConvBnNd, nn.Conv1d):
    """Conv1d + BatchNorm1d for QAT (from the fused float ``qcore.nn.intrinsic.ConvBn1d``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBn1d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]] = nn.Conv1d
    _FLOAT_BN_MODULE: ClassVar[type[nn.modules.batchnorm._BatchNorm]] = nn.BatchNorm1d


class ConvBn2d(_ConvBnNd, nn.Conv2d):
    """Conv2d + BatchNorm2d for QAT (from the fused float ``qcore.nn.intrinsic.ConvBn2d``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBn2d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]] = nn.Conv2d
    _FLOAT_BN_MODULE: ClassVar[type[nn.modules.batchnorm._BatchNorm]] = nn.BatchNorm2d


class ConvBn3d(_ConvBnNd, nn.Conv3d):
    """Conv3d + BatchNorm3d for QAT (from the fused float ``qcore.nn.intrinsic.ConvBn3d``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBn3d
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]] = nn.Conv3d
    _FLOAT_BN_MODULE: ClassVar[type[nn.modules.batchnorm._BatchNorm]] = nn.BatchNorm3d


class ConvBnReLU1d(ConvBn1d):
    """Conv1d + BatchNorm1d + ReLU for QAT; ``to_float`` gives the fused float ConvReLU1d."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBnReLU1d
    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = nn.ReLU
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = nni.ConvReLU1d


class ConvBnReLU2d(ConvBn2d):
    """Conv2d + BatchNorm2d + ReLU for QAT; ``to_float`` gives the fused float ConvReLU2d."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBnReLU2d
    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = nn.ReLU
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = nni.ConvReLU2d


class ConvBnReLU3d(ConvBn3d):
    """Conv3d + BatchNorm3d + ReLU for QAT; ``to_float`` gives the fused float ConvReLU3d."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvBnReLU3d
    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = nn.ReLU
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = nni.ConvReLU3d


class _ConvReLUMixin:
    """``relu(conv(x, weight_fake_quant(weight), bias))``; from and to the fused float ConvReLU."""

    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = nn.ReLU

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(self._conv_forward(input, self.weight_fake_quant(self.weight), self.bias))  # type: ignore[attr-defined]


class ConvReLU1d(_ConvReLUMixin, nnqat_conv.Conv1d, nni.FusedModule):
    """QAT Conv1d followed by ReLU (from the fused float ``qcore.nn.intrinsic.ConvReLU1d``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvReLU1d
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = nni.ConvReLU1d


class ConvReLU2d(_ConvReLUMixin, nnqat_conv.Conv2d, nni.FusedModule):
    """QAT Conv2d followed by ReLU (from the fused float ``qcore.nn.intrinsic.ConvReLU2d``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvReLU2d
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = nni.ConvReLU2d


class ConvReLU3d(_ConvReLUMixin, nnqat_conv.Conv3d, nni.FusedModule):
    """QAT Conv3d followed by ReLU (from the fused float ``qcore.nn.intrinsic.ConvReLU3d``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.ConvReLU3d
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = nni.ConvReLU3d
