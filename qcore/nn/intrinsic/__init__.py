"""Fused float modules (torch.ao.nn.intrinsic): what fusion produces before quantization."""

from qcore._lazy import lazy_exports

_EXPORTS = {
    name: "modules"
    for name in (
        "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "ConvBn1d", "ConvBn2d", "ConvBn3d",
        "ConvBnReLU1d", "ConvBnReLU2d", "ConvBnReLU3d", "LinearReLU", "LinearBn1d",
        "BNReLU2d", "BNReLU3d", "ConvAdd1d", "ConvAdd2d", "ConvAddReLU1d", "ConvAddReLU2d",
        "LinearLeakyReLU", "LinearTanh",
        "ConvTransposeBn1d", "ConvTransposeBn2d", "ConvTransposeBn3d", "FusedModule",
    )
}
__all__ = sorted(_EXPORTS) + ["qat", "quantized"]
_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in ("qat", "quantized"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    return _getattr(name)
