"""Convolutions on torch's int8 kernels: Conv1d/2d/3d (+ReLU) on fbgemm or onednn, ConvTranspose1d/2d/3d on fbgemm.

Regular convolutions with symmetric weights are packed for both engines and
each call picks by size (:data:`~qcore_fbgemm.static.packing.ONEDNN_MIN_MACS`);
onednn's packing is repeated per input shape (:func:`qcore_fbgemm.static.ops._conv_eager`).
Transposed convolutions take per-tensor weights only (torch's kernels have
no per-channel transposed convolution); per-channel ones stay on the
reference module. Padding modes other than zeros stay on the reference too.
"""

from __future__ import annotations

import functools
import math
from typing import Optional

from torch import Tensor, nn

from qcore.nn.intrinsic.quantized import conv_relu as _ref_relu
from qcore.nn.quantized import conv as _ref

from qcore_fbgemm.static import ops
from qcore_fbgemm.static.kernel import KernelModule
from qcore_fbgemm.static.linear import _weight_fits
from qcore_fbgemm.static.packing import FBGEMM, ONEDNN_MIN_MACS, ONEDNN_MIN_PIXELS, onednn_can_pack, pack_conv

__all__ = [
    "Conv1d", "Conv2d", "Conv3d", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
]


def _explicit_padding(ref: nn.Module) -> Optional[tuple[int, ...]]:
    """The per-dimension padding as integers ('same'/'valid' resolved), or None when it is asymmetric."""
    if not isinstance(ref.padding, str):
        return tuple(int(p) for p in ref.padding)
    pads = ref._reversed_padding_repeated_twice
    left, right = pads[0::2], pads[1::2]
    if list(left) != list(right):
        return None
    return tuple(int(p) for p in reversed(left))


class _ConvKernel(KernelModule):
    """Shared by the kernel convolutions; the reference class after it sets the kind (``_NDIM``, ...)."""

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        if not super().supports(ref) or ref.padding_mode != "zeros" or _explicit_padding(ref) is None:
            return False
        if ref._TRANSPOSED:
            return _weight_fits(ref, -1)
        return _weight_fits(ref, 0)

    def _kind(self) -> int:
        if self._NDIM == 3:
            return ops.CONV_TRANSPOSE3D if self._TRANSPOSED else (ops.CONV3D_RELU if self._WITH_RELU else ops.CONV3D)
        if self._TRANSPOSED:
            return ops.CONV_TRANSPOSE1D if self._NDIM == 1 else ops.CONV_TRANSPOSE2D
        if self._NDIM == 1:
            return ops.CONV1D_RELU if self._WITH_RELU else ops.CONV1D
        return ops.CONV2D_RELU if self._WITH_RELU else ops.CONV2D

    def _make_op(self) -> nn.Module:
        weight = self.weight()
        args = (weight, self._bias, self.stride, _explicit_padding(self), self.dilation, self.groups, self._TRANSPOSED,
                self.output_padding)
        packed = pack_conv(*args, engine_name=FBGEMM)
        if onednn_can_pack(weight, self.groups, self._TRANSPOSED):
            packed_onednn = pack_conv(*args, engine_name="onednn")
            min_macs, min_pixels = ONEDNN_MIN_MACS, ONEDNN_MIN_PIXELS
            repack = functools.partial(pack_conv, *args, engine_name="onednn")
        else:
            packed_onednn, min_macs, min_pixels, repack = packed, math.inf, math.inf, None
        # per input element (N * Cin * spatial): output pixels 1 / (Cin * prod(stride)), and each pixel
        # takes Cout * Cin / groups * prod(kernel) multiply-accumulates
        pixels_per_input = 1.0 / (self.in_channels * math.prod(self.stride))
        macs_per_input = self.out_channels * math.prod(self.kernel_size) / (self.groups * math.prod(self.stride))
        op_cls = ops.QConv3dOp if self._NDIM == 3 else ops.QConvOp
        return op_cls(packed, packed_onednn, self._kind(), float(self.scale), int(self.zero_point), macs_per_input,
                      pixels_per_input, min_macs, min_pixels, repack)

    def _accepts(self, tq: Tensor) -> bool:
        return tq.dim() == self._NDIM + 2

    def extra_repr(self) -> str:
        text = super().extra_repr()
        op = self.__dict__.get("_kernel_op")
        if op is not None and op.onednn_min_macs != math.inf:
            text += f" (onednn from {op.onednn_min_macs:.3g} MACs or {op.onednn_min_pixels:.0f} output pixels)"
        return text


class Conv1d(_ConvKernel, _ref.Conv1d):
    """qcore's quantized Conv1d on torch's int8 kernels."""


class Conv2d(_ConvKernel, _ref.Conv2d):
    """qcore's quantized Conv2d on torch's int8 kernels."""


class Conv3d(_ConvKernel, _ref.Conv3d):
    """qcore's quantized Conv3d on torch's int8 kernels."""


class ConvReLU1d(_ConvKernel, _ref_relu.ConvReLU1d):
    """qcore's quantized ConvReLU1d on the fused ``quantized::conv1d_relu``."""


class ConvReLU2d(_ConvKernel, _ref_relu.ConvReLU2d):
    """qcore's quantized ConvReLU2d on the fused ``quantized::conv2d_relu``."""


class ConvReLU3d(_ConvKernel, _ref_relu.ConvReLU3d):
    """qcore's quantized ConvReLU3d on the fused ``quantized::conv3d_relu``."""


class ConvTranspose1d(_ConvKernel, _ref.ConvTranspose1d):
    """qcore's quantized ConvTranspose1d on fbgemm (per-tensor weights)."""


class ConvTranspose2d(_ConvKernel, _ref.ConvTranspose2d):
    """qcore's quantized ConvTranspose2d on fbgemm (per-tensor weights)."""


class ConvTranspose3d(_ConvKernel, _ref.ConvTranspose3d):
    """qcore's quantized ConvTranspose3d on fbgemm (per-tensor weights)."""
