"""Norms on torch's quantized kernels: BatchNorm2d/3d (+ReLU), LayerNorm, GroupNorm, InstanceNorm1d/2d/3d.

The op modules hold copies of the float statistics and affine parameters,
taken when the module is (re)packed, so a TorchScript twin keeps the values
it was scripted with.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from qcore.nn.intrinsic.quantized import bn_relu as _ref_bn_relu
from qcore.nn.quantized import batchnorm as _ref_bn
from qcore.nn.quantized import normalization as _ref

from qcore_fbgemm.static import ops
from qcore_fbgemm.static.kernel import KernelModule

__all__ = [
    "BatchNorm2d", "BatchNorm3d", "BNReLU2d", "BNReLU3d",
    "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
]


def _copy(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().clone()


class _BatchNormKernel(KernelModule):
    def _make_op(self) -> nn.Module:
        kind = {(4, False): ops.BATCH_NORM2D, (4, True): ops.BATCH_NORM2D_RELU,
                (5, False): ops.BATCH_NORM3D, (5, True): ops.BATCH_NORM3D_RELU}[(self._INPUT_DIM, self._WITH_RELU)]
        return ops.QNormOp(kind, float(self.scale), int(self.zero_point), self.eps, _copy(self.weight),
                           _copy(self.bias), _copy(self.running_mean), _copy(self.running_var))

    def _accepts(self, tq: Tensor) -> bool:
        return tq.dim() == self._INPUT_DIM and tq.shape[1] == self.num_features


class BatchNorm2d(_BatchNormKernel, _ref_bn.BatchNorm2d):
    """qcore's quantized BatchNorm2d on ``quantized::batch_norm2d``."""


class BatchNorm3d(_BatchNormKernel, _ref_bn.BatchNorm3d):
    """qcore's quantized BatchNorm3d on ``quantized::batch_norm3d``."""


class BNReLU2d(_BatchNormKernel, _ref_bn_relu.BNReLU2d):
    """qcore's quantized BNReLU2d on ``quantized::batch_norm2d_relu``."""


class BNReLU3d(_BatchNormKernel, _ref_bn_relu.BNReLU3d):
    """qcore's quantized BNReLU3d on ``quantized::batch_norm3d_relu``."""


class LayerNorm(KernelModule, _ref.LayerNorm):
    """qcore's quantized LayerNorm on ``quantized::layer_norm``."""

    def _make_op(self) -> nn.Module:
        return ops.QNormOp(ops.LAYER_NORM, float(self.scale), int(self.zero_point), self.eps, _copy(self.weight),
                           _copy(self.bias), shape=list(self.normalized_shape))

    def _accepts(self, tq: Tensor) -> bool:
        n = len(self.normalized_shape)
        return tq.dim() >= n and tuple(tq.shape[tq.dim() - n:]) == self.normalized_shape


class GroupNorm(KernelModule, _ref.GroupNorm):
    """qcore's quantized GroupNorm on ``quantized::group_norm`` (inputs of 3 to 5 dimensions)."""

    def _make_op(self) -> nn.Module:
        return ops.QNormOp(ops.GROUP_NORM, float(self.scale), int(self.zero_point), self.eps, _copy(self.weight),
                           _copy(self.bias), groups=self.num_groups)

    def _accepts(self, tq: Tensor) -> bool:
        return 3 <= tq.dim() <= 5 and tq.shape[1] == self.num_channels


class _InstanceNormKernel(KernelModule):
    def _make_op(self) -> nn.Module:
        return ops.QNormOp(ops.INSTANCE_NORM, float(self.scale), int(self.zero_point), self.eps, _copy(self.weight),
                           _copy(self.bias))

    def _accepts(self, tq: Tensor) -> bool:
        return tq.dim() == self._BATCHED_DIM and tq.shape[1] == self.num_features


class InstanceNorm1d(_InstanceNormKernel, _ref.InstanceNorm1d):
    """qcore's quantized InstanceNorm1d on ``quantized::instance_norm`` (batched inputs)."""


class InstanceNorm2d(_InstanceNormKernel, _ref.InstanceNorm2d):
    """qcore's quantized InstanceNorm2d on ``quantized::instance_norm`` (batched inputs)."""


class InstanceNorm3d(_InstanceNormKernel, _ref.InstanceNorm3d):
    """qcore's quantized InstanceNorm3d on ``quantized::instance_norm`` (batched inputs)."""
