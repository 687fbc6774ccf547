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

from qcore.errors import ConfigError
from qcore.nn.intrinsic import modules as nni
from qcore.nn.qat import conv as nnqat_conv
from qcore.nn.qat._common import build_weight_fake_quant, float_module_qconfig, public_name, require_qconfig

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


class _ConvBnNd(nn.modules.conv._ConvNd, nni.FusedModule):
    """Conv + BatchNorm trained with the BN scale folded into the fake-quantized weight.

    Subclasses name ``_FLOAT_MODULE`` (the fused float module ``from_float``
    accepts), ``_FLOAT_CONV_MODULE``, ``_FLOAT_BN_MODULE`` and, with ReLU,
    ``_FLOAT_RELU_MODULE`` and ``_FUSED_FLOAT_MODULE`` (what ``to_float`` returns).
    """

    _version = 2  # state_dict layout: weight, bias, bn.*, weight_fake_quant.* (torch.ao's version 2)
    _FLOAT_MODULE: ClassVar[type[nn.Module]]
    _FLOAT_CONV_MODULE: ClassVar[type[nn.modules.conv._ConvNd]]
    _FLOAT_BN_MODULE: ClassVar[type[nn.modules.batchnorm._BatchNorm]]
    _FLOAT_RELU_MODULE: ClassVar[Optional[type[nn.Module]]] = None
    _FUSED_FLOAT_MODULE: ClassVar[Optional[type[nn.Module]]] = None

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
        self.qconfig = require_qconfig(type(self), qconfig)
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = self._FLOAT_BN_MODULE(out_channels, eps, momentum, True, True)
        self.weight_fake_quant = build_weight_fake_quant(qconfig)
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_bn_parameters()
        # After reset_bn_parameters, which resets the same BN state.
        if self.training and not freeze_bn:
            self.update_bn_stats()
        else:
            self.freeze_bn_stats()

    def reset_running_stats(self) -> None:
        self.bn.reset_running_stats()

    def reset_bn_parameters(self) -> None:
        """Reset BN statistics, draw gamma ~ U(0, 1), zero beta, and re-draw the conv bias like nn.Conv."""
        self.bn.reset_running_stats()
        init.uniform_(self.bn.weight)
        init.zeros_(self.bn.bias)
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in)
            init.uniform_(self.bias, -bound, bound)

    def update_bn_stats(self) -> "_ConvBnNd":
        """Let BN use batch statistics and update its running ones (training behaviour)."""
        self.freeze_bn = False
        self.bn.training = True
        return self

    def freeze_bn_stats(self) -> "_ConvBnNd":
        """Stop updating BN running statistics and normalise with them, even in ``train()`` mode."""
        self.freeze_bn = True
        self.bn.training = False
        return self

    def _forward(self, input: torch.Tensor) -> torch.Tensor:
        running_var = self.bn.running_var
        if running_var is None:
            raise ConfigError(f"{public_name(type(self))}: bn.running_var is None; the BN must track running stats")
        running_std = torch.sqrt(running_var + self.bn.eps)
        scale_factor = self.bn.weight / running_std
        weight_shape = [1] * self.weight.dim()
        weight_shape[0] = -1
        bias_shape = [1] * self.weight.dim()
        bias_shape[1] = -1
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(weight_shape))
        # A zero bias here; the conv's own bias is added after un-scaling.
        if self.bias is not None:
            zero_bias = torch.zeros_like(self.bias, dtype=input.dtype)
        else:
            zero_bias = torch.zeros(self.out_channels, device=scaled_weight.device, dtype=input.dtype)
        conv = self._conv_forward(input, scaled_weight, zero_bias)  # type: ignore[attr-defined]
        conv_orig = conv / scale_factor.reshape(bias_shape)
        if self.bias is not None:
            conv_orig = conv_orig + self.bias.reshape(bias_shape)
        return self.bn(conv_orig)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self._forward(input)
        return F.relu(out) if self._FLOAT_RELU_MODULE is not None else out

    def train(self, mode: bool = True) -> "_ConvBnNd":
        """Set training mode, leaving a frozen BN in eval behaviour (so ``model.train()`` keeps it frozen)."""
        self.training = mode
        if not self.freeze_bn:
            for module in self.children():
                module.train(mode)
        return self

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
        qat.weight = conv.weight
        qat.bias = conv.bias
        qat.bn.weight = bn.weight
        qat.bn.bias = bn.bias
        qat.bn.running_mean = bn.running_mean
        qat.bn.running_var = bn.running_var
        qat.bn.num_batches_tracked = bn.num_batches_tracked
        qat.to(conv.weight.device)
        return qat

    def fold_bn(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float ``(weight, bias)`` with BN's running statistics folded in, detached (what convert quantizes)."""
        bn = self.bn
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError(
                f"{public_name(type(self))}.fold_bn: the BN has no running statistics to fold; "
                "build it with track_running_stats=True"
            )
        with torch.no_grad():
            weight, bias = fuse_conv_bn_weights(
                self.weight.detach(),
                None if self.bias is None else self.bias.detach(),
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight.detach(),
                bn.bias.detach(),
            )
        return weight.detach(), bias.detach()

    def to_float(self) -> nn.Module:
        """The BN-folded float conv (inside the fused float ConvReLU for the ReLU variants)."""
        weight, bias = self.fold_bn()
        conv = self._FLOAT_CONV_MODULE(
            self.in_channels,
            self.out_channels,
            self.kernel_size,  # type: ignore[arg-type]
            self.stride,  # type: ignore[arg-type]
            self.padding,  # type: ignore[arg-type]
            self.dilation,  # type: ignore[arg-type]
            self.groups,
            True,
            self.padding_mode,
        )
        conv.weight = nn.Parameter(weight)
        conv.bias = nn.Parameter(bias)
        result: nn.Module = conv
        if self._FLOAT_RELU_MODULE is not None:
            result = self._FUSED_FLOAT_MODULE(conv, self._FLOAT_RELU_MODULE())  # type: ignore[misc]
        result.train(self.training)
        return result


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


def _bn_qat_types() -> tuple[type, ...]:
    from qcore.nn.intrinsic.qat.linear_fused import LinearBn1d

    return (_ConvBnNd, LinearBn1d)


def update_bn_stats(mod: nn.Module) -> None:
    """Unfreeze BN statistics of a QAT ConvBn* / ConvBnReLU* / LinearBn1d (for ``model.apply``)."""
    if isinstance(mod, _bn_qat_types()):
        mod.update_bn_stats()  # type: ignore[operator]


def freeze_bn_stats(mod: nn.Module) -> None:
    """Freeze BN statistics of a QAT ConvBn* / ConvBnReLU* / LinearBn1d (for ``model.apply``)."""
    if isinstance(mod, _bn_qat_types()):
        mod.freeze_bn_stats()  # type: ignore[operator]
