"""TorchScript-compatible reference kernels for stored weights: 4-bit unpacking and exact dequantization.

Every function here computes bit for bit what :mod:`qcore.int4_packing` and
``qcore.affine.dequantize_affine`` (``QTensor.dequantize()``) compute, but in
code ``torch.jit.script`` accepts, so a quantized module that dequantizes its
weights on the fly stays scriptable. The tests check the equality.
"""

from __future__ import annotations

from typing import List

import torch
from torch import Tensor

__all__ = [
    "unpack_4bit",
    "dequantize_per_tensor",
    "dequantize_per_channel",
    "dequantize_groupwise",
    "dequantize_weight",
]


def unpack_4bit(packed: Tensor, length: int, signed: bool) -> Tensor:
    """``qcore.int4_packing.unpack_int4`` along the last dimension: uint8 nibbles (0..15) or int8 (-8..7)."""
    wide = packed.to(torch.int16)
    shape: List[int] = list(packed.shape[:-1])
    shape.append(2 * packed.shape[-1])
    nibbles = torch.stack((wide & 15, wide >> 4), dim=-1).reshape(shape).narrow(-1, 0, length)
    if signed:
        return (nibbles - ((nibbles & 8) << 1)).to(torch.int8)
    return nibbles.to(torch.uint8)


def dequantize_per_tensor(q: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """``(q - zero_point) * scale`` in float32, as ``QTensor.dequantize()`` rounds it per tensor (8-bit or 4-bit q)."""
    s32 = scale.reshape(()).to(torch.float32)
    return (q.to(torch.float32) - zero_point.reshape(()).to(torch.float32)) * s32


def dequantize_per_channel(q: Tensor, scale: Tensor, zero_point: Tensor, axis: int) -> Tensor:
    """Per channel along ``axis``: float32 subtraction, float64 product with the scale, rounded to float32.

    ``zero_point`` may be float (``per_channel_affine_float_qparams``).
    """
    shape: List[int] = [1] * q.dim()
    shape[axis] = -1
    diff = q.to(torch.float32) - zero_point.reshape(shape).to(torch.float32)
    return (diff.to(torch.float64) * scale.reshape(shape).to(torch.float64)).to(torch.float32)


def dequantize_groupwise(q: Tensor, scale: Tensor, zero_point: Tensor, group_size: int) -> Tensor:
    """Groups of ``group_size`` along the last dimension, one scale/zero point each (``scale``: ``[..., groups]``).

    Equals :func:`dequantize_per_channel` on ``q`` viewed as one row per group.
    """
    shape: List[int] = list(q.shape)
    grouped: List[int] = list(scale.shape)
    grouped.append(group_size)
    diff = q.reshape(grouped).to(torch.float32) - zero_point.unsqueeze(-1).to(torch.float32)
    return (diff.to(torch.float64) * scale.unsqueeze(-1).to(torch.float64)).to(torch.float32).reshape(shape)


def dequantize_weight(
    qweight: Tensor,
    scale: Tensor,
    zero_point: Tensor,
    axis: int,
    group_size: int,
    bits: int,
    signed: bool,
    length: int,
) -> Tensor:
    """A stored weight as float32: unpack 4-bit storage (last dimension ``length``), then dequantize.

    ``axis`` -1 means per tensor; ``group_size`` > 0 means groupwise along the
    last dimension (``axis`` is then ignored).
    """
    q = unpack_4bit(qweight, length, signed) if bits == 4 else qweight
    if group_size > 0:
        return dequantize_groupwise(q, scale, zero_point, group_size)
    if axis < 0:
        return dequantize_per_tensor(q, scale, zero_point)
    return dequantize_per_channel(q, scale, zero_point, axis)
