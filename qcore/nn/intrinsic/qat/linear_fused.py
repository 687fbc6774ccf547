"""QAT fused linear modules (torch.ao.nn.intrinsic.qat): LinearReLU and LinearBn1d.

LinearBn1d trains like ConvBn2d (see conv_fused.py): the BN scale
``bn.weight / sqrt(bn.running_var + bn.eps)`` is folded into the weight before
fake quantization and divided out of the output, then the bias is added and
BN runs with batch statistics (or running ones once frozen). ``fold_bn()``
returns the float ``(weight, bias)`` with BN folded in, as
``torch.nn.utils.fusion.fuse_linear_bn_weights`` computes it (torch.ao's
convert); ``to_float()`` returns the ``nn.Linear`` holding them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init
from torch.nn.utils.fusion import fuse_linear_bn_weights

from qcore.errors import ConfigError
from qcore.nn.intrinsic import modules as nni
from qcore.nn.qat import linear as nnqat_linear
from qcore.nn.qat._common import build_weight_fake_quant, float_module_qconfig, public_name, require_qconfig

__all__ = ["LinearBn1d", "LinearReLU"]


class LinearReLU(nnqat_linear.Linear, nni.FusedModule):
    """``relu(linear(x, weight_fake_quant(weight), bias))`` (from the fused float ``qcore.nn.intrinsic.LinearReLU``)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.LinearReLU

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(F.linear(input, self.weight_fake_quant(self.weight), self.bias))

    def to_float(self) -> nn.Module:
        """The fused float LinearReLU with this module's current weight and bias."""
        fused = nni.LinearReLU(super().to_float(), nn.ReLU())  # type: ignore[arg-type]
        fused.train(self.training)
        return fused


class LinearBn1d(nn.Linear, nni.FusedModule):
    """Linear + BatchNorm1d for QAT, with the BN scale folded into the fake-quantized weight."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.LinearBn1d

    bias: Optional[nn.Parameter]

    def __init__(
        self,
        # Linear arguments
        in_features: int,
        out_features: int,
        bias: bool = True,
        # BatchNorm1d arguments (num_features = out_features, affine and track_running_stats always on)
        eps: float = 1e-05,
        momentum: Optional[float] = 0.1,
        # this module's own
        freeze_bn: bool = False,
        qconfig: Any = None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias)
        self.qconfig = require_qconfig(type(self), qconfig)
        self.freeze_bn = freeze_bn if self.training else True
        self.bn = nn.BatchNorm1d(out_features, eps, momentum, True, True)
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

    def update_bn_stats(self) -> "LinearBn1d":
        """Let BN use batch statistics and update its running ones (training behaviour)."""
        self.freeze_bn = False
        self.bn.training = True
        return self

    def freeze_bn_stats(self) -> "LinearBn1d":
        """Stop updating BN running statistics and normalise with them, even in ``train()`` mode."""
        self.freeze_bn = True
        self.bn.training = False
        return self

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        running_var = self.bn.running_var
        if running_var is None:
            raise ConfigError(f"{public_name(type(self))}: bn.running_var is None; the BN must track running stats")
        running_std = torch.sqrt(running_var + self.bn.eps)
        scale_factor = self.bn.weight / running_std
        scaled_weight = self.weight_fake_quant(self.weight * scale_factor.reshape(-1, 1))
        if self.bias is not None:
            zero_bias = torch.zeros_like(self.bias)
        else:
            zero_bias = torch.zeros(self.out_features, device=scaled_weight.device)
        out = F.linear(input, scaled_weight, zero_bias) / scale_factor.reshape(1, -1)
        if self.bias is not None:
            out = out + self.bias.reshape(1, -1)
        return self.bn(out)

    def train(self, mode: bool = True) -> "LinearBn1d":
        """Set training mode, leaving a frozen BN in eval behaviour (so ``model.train()`` keeps it frozen)."""
        self.training = mode
        if not self.freeze_bn:
            for module in self.children():
                module.train(mode)
        return self

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "LinearBn1d":
        """The QAT module from the fused float LinearBn1d, sharing its Linear and BN Parameters and buffers."""
        qconfig = float_module_qconfig(cls, mod)
        linear, bn = mod[0], mod[1]  # type: ignore[index]
        qat = cls(linear.in_features, linear.out_features, linear.bias is not None, bn.eps, bn.momentum, False, qconfig)
        qat.weight = linear.weight
        qat.bias = linear.bias
        qat.bn.weight = bn.weight
        qat.bn.bias = bn.bias
        qat.bn.running_mean = bn.running_mean
        qat.bn.running_var = bn.running_var
        qat.bn.num_batches_tracked = bn.num_batches_tracked
        qat.to(linear.weight.device)
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
            weight, bias = fuse_linear_bn_weights(
                self.weight.detach(),
                None if self.bias is None else self.bias.detach(),
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight.detach(),
                bn.bias.detach(),
            )
        return weight.detach(), bias.detach()

    def to_float(self) -> nn.Linear:
        """The BN-folded float ``nn.Linear``."""
        weight, bias = self.fold_bn()
        linear = nn.Linear(self.in_features, self.out_features)
        linear.weight = nn.Parameter(weight)
        linear.bias = nn.Parameter(bias)
        linear.train(self.training)
        return linear
