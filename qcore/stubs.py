"""QuantStub, DeQuantStub, QuantWrapper: where a float model's tensors enter and leave the quantized region.

Before convert they are identities (QuantStub carries the input observer
prepare attaches); convert swaps them for ``qcore.nn.quantized.Quantize`` and
``DeQuantize``. Same names and behaviour as ``torch.ao.quantization.stubs``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

__all__ = ["QuantStub", "DeQuantStub", "QuantWrapper"]


class QuantStub(nn.Module):
    """Marks where float tensors become quantized: an observer point before convert, ``Quantize`` after.

    ``qconfig`` overrides the one propagated from parent modules.
    """

    def __init__(self, qconfig: Optional[Any] = None) -> None:
        super().__init__()
        if qconfig:
            self.qconfig = qconfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DeQuantStub(nn.Module):
    """Marks where quantized tensors become float again: identity before convert, ``DeQuantize`` after."""

    def __init__(self, qconfig: Optional[Any] = None) -> None:
        super().__init__()
        if qconfig:
            self.qconfig = qconfig

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class QuantWrapper(nn.Module):
    """Surrounds ``module`` with a QuantStub and a DeQuantStub so it takes and returns float tensors.

    The stubs take the wrapped module's ``qconfig``; the wrapper follows the
    module's training mode.
    """

    quant: QuantStub
    dequant: DeQuantStub
    module: nn.Module

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        qconfig = getattr(module, "qconfig", None)
        self.add_module("quant", QuantStub(qconfig))
        self.add_module("dequant", DeQuantStub(qconfig))
        self.add_module("module", module)
        self.train(module.training)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        X = self.quant(X)
        X = self.module(X)
        return self.dequant(X)
