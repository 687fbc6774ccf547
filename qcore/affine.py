"""Affine quantization arithmetic on plain tensors, bit-exact with torch's CPU kernels.

``q = clamp(round(x / scale) + zero_point, quant_min, quant_max)`` and
``x' = (q - zero_point) * scale`` are the whole idea, but torch evaluates them
in several slightly different ways (a fused multiply-add here, a float32 add
before rounding there) and the difference shows at rounding ties. qcore must
produce the same integers as torch, so each path below reproduces one torch
kernel exactly; docs/numerics.md lists the formulas and why.

Nothing here uses torch's quantized dtypes: integers live in ordinary
``uint8``/``int8``/``int32`` tensors (4-bit values unpacked, one per byte).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import QDType
from qcore.errors import QuantizationError

__all__ = [
    "quantize_affine",
    "dequantize_affine",
    "fake_quantize_affine",
    "fake_quantize_affine_cachemask",
    "quantize_float16",
    "FakeQuantizeAffineFunction",
    "choose_dynamic_qparams",
]

ScaleLike = Union[float, Tensor]
ZeroPointLike = Union[int, float, Tensor]
StorageLike = Union[torch.dtype, QDType, str]

# Smallest float32 scale whose reciprocal is still finite in float32.
_MIN_SCALE = float(torch.finfo(torch.float32).tiny)
_F32_EXACT = 2**24  # integers up to this magnitude are exact in float32


# --- argument checking -------------------------------------------------------------


def _storage(storage_dtype: StorageLike, fn: str) -> tuple[torch.dtype, int, int, int]:
    """(torch storage dtype, bits, lowest, highest) for the integers ``fn`` writes.

    4-bit dtypes are returned unpacked, one value per byte (uint8 for uint4,
    int8 for int4); :mod:`qcore.int4_packing` packs them two to a byte.
    """
    if isinstance(storage_dtype, torch.dtype):
        table = {torch.uint8: dtypes.uint8, torch.int8: dtypes.int8, torch.int32: dtypes.int32}
        d = table.get(storage_dtype)
        if d is None:
            d = _qdtype_or_error(storage_dtype, fn)
    else:
        d = _qdtype_or_error(storage_dtype, fn)
    if d.is_float:
        raise QuantizationError(
            f"{fn}: {d.name} is a float dtype, not integer storage; float16 'quantization' is quantize_float16(x), i.e. x.to(torch.float16)"
        )
    if d.bits == 4:
        storage = torch.int8 if d.is_signed else torch.uint8
    else:
        storage = d.storage
    return storage, d.bits, d.quant_min, d.quant_max


def _qdtype_or_error(value: StorageLike, fn: str) -> QDType:
    try:
        return dtypes.qdtype(value)
    except Exception:
        raise QuantizationError(f"{fn}: unsupported storage dtype {value!r}; use torch.uint8, torch.int8, torch.int32 or a qcore dtype") from None


def _check_float_input(x: Tensor, fn: str) -> None:
    if not isinstance(x, Tensor):
        raise QuantizationError(f"{fn}: expected a float tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise QuantizationError(f"{fn}: expected a floating-point tensor, got dtype {x.dtype}; quantize float values only")


def _check_range(quant_min: int, quant_max: int, lowest: Optional[int], highest: Optional[int], fn: str) -> tuple[int, int]:
    quant_min, quant_max = int(quant_min), int(quant_max)
    if quant_min > quant_max:
        raise QuantizationError(f"{fn}: quant_min ({quant_min}) is greater than quant_max ({quant_max})")
    if lowest is not None and (quant_min < lowest or quant_max > highest):
        raise QuantizationError(
            f"{fn}: quant range [{quant_min}, {quant_max}] does not fit the storage range [{lowest}, {highest}]; "
            "narrow the range or use a wider storage dtype"
        )
    return quant_min, quant_max


def _scalar_scale(scale: ScaleLike, fn: str) -> float:
    if isinstance(scale, Tensor):
        if scale.numel() != 1:
            raise QuantizationError(
                f"{fn}: a per-tensor scale must be a number or a one-element tensor, got shape {tuple(scale.shape)}; "
                "pass axis=... for per-channel quantization"
            )
        scale = scale.reshape(()).item()
    if not isinstance(scale, numbers.Real):
        raise QuantizationError(f"{fn}: scale must be a real number, got {type(scale).__name__}")
    s32 = _round_to_f32(float(scale))
    if not (math.isfinite(s32) and s32 >= _MIN_SCALE):
        raise QuantizationError(f"{fn}: scale must be a finite positive float32 number (at least {_MIN_SCALE:.3g}), got {scale!r}")
    return float(scale)


def _round_to_f32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float64).to(torch.float32))


def _scalar_zero_point(zero_point: ZeroPointLike, fn: str) -> int:
    if isinstance(zero_point, Tensor):
        if zero_point.numel() != 1:
            raise QuantizationError(
                f"{fn}: a per-tensor zero_point must be a number or a one-element tensor, got shape {tuple(zero_point.shape)}"
            )
        zero_point = zero_point.reshape(()).item()
    if not isinstance(zero_point, numbers.Real) or isinstance(zero_point, bool):
        raise QuantizationError(f"{fn}: zero_point must be an integer, got {type(zero_point).__name__}")
    if not (math.isfinite(zero_point) and zero_point == int(zero_point)):
        raise QuantizationError(f"{fn}: a per-tensor zero_point must be an integer, got {zero_point!r}")
    return int(zero_point)


def _normalize_axis(axis: int, ndim: int, fn: str) -> int:
    if ndim == 0:
        raise QuantizationError(f"{fn}: per-channel quantization needs a tensor with at least one dimension, got a 0-d tensor")
    if not -ndim <= axis < ndim:
        raise QuantizationError(f"{fn}: axis {axis} is out of range for a {ndim}-d tensor (expected {-ndim} to {ndim - 1})")
    return axis % ndim


def _channel_params(
    x: Tensor, scale: ScaleLike, zero_point: ZeroPointLike, axis: int, fn: str
) -> tuple[int, Tensor, Tensor, Tensor]:
    """(axis, float64 scales, float32 scales, zero points) shaped to broadcast against ``x``.

    Integer zero points come back as int64, floating ones (float qparams) as float32.
    """
    axis = _normalize_axis(int(axis), x.dim(), fn)
    channels = x.shape[axis]
    scale = torch.as_tensor(scale, device=x.device)
    zero_point = torch.as_tensor(zero_point, device=x.device)
    for name, t in (("scale", scale), ("zero_point", zero_point)):
        if t.dim() != 1 or t.numel() != channels:
            raise QuantizationError(
                f"{fn}: per-channel {name} must be a 1-d tensor with one value per channel "
                f"({channels} along axis {axis}), got shape {tuple(t.shape)}"
            )
    if not scale.is_floating_point():
        scale = scale.to(torch.float64)
    s64 = scale.to(torch.float64)
    s32 = scale.to(torch.float32)
    bad = ~(torch.isfinite(s32) & (s32 >= _MIN_SCALE))
    if bool(bad.any()):
        where = torch.nonzero(bad).reshape(-1).tolist()[:8]
        raise QuantizationError(f"{fn}: per-channel scales must be finite positive float32 numbers; bad channel(s) {where}: {scale[bad][:8].tolist()}")
    if zero_point.is_floating_point():
        if not bool(torch.isfinite(zero_point).all()):
            raise QuantizationError(f"{fn}: per-channel zero points must be finite")
        zp = zero_point.to(torch.float32)
    elif zero_point.dtype == torch.bool or zero_point.is_complex():
        raise QuantizationError(f"{fn}: zero_point must be integer (or float for float qparams), got dtype {zero_point.dtype}")
    else:
        zp = zero_point.to(torch.int64)
    shape = [1] * x.dim()
    shape[axis] = channels
    return axis, s64.reshape(shape), s32.reshape(shape), zp.reshape(shape)


def _check_zero_points_in_range(zp: Tensor, quant_min: int, quant_max: int, fn: str) -> None:
    if zp.is_floating_point() or zp.numel() == 0:
        return
    if bool(((zp < quant_min) | (zp > quant_max)).any()):
        raise QuantizationError(f"{fn}: zero points {zp.reshape(-1).tolist()[:8]} must lie within [{quant_min}, {quant_max}]")


def _check_no_nan(x: Tensor, fn: str) -> None:
    if x.numel() and bool(torch.isnan(x).any()):
        raise QuantizationError(
            f"{fn}: the input has NaN values, which have no quantized value; find where the NaN comes from "
            "(torch.isnan(x).nonzero()) or replace it (torch.nan_to_num) before quantizing"
        )


# --- exact float32 arithmetic helpers --------------------------------------------


def _fma_f32(a: Tensor, b: Union[Tensor, float], c: Union[Tensor, float]) -> Tensor:
    """``a * b + c`` with a single float32 rounding, as the fused multiply-add instruction computes it.

    ``a``, ``b`` and ``c`` hold float32 values. Their product is exact in float64;
    the sum is made exact with TwoSum and, where inexact, rounded to odd, which
    makes the final rounding to float32 correct (float64 has more than 2 * 24 + 1 bits).
    """
    if isinstance(b, Tensor):
        b = b.to(torch.float64)
    if isinstance(c, Tensor):
        c = c.to(torch.float64)
    p = a.to(torch.float64) * b
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)
    inexact = (err != 0) & torch.isfinite(s)
    if bool(inexact.any()):
        to_odd = inexact & ((s.view(torch.int64) & 1) == 0)
        s = torch.where(to_odd, torch.nextafter(s, s + err * math.inf), s)
    return s.to(torch.float32)


def _inverse(s32: Tensor) -> Tensor:
    return torch.reciprocal(s32)  # 1.0f / scale in float32, as torch's kernels compute it


def _clamp_to_storage(v: Tensor, quant_min: int, quant_max: int, storage: torch.dtype) -> Tensor:
    # Clamp in float64: float32 cannot hold int32's bounds, and inf saturates correctly.
    return v.to(torch.float64).clamp_(quant_min, quant_max).to(storage)


# --- quantize / dequantize -------------------------------------------------------


def quantize_affine(
    x: Tensor,
    scale: ScaleLike,
    zero_point: ZeroPointLike,
    quant_min: int,
    quant_max: int,
    storage_dtype: StorageLike,
    axis: Optional[int] = None,
) -> Tensor:
    """Integers ``clamp(round(x / scale) + zero_point)`` in ``storage_dtype``, exactly as torch rounds them.

    Per tensor when ``axis`` is None (scale and zero_point numbers or one-element
    tensors), per channel along ``axis`` otherwise (1-d tensors). Ties round to
    even; ±inf saturate; NaN raises QuantizationError. ``storage_dtype`` is
    ``torch.uint8``/``int8``/``int32`` or a qcore dtype (``"uint4"``/``"int4"``
    give unpacked 4-bit values in uint8/int8).
    """
    return _quantize(x, scale, zero_point, quant_min, quant_max, storage_dtype, axis, "quantize_affine")


def _quantize(
    x: Tensor,
    scale: ScaleLike,
    zero_point: ZeroPointLike,
    quant_min: int,
    quant_max: int,
    storage_dtype: StorageLike,
    axis: Optional[int],
    fn: str,
) -> Tensor:
    _check_float_input(x, fn)
    storage, bits, lowest, highest = _storage(storage_dtype, fn)
    quant_min, quant_max = _check_range(quant_min, quant_max, lowest, highest, fn)
    _check_no_nan(x, fn)
    x = x.to(torch.float32)
    if axis is None:
        s = _scalar_scale(scale, fn)
        zp = _scalar_zero_point(zero_point, fn)
        _check_zero_points_in_range(torch.tensor(zp), quant_min, quant_max, fn)
        s32 = torch.tensor(s, dtype=torch.float32, device=x.device)
        inv = _inverse(s32)
        if bits == 8:
            # torch's vectorised quantize_per_tensor: fused x * (1/scale) + zp, then round.
            v = torch.round(_fma_f32(x, float(inv), float(zp)))
        elif bits == 4:
            # quint4x2: round(x * (1/scale)), then add the zero point as an integer.
            v = torch.round(x * inv).to(torch.float64) + zp
        else:
            # int32: float32 add of the zero point, then round.
            v = torch.round(x * inv + torch.tensor(float(zp), dtype=torch.float32, device=x.device))
        return _clamp_to_storage(v, quant_min, quant_max, storage)
    _, _, s32, zp = _channel_params(x, scale, zero_point, axis, fn)
    _check_zero_points_in_range(zp, quant_min, quant_max, fn)
    # torch's per-channel kernel: float32 add of the zero point, then round.
    v = torch.round(x * _inverse(s32) + zp.to(torch.float32))
    return _clamp_to_storage(v, quant_min, quant_max, storage)


def dequantize_affine(q: Tensor, scale: ScaleLike, zero_point: ZeroPointLike, axis: Optional[int] = None) -> Tensor:
    """float32 ``(q - zero_point) * scale``, rounded exactly as torch's ``dequantize()`` rounds it.

    Per tensor the difference is taken in integers and multiplied by the
    float32 scale; per channel torch subtracts in float32 and multiplies by the
    float64 scale, and so does this.
    """
    fn = "dequantize_affine"
    if not isinstance(q, Tensor) or q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        got = q.dtype if isinstance(q, Tensor) else type(q).__name__
        raise QuantizationError(f"{fn}: expected an integer tensor of quantized values, got {got}")
    if axis is None:
        s = _scalar_scale(scale, fn)
        zp = _scalar_zero_point(zero_point, fn)
        s32 = torch.tensor(s, dtype=torch.float32, device=q.device)
        if q.dtype in (torch.uint8, torch.int8, torch.int16) and abs(zp) < _F32_EXACT:
            diff = q.to(torch.float32) - float(zp)
        else:
            diff = (q.to(torch.int64) - zp).to(torch.float32)
        return diff * s32
    _, s64, _, zp = _channel_params(q, scale, zero_point, axis, fn)
    diff = q.to(torch.float32) - zp.to(torch.float32)
    return (diff.to(torch.float64) * s64).to(torch.float32)


def quantize_float16(x: Tensor) -> Tensor:
    """float16 "quantization": ``x.to(torch.float16)``, round to nearest even, not saturating.

    Values beyond float16's range become ±inf, NaN stays NaN; this is what
    torch's reference float16 weights do (fbgemm's packed fp16 weights saturate
    instead; that is the backend's business).
    """
    _check_float_input(x, "quantize_float16")
    return x.to(torch.float16)


# --- fake quantization -----------------------------------------------------------


def fake_quantize_affine_cachemask(
    x: Tensor,
    scale: ScaleLike,
    zero_point: ZeroPointLike,
    quant_min: int,
    quant_max: int,
    axis: Optional[int] = None,
) -> tuple[Tensor, Tensor]:
    """``(dequantize(quantize(x)), mask)`` without autograd, as torch's ``*_cachemask`` kernels compute them.

    ``mask`` is True where the unclamped quantized value lies in
    ``[quant_min, quant_max]``: the straight-through gradient flows there.
    NaN inputs give NaN outputs (and a False mask); ±inf saturate.
    """
    fn = "fake_quantize_affine"
    _check_float_input(x, fn)
    quant_min, quant_max = _check_range(quant_min, quant_max, None, None, fn)
    wide = max(abs(quant_min), abs(quant_max)) >= _F32_EXACT
    x_dtype = x.dtype
    if axis is None:
        s = _scalar_scale(scale, fn)
        zp = _scalar_zero_point(zero_point, fn)
        _check_zero_points_in_range(torch.tensor(zp), quant_min, quant_max, fn)
        # torch rounds x * (1/scale) in float64 for float64 input, in float32 otherwise,
        # but always multiplies the result back in float32.
        cdtype = torch.float64 if x_dtype == torch.float64 else torch.float32
        xf = x.detach().to(cdtype)
        s32 = torch.tensor(s, dtype=torch.float32, device=x.device)
        v = torch.round(xf * _inverse(s32).to(cdtype)) + torch.tensor(float(zp), dtype=cdtype, device=x.device)
        if wide or abs(zp) >= _F32_EXACT:
            v = v.to(torch.float64)
        mask = (v >= quant_min) & (v <= quant_max)
        diff = v.clamp(quant_min, quant_max) - zp
        out = diff.to(torch.float32) * s32
        return out.to(x_dtype), mask
    _, _, s32, zp = _channel_params(x, scale, zero_point, axis, fn)
    _check_zero_points_in_range(zp, quant_min, quant_max, fn)
    # Per channel torch computes in float64 for float64 input, float32 otherwise.
    cdtype = torch.float64 if x_dtype == torch.float64 else torch.float32
    xf = x.detach().to(cdtype)
    inv = _inverse(s32).to(cdtype)
    if zp.is_floating_point():
        # Float zero points (per_channel_affine_float_qparams): fused x * inv + zp, then round.
        if cdtype == torch.float32:
            v = torch.round(_fma_f32(xf, inv, zp))
        else:
            v = torch.round(xf * inv + zp.to(cdtype))
        v = v + 0.0  # torch rounds to an integer (lrint), which has no -0.0
    else:
        v = torch.round(xf * inv) + zp.to(cdtype)
    if wide or cdtype == torch.float64:
        v = v.to(torch.float64)
    mask = (v >= quant_min) & (v <= quant_max)
    diff = v.to(torch.float64).clamp(quant_min, quant_max) - zp.to(torch.float64)
    out = diff * s32.to(torch.float64)
    # torch's kernel returns float, which the store converts to the input dtype.
    return out.to(torch.float32 if x_dtype != torch.float64 else x_dtype).to(x_dtype), mask


class FakeQuantizeAffineFunction(torch.autograd.Function):
    """Fake quantization with torch's straight-through gradient: ``grad * mask``."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, quant_min, quant_max, axis):  # type: ignore[override]
        out, mask = fake_quantize_affine_cachemask(x, scale, zero_point, quant_min, quant_max, axis)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None, None, None


def fake_quantize_affine(
    x: Tensor,
    scale: ScaleLike,
    zero_point: ZeroPointLike,
    quant_min: int,
    quant_max: int,
    axis: Optional[int] = None,
) -> Tensor:
    """Quantize then dequantize ``x`` (float in, same float dtype out), differentiable in ``x``.

    Forward and backward agree bit for bit with ``torch.fake_quantize_per_tensor_affine``
    (axis None) and ``torch.fake_quantize_per_channel_affine`` on finite inputs;
    see docs/numerics.md for NaN and overflow.
    """
    return FakeQuantizeAffineFunction.apply(x, scale, zero_point, quant_min, quant_max, axis)


# --- dynamic quantization's qparams (TorchScript-compatible: the dynamic modules' twins call it) ----------


def _to_f32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float64).to(torch.float32))


def choose_dynamic_qparams(x_min: float, x_max: float, quant_min: int, quant_max: int, reduce_range: bool) -> Tuple[float, int]:
    """(scale, zero_point) for the range ``[x_min, x_max]``: torch's ChooseQuantizationParams, step for step.

    ``reduce_range`` halves the integer range (fbgemm's int16-overflow guard).
    The scale is float64 here and rounds to float32 when used.
    """
    small_scale = 6.0999998822808266e-05  # fbgemm's SMALL_SCALE_THRESHOLD (6.1e-5f) as float32
    qmin, qmax = quant_min, quant_max
    if reduce_range:
        qmin, qmax = int(qmin / 2), int(qmax / 2)  # C++ integer division truncates toward zero
    x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
    scale = (x_max - x_min) / float(qmax - qmin)
    if _to_f32(scale) == 0.0 or math.isinf(_to_f32(1.0 / _to_f32(scale))):
        scale = 0.1
    if scale < small_scale:
        org_scale = _to_f32(scale)
        scale = small_scale
        if x_min == 0.0:
            x_max = _to_f32(small_scale * float(qmax - qmin))
        elif x_max == 0.0:
            x_min = _to_f32(-small_scale * float(qmax - qmin))
        else:
            amplifier = _to_f32(small_scale / org_scale)
            x_min = _to_f32(x_min * amplifier)
            x_max = _to_f32(x_max * amplifier)
    from_min = float(qmin) - x_min / scale
    from_max = float(qmax) - x_max / scale
    from_min_error = abs(float(qmin)) - abs(x_min / scale)
    from_max_error = abs(float(qmax)) - abs(x_max / scale)
    initial = from_min if from_min_error < from_max_error else from_max
    if initial < qmin:
        zero_point = qmin
    elif initial > qmax:
        zero_point = qmax
    else:
        zero_point = int(torch.round(torch.tensor(initial, dtype=torch.float64)))  # nearbyint: ties to even
    return scale, zero_point
