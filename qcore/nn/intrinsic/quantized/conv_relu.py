"""Quantized convolution followed by ReLU (torch.ao.nn.intrinsic.quantized.ConvReLU1d/2d/3d)."""

from __future__ import annotations

from qcore.nn.quantized.conv import Conv1d, Conv2d, Conv3d

__all__ = ["ConvReLU1d", "ConvReLU2d", "ConvReLU3d"]


class ConvReLU1d(Conv1d):
    """``quantize(relu(conv1d(x.dequantize(), weight.dequantize(), bias)))``.

    Converted from a fused float ConvReLU1d (``mod[0]`` is the conv) or the QAT
    ConvReLU1d / ConvBnReLU1d (BN folded first).
    """

    _WITH_RELU = True


class ConvReLU2d(Conv2d):
    """``quantize(relu(conv2d(...)))``; from a fused ConvReLU2d or QAT ConvReLU2d / ConvBnReLU2d."""

    _WITH_RELU = True


class ConvReLU3d(Conv3d):
    """``quantize(relu(conv3d(...)))``; from a fused ConvReLU3d or QAT ConvReLU3d / ConvBnReLU3d."""

    _WITH_RELU = True
