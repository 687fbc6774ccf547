"""Quantized Linear followed by ReLU (torch.ao.nn.intrinsic.quantized.LinearReLU), one output quantization."""

from __future__ import annotations

from qcore.nn.quantized.linear import Linear

__all__ = ["LinearReLU"]


class LinearReLU(Linear):
    """``quantize(relu(x.dequantize() @ weight.dequantize().T + bias))``.

    Converted from a fused float LinearReLU (``mod[0]`` is the linear layer) or
    the QAT LinearReLU.
    """

    _WITH_RELU = True
