"""Linear and LinearReLU on fbgemm's packed int8 GEMM (``quantized::linear`` / ``linear_relu``)."""

from __future__ import annotations

from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import QScheme
from qcore.nn.intrinsic.quantized.linear_relu import LinearReLU as _RefLinearReLU
from qcore.nn.quantized.linear import Linear as _RefLinear

from qcore_fbgemm.static.kernel import KernelModule
from qcore_fbgemm.static.ops import LINEAR, LINEAR_RELU, QLinearOp
from qcore_fbgemm.static.packing import pack_linear

__all__ = ["Linear", "LinearReLU"]


def _weight_fits(ref: nn.Module, per_channel_axis: int) -> bool:
    """int8 weights, per tensor or per channel along ``per_channel_axis``, with integer zero points."""
    return (
        ref.weight_dtype is dtypes.int8
        and ref.weight_qscheme is not QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS
        and int(ref.weight_axis) in (-1, per_channel_axis)
    )


class Linear(KernelModule, _RefLinear):
    """qcore's quantized Linear on fbgemm: same state_dict, weight()/bias(), and results within one step."""

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        return super().supports(ref) and _weight_fits(ref, 0)

    def _make_op(self) -> nn.Module:
        kind = LINEAR_RELU if self._WITH_RELU else LINEAR
        return QLinearOp(pack_linear(self.weight(), self._bias), kind, float(self.scale), int(self.zero_point))

    def _accepts(self, tq: Tensor) -> bool:
        return tq.dim() >= 2


class LinearReLU(Linear, _RefLinearReLU):
    """qcore's quantized LinearReLU on fbgemm's fused ``quantized::linear_relu``."""
