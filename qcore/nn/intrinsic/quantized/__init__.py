"""Quantized fused modules (torch.ao.nn.intrinsic.quantized)."""

from qcore._lazy import lazy_exports

_EXPORTS = {
    "LinearReLU": "linear_relu",
    "ConvReLU1d": "conv_relu", "ConvReLU2d": "conv_relu", "ConvReLU3d": "conv_relu",
    "BNReLU2d": "bn_relu", "BNReLU3d": "bn_relu",
    "ConvAdd1d": "conv_add", "ConvAddReLU1d": "conv_add", "ConvAdd2d": "conv_add", "ConvAddReLU2d": "conv_add",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
