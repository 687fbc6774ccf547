"""Quantization-aware and quantized modules, under torch.ao.nn's names (``qcore.nn.quantized.Linear``)."""

from qcore.nn import intrinsic, qat, quantizable, quantized

__all__ = ["intrinsic", "qat", "quantizable", "quantized"]
