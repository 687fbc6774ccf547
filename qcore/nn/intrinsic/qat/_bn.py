"""What ConvBn* and LinearBn1d share: the BN beside the weight, its freezing, and folding it into the weight."""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional, TypeVar

import torch
from torch import nn
from torch.nn import init

from qcore.errors import ConfigError
from qcore.nn.qat._common import build_weight_fake_quant, public_name, require_qconfig

_M = TypeVar("_M", bound="BnFoldMixin")


class BnFoldMixin:
    """Mixed in before the float conv/linear: ``bn``, ``freeze_bn``, ``weight_fake_quant`` and BN folding.

    Subclasses name ``_FLOAT_BN_MODULE`` and ``_FUSE_BN_WEIGHTS`` (torch's
    ``fuse_conv_bn_weights`` or ``fuse_linear_bn_weights``, as a staticmethod).
    """

    _FLOAT_BN_MODULE: ClassVar[type[nn.modules.batchnorm._BatchNorm]]
    _FUSE_BN_WEIGHTS: ClassVar[Callable[..., tuple[torch.Tensor, torch.Tensor]]]

    training: bool
    weight: nn.Parameter
    bias: Optional[nn.Parameter]
    bn: nn.modules.batchnorm._BatchNorm
    weight_fake_quant: nn.Module

    def _init_bn(self, num_features: int, eps: float, momentum: Optional[float], freeze_bn: bool, qconfig: Any) -> None:
        """Add the qconfig, the BN (affine, tracking running stats) and the weight fake-quant; reset and (un)freeze BN."""
        self.qconfig = require_qconfig(type(self), qconfig)
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = self._FLOAT_BN_MODULE(num_features, eps, momentum, True, True)
        self.weight_fake_quant = build_weight_fake_quant(qconfig)
        self.reset_bn_parameters()
        # After reset_bn_parameters, which resets the same BN state.
        if self.training and not freeze_bn:
            self.update_bn_stats()
        else:
            self.freeze_bn_stats()

    def reset_running_stats(self) -> None:
        self.bn.reset_running_stats()

    def reset_bn_parameters(self) -> None:
        """Reset BN statistics, draw gamma ~ U(0, 1) and zero beta."""
        self.bn.reset_running_stats()
        init.uniform_(self.bn.weight)
        init.zeros_(self.bn.bias)

    def update_bn_stats(self: _M) -> _M:
        """Let BN use batch statistics and update its running ones (training behaviour)."""
        self.freeze_bn = False
        self.bn.training = True
        return self

    def freeze_bn_stats(self: _M) -> _M:
        """Stop updating BN running statistics and normalise with them, even in ``train()`` mode."""
        self.freeze_bn = True
        self.bn.training = False
        return self

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode, leaving a frozen BN in eval behaviour (so ``model.train()`` keeps it frozen)."""
        self.training = mode
        if not self.freeze_bn:
            for module in self.children():  # type: ignore[attr-defined]
                module.train(mode)
        return self

    def _bn_scale_factor(self) -> torch.Tensor:
        """``bn.weight / sqrt(bn.running_var + bn.eps)``: what the weight is scaled by before fake quantization."""
        running_var = self.bn.running_var
        if running_var is None:
            raise ConfigError(f"{public_name(type(self))}: bn.running_var is None; the BN must track running stats")
        return self.bn.weight / torch.sqrt(running_var + self.bn.eps)

    def _folded_forward(self, input: torch.Tensor, op: Callable[..., torch.Tensor]) -> torch.Tensor:
        """``bn(op(input, weight_fake_quant(weight * s), 0) / s + bias)`` with ``s`` the BN scale per output channel."""
        scale_factor = self._bn_scale_factor()
        weight_shape = [1] * self.weight.dim()
        weight_shape[0] = -1
        bias_shape = [1] * self.weight.dim()
        bias_shape[1] = -1
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(weight_shape))
        # A zero bias here; the module's own bias is added after un-scaling.
        if self.bias is not None:
            zero_bias = torch.zeros_like(self.bias, dtype=input.dtype)
        else:
            zero_bias = torch.zeros(self.weight.shape[0], device=scaled_weight.device, dtype=input.dtype)
        out = op(input, scaled_weight, zero_bias) / scale_factor.reshape(bias_shape)
        if self.bias is not None:
            out = out + self.bias.reshape(bias_shape)
        return self.bn(out)

    def _share_float_parameters(self: _M, weighted: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> _M:
        """Take the float conv/linear's weight and bias and the float BN's Parameters and buffers (by reference)."""
        self.weight = weighted.weight  # type: ignore[assignment]
        self.bias = weighted.bias  # type: ignore[assignment]
        self.bn.weight = bn.weight
        self.bn.bias = bn.bias
        self.bn.running_mean = bn.running_mean
        self.bn.running_var = bn.running_var
        self.bn.num_batches_tracked = bn.num_batches_tracked
        self.to(weighted.weight.device)  # type: ignore[attr-defined]
        return self

    def fold_bn(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The float ``(weight, bias)`` with BN's running statistics folded in, detached (what convert quantizes)."""
        bn = self.bn
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError(
                f"{public_name(type(self))}.fold_bn: the BN has no running statistics to fold; "
                "build it with track_running_stats=True"
            )
        with torch.no_grad():
            weight, bias = self._FUSE_BN_WEIGHTS(
                self.weight.detach(),
                None if self.bias is None else self.bias.detach(),
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight.detach(),
                bn.bias.detach(),
            )
        return weight.detach(), bias.detach()


def update_bn_stats(mod: nn.Module) -> None:
    """Unfreeze BN statistics of a QAT ConvBn* / ConvBnReLU* / LinearBn1d (for ``model.apply``)."""
    if isinstance(mod, BnFoldMixin):
        mod.update_bn_stats()


def freeze_bn_stats(mod: nn.Module) -> None:
    """Freeze BN statistics of a QAT ConvBn* / ConvBnReLU* / LinearBn1d (for ``model.apply``)."""
    if isinstance(mod, BnFoldMixin):
        mod.freeze_bn_stats()
