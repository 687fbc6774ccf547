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
from torch.nn.utils.fusion import fuse_linear_bn_weights

from qcore.nn.intrinsic import modules as nni
from qcore.nn.intrinsic.qat._bn import BnFoldMixin
from qcore.nn.qat import linear as nnqat_linear
from qcore.nn.qat._common import float_module_qconfig

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


class LinearBn1d(BnFoldMixin, nn.Linear, nni.FusedModule):
    """Linear + BatchNorm1d for QAT, with the BN scale folded into the fake-quantized weight."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nni.LinearBn1d
    _FLOAT_BN_MODULE: ClassVar[type[nn.modules.batchnorm._BatchNorm]] = nn.BatchNorm1d
    _FUSE_BN_WEIGHTS = staticmethod(fuse_linear_bn_weights)

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
        self._init_bn(out_features, eps, momentum, freeze_bn, qconfig)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._folded_forward(input, F.linear)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "LinearBn1d":
        """The QAT module from the fused float LinearBn1d, sharing its Linear and BN Parameters and buffers."""
        qconfig = float_module_qconfig(cls, mod)
        linear, bn = mod[0], mod[1]  # type: ignore[index]
        qat = cls(linear.in_features, linear.out_features, linear.bias is not None, bn.eps, bn.momentum, False, qconfig)
        return qat._share_float_parameters(linear, bn)

    def to_float(self) -> nn.Linear:
        """The BN-folded float ``nn.Linear``."""
        weight, bias = self.fold_bn()
        linear = nn.Linear(self.in_features, self.out_features)
        linear.weight = nn.Parameter(weight)
        linear.bias = nn.Parameter(bias)
        linear.train(self.training)
        return linear
