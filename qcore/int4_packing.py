"""Two 4-bit values per byte: pack and unpack along the last dimension.

Layout (torch's ``quint4x2`` layout, also ONNX's): element ``2i`` goes in the
low nibble of byte ``i``, element ``2i + 1`` in the high nibble; an odd length
is padded with a zero nibble. ``uint4`` nibbles hold 0..15; ``int4`` nibbles
hold -8..7 in two's complement (``value & 0xF``), so ``-1`` is ``0xF``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import QuantizationError

__all__ = ["pack_int4", "unpack_int4", "packed_length"]


def _four_bit(qdtype: DTypeLike, fn: str) -> dtypes.QDType:
    d = dtypes.qdtype(qdtype)
    if d not in (dtypes.uint4, dtypes.int4):
        raise QuantizationError(f"{fn}: qdtype must be uint4 or int4, got {d.name}")
    return d


def packed_length(n: int) -> int:
    """Bytes needed for ``n`` 4-bit values."""
    return (n + 1) // 2


def pack_int4(values: Tensor, qdtype: DTypeLike = dtypes.uint4) -> Tensor:
    """Pack 4-bit integers (any integer dtype, one per element) two per byte along the last dimension.

    Returns uint8 with the last dimension ``ceil(n / 2)``. Values outside the
    dtype's range (0..15 for uint4, -8..7 for int4) raise QuantizationError.
    """
    fn = "pack_int4"
    d = _four_bit(qdtype, fn)
    if not isinstance(values, Tensor) or values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        got = values.dtype if isinstance(values, Tensor) else type(values).__name__
        raise QuantizationError(f"{fn}: expected an integer tensor, got {got}; quantize first (quantize_affine)")
    if values.dim() == 0:
        raise QuantizationError(f"{fn}: cannot pack a 0-d tensor; reshape it to at least one dimension")
    lo, hi = (int(values.min()), int(values.max())) if values.numel() else (0, 0)
    if lo < d.quant_min or hi > d.quant_max:
        raise QuantizationError(f"{fn}: values span [{lo}, {hi}], outside {d.name}'s range [{d.quant_min}, {d.quant_max}]")
    nibbles = values.to(torch.int16) & 0xF  # two's complement nibble for int4
    if values.shape[-1] % 2:
        nibbles = torch.nn.functional.pad(nibbles, (0, 1))
    pairs = nibbles.reshape(*nibbles.shape[:-1], nibbles.shape[-1] // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).to(torch.uint8)


def unpack_int4(packed: Tensor, length: Optional[int] = None, qdtype: DTypeLike = dtypes.uint4) -> Tensor:
    """Inverse of :func:`pack_int4`: uint8 for uint4, int8 (sign-extended) for int4.

    ``length`` is the original last-dimension size (default ``2 * packed.shape[-1]``);
    it drops the padding nibble of odd lengths.
    """
    fn = "unpack_int4"
    d = _four_bit(qdtype, fn)
    if not isinstance(packed, Tensor) or packed.dtype != torch.uint8:
        got = packed.dtype if isinstance(packed, Tensor) else type(packed).__name__
        raise QuantizationError(f"{fn}: expected a uint8 tensor of packed nibbles, got {got}")
    if packed.dim() == 0:
        raise QuantizationError(f"{fn}: cannot unpack a 0-d tensor")
    full = 2 * packed.shape[-1]
    if length is None:
        length = full
    if not full - 1 <= length <= full:
        raise QuantizationError(f"{fn}: length {length} does not fit {packed.shape[-1]} packed bytes (expected {full - 1} or {full})")
    wide = packed.to(torch.int16)
    nibbles = torch.stack((wide & 0xF, wide >> 4), dim=-1).reshape(*packed.shape[:-1], full)[..., :length]
    if d is dtypes.int4:
        return (nibbles - ((nibbles & 0x8) << 1)).to(torch.int8)
    return nibbles.to(torch.uint8)
