"""Kernel-backed static quantized modules: what convert gives on the fbgemm backend.

:data:`STATIC_LOWERINGS` maps each reference module class to the factory
lowering it (``KernelClass.from_reference``, which returns None when the
module's configuration has no kernel, e.g. uint8 weights), and the float
modules convert keeps in a quantized region (max pooling, flatten, ReLU) to
their direct forms (:mod:`qcore_fbgemm.static.passthrough`).
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from qcore.nn.intrinsic.quantized import bn_relu as _ref_bn_relu
from qcore.nn.intrinsic.quantized import conv_add as _ref_conv_add
from qcore.nn.intrinsic.quantized import conv_relu as _ref_conv_relu
from qcore.nn.intrinsic.quantized import linear_relu as _ref_linear_relu
from qcore.nn.quantized import activation as _ref_activation
from qcore.nn.quantized import batchnorm as _ref_bn
from qcore.nn.quantized import conv as _ref_conv
from qcore.nn.quantized import functional_modules as _ref_functional
from qcore.nn.quantized import linear as _ref_linear
from qcore.nn.quantized import normalization as _ref_norm
from qcore.nn.quantized import quant_dequant as _ref_qdq

from qcore_fbgemm.static import activation, conv, conv_add, functional, linear, normalization, quant_dequant
from qcore_fbgemm.static.passthrough import PASSTHROUGH_LOWERINGS
from qcore_fbgemm.static.activation import ELU, Hardsigmoid, Hardswish, LeakyReLU, ReLU6, Sigmoid, Softmax, Tanh
from qcore_fbgemm.static.conv import (
    Conv1d, Conv2d, Conv3d, ConvReLU1d, ConvReLU2d, ConvReLU3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d,
)
from qcore_fbgemm.static.conv_add import ConvAdd1d, ConvAdd2d, ConvAddReLU1d, ConvAddReLU2d
from qcore_fbgemm.static.functional import QFunctional
from qcore_fbgemm.static.kernel import KernelModule, UnseenInputWarning
from qcore_fbgemm.static.linear import Linear, LinearReLU
from qcore_fbgemm.static.normalization import (
    BatchNorm2d, BatchNorm3d, BNReLU2d, BNReLU3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d, LayerNorm,
)
from qcore_fbgemm.static.quant_dequant import DeQuantize, Quantize

__all__ = [
    "STATIC_LOWERINGS", "KernelModule", "UnseenInputWarning",
    "Quantize", "DeQuantize", "Linear", "LinearReLU",
    "Conv1d", "Conv2d", "Conv3d", "ConvReLU1d", "ConvReLU2d", "ConvReLU3d",
    "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "ConvAdd1d", "ConvAddReLU1d", "ConvAdd2d", "ConvAddReLU2d",
    "ReLU6", "Hardswish", "ELU", "LeakyReLU", "Sigmoid", "Softmax", "Tanh", "Hardsigmoid",
    "BatchNorm2d", "BatchNorm3d", "BNReLU2d", "BNReLU3d", "LayerNorm", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "QFunctional",
]

_PAIRS: list[tuple[type, type]] = [
    (_ref_qdq.Quantize, quant_dequant.Quantize),
    (_ref_qdq.DeQuantize, quant_dequant.DeQuantize),
    (_ref_linear.Linear, linear.Linear),
    (_ref_linear_relu.LinearReLU, linear.LinearReLU),
    (_ref_conv.Conv1d, conv.Conv1d),
    (_ref_conv.Conv2d, conv.Conv2d),
    (_ref_conv.Conv3d, conv.Conv3d),
    (_ref_conv_relu.ConvReLU1d, conv.ConvReLU1d),
    (_ref_conv_relu.ConvReLU2d, conv.ConvReLU2d),
    (_ref_conv_relu.ConvReLU3d, conv.ConvReLU3d),
    (_ref_conv.ConvTranspose1d, conv.ConvTranspose1d),
    (_ref_conv.ConvTranspose2d, conv.ConvTranspose2d),
    (_ref_conv.ConvTranspose3d, conv.ConvTranspose3d),
    (_ref_conv_add.ConvAdd1d, conv_add.ConvAdd1d),
    (_ref_conv_add.ConvAddReLU1d, conv_add.ConvAddReLU1d),
    (_ref_conv_add.ConvAdd2d, conv_add.ConvAdd2d),
    (_ref_conv_add.ConvAddReLU2d, conv_add.ConvAddReLU2d),
    (_ref_activation.ReLU6, activation.ReLU6),
    (_ref_activation.Hardswish, activation.Hardswish),
    (_ref_activation.ELU, activation.ELU),
    (_ref_activation.LeakyReLU, activation.LeakyReLU),
    (_ref_activation.Sigmoid, activation.Sigmoid),
    (_ref_activation.Softmax, activation.Softmax),
    (_ref_activation.Tanh, activation.Tanh),
    (_ref_activation.Hardsigmoid, activation.Hardsigmoid),
    (_ref_bn.BatchNorm2d, normalization.BatchNorm2d),
    (_ref_bn.BatchNorm3d, normalization.BatchNorm3d),
    (_ref_bn_relu.BNReLU2d, normalization.BNReLU2d),
    (_ref_bn_relu.BNReLU3d, normalization.BNReLU3d),
    (_ref_norm.LayerNorm, normalization.LayerNorm),
    (_ref_norm.GroupNorm, normalization.GroupNorm),
    (_ref_norm.InstanceNorm1d, normalization.InstanceNorm1d),
    (_ref_norm.InstanceNorm2d, normalization.InstanceNorm2d),
    (_ref_norm.InstanceNorm3d, normalization.InstanceNorm3d),
    (_ref_functional.QFunctional, functional.QFunctional),
]

#: reference module class -> factory returning its kernel-backed module (or None when no kernel fits).
STATIC_LOWERINGS: dict[type, Callable[[nn.Module], Optional[nn.Module]]] = {
    reference: kernel.from_reference for reference, kernel in _PAIRS
}
# float modules convert keeps (they compute exactly on QTensors), lowered to skip the QTensor dispatch
STATIC_LOWERINGS.update(PASSTHROUGH_LOWERINGS)
