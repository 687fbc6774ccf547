"""Quantization-aware-training fused modules (torch.ao.nn.intrinsic.qat)."""

from qcore._lazy import lazy_exports

_EXPORTS = {
    **{
        name: "conv_fused"
        for name in (
            "ConvBn1d", "ConvBn2d", "ConvBn3d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvBnReLU3d",
            "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "freeze_bn_stats", "update_bn_stats",
        )
    },
    "LinearReLU": "linear_fused", "LinearBn1d": "linear_fused",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
