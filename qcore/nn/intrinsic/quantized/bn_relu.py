"""Quantized fused BatchNorm + ReLU (torch.ao.nn.intrinsic.quantized.BNReLU2d / BNReLU3d)."""

from __future__ import annotations

from qcore.nn.intrinsic.modules import BNReLU2d as _FloatBNReLU2d
from qcore.nn.intrinsic.modules import BNReLU3d as _FloatBNReLU3d
from qcore.nn.quantized.batchnorm import BatchNorm2d, BatchNorm3d

__all__ = ["BNReLU2d", "BNReLU3d"]


class BNReLU2d(BatchNorm2d):
    """``quantize(relu(batch_norm(x)))``, from the fused float ``qcore.nn.intrinsic.BNReLU2d``; input (N, C, H, W)."""

    _FLOAT_MODULE = _FloatBNReLU2d
    _WITH_RELU = True


class BNReLU3d(BatchNorm3d):
    """``quantize(relu(batch_norm(x)))``, from the fused float ``qcore.nn.intrinsic.BNReLU3d``; input (N, C, D, H, W)."""

    _FLOAT_MODULE = _FloatBNReLU3d
    _WITH_RELU = True


#: {fused float module: quantized module} for the static mapping table.
STATIC_MAPPINGS: dict[type, type] = {_FloatBNReLU2d: BNReLU2d, _FloatBNReLU3d: BNReLU3d}
