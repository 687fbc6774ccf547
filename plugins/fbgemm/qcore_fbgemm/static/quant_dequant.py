"""Quantize and DeQuantize on torch's kernels: the entry and exit of a kernel-backed region.

``Quantize`` produces the torch quantized tensor the next kernel consumes (its
integers are bit-identical to qcore's quantize); ``DeQuantize`` reads it back.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from qcore.nn.quantized.quant_dequant import DeQuantize as _RefDeQuantize
from qcore.nn.quantized.quant_dequant import Quantize as _RefQuantize

from qcore_fbgemm.static.kernel import ENGINE, KernelModule, reference_copy
from qcore_fbgemm.static.ops import QuantizeOp
from qcore_fbgemm.torch_quantized import KernelQTensor, from_torch

__all__ = ["Quantize", "DeQuantize"]

_FLOAT32 = torch.float32


def _has_nan(x: Tensor) -> bool:
    """Whether ``x`` holds a NaN (max propagates NaN: one reduction, cheaper than isnan().any())."""
    if x.requires_grad:
        x = x.detach()
    return x.numel() > 0 and math.isnan(x.max())


class Quantize(KernelModule, _RefQuantize):
    """qcore's Quantize through ``torch.quantize_per_tensor``: the same integers, ready for the next kernel."""

    def _make_op(self) -> nn.Module:
        return QuantizeOp(float(self.scale), int(self.zero_point))

    def forward(self, x: Any) -> Any:
        d = self.__dict__
        if d.get("_kernel_stale", True):
            self._refresh()
        run = d["_kernel_run"]
        if type(x) is not Tensor or x.dtype is not _FLOAT32 or run is None or x.device.type != "cpu":
            return _RefQuantize.forward(self, x)  # other inputs, and the reference's errors (QTensor, ...)
        if _has_nan(x):
            return _RefQuantize.forward(self, x)  # the reference's NaN error
        return from_torch(run(x), d["_kernel_out_qp"])

    # Quantizing is exact, so the reference twin already matches the eager module.
    __prepare_scriptable__ = _RefQuantize.__prepare_scriptable__


class DeQuantize(_RefDeQuantize):
    """qcore's DeQuantize reading the torch quantized tensor a kernel left, when there is one."""

    @classmethod
    def from_reference(cls, ref: nn.Module) -> "DeQuantize":
        new = copy.deepcopy(ref)  # keeps the hooks convert moved onto it
        new.__class__ = cls
        return new

    def to_reference(self) -> nn.Module:
        """The reference DeQuantize (what qcore.save stores)."""
        return reference_copy(self)

    def forward(self, x: Any) -> Any:
        if type(x) is KernelQTensor and x._torch_qparams is x._qparams:
            return x._torch.dequantize()
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"engine={ENGINE}"
