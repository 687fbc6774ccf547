"""TorchScript-compatible reference kernels of dynamic quantization: activations quantized on the fly.

``fake_quantize_dynamic(x)`` is ``qcore.quantize_per_tensor_dynamic(x).dequantize()``
bit for bit (qparams from the tensor's own min/max by torch's
ChooseQuantizationParams, fused multiply-add rounding), written in code
``torch.jit.script`` accepts; :func:`linear_dynamic` runs the float linear on
those values and the dequantized weight. That is what torch.ao's fbgemm
``quantized::linear_dynamic`` computes, up to float32 summation order.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from qcore.affine import choose_dynamic_qparams
from qcore.errors import QuantizationError

__all__ = [
    "fma_f32",
    "choose_dynamic_qparams",
    "fake_quantize_dynamic",
    "linear_dynamic",
    "PER_TOKEN_EPS",
    "choose_per_token_qparams",
    "per_token_codes",
    "quantize_per_token",
    "per_token_epilogue",
    "linear_dynamic_per_token",
]

#: Floor of a per-token scale (float32 eps, torch.ao's observer default): an all-zero token gets scale eps, zero point 0.
PER_TOKEN_EPS = 1.1920928955078125e-07

def fma_f32(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``a * b + c`` rounded once to float32, as ``qcore.affine`` (and torch's vectorised quantize) computes it.

    The float64 product is exact; TwoSum finds the rounding error of the sum,
    and rounding to odd makes the final float64 -> float32 rounding correct.
    """
    p = a.to(torch.float64) * b.to(torch.float64)
    c64 = c.to(torch.float64)
    s = p + c64
    bp = s - p
    err = (p - (s - bp)) + (c64 - bp)
    # The last bit of s's significand (frexp, not a bit view: TorchScript has no Tensor.view(dtype)).
    odd = torch.fmod(torch.frexp(s)[0] * 9007199254740992.0, 2.0) != 0
    inexact_even = (err != 0) & ~odd & torch.isfinite(s)
    toward = torch.where(err > 0, torch.full_like(s, float("inf")), torch.full_like(s, float("-inf")))
    return torch.where(inexact_even, torch.nextafter(s, toward), s).to(torch.float32)


def fake_quantize_dynamic(x: Tensor, quant_min: int, quant_max: int, reduce_range: bool) -> Tensor:
    """``x`` quantized per tensor with qparams from its own min/max, then dequantized (float32).

    ``[quant_min, quant_max]`` is the activation dtype's range (0..255 for
    uint8, -128..127 for int8); it sets the qparams (halved by ``reduce_range``)
    and the clamp. NaN or infinite inputs raise QuantizationError.
    """
    x = x.to(torch.float32)
    if x.numel() == 0:
        return x
    x_min, x_max = torch.aminmax(x)
    lo, hi = float(x_min), float(x_max)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise QuantizationError(
            "dynamic quantization: the input has NaN or infinite values, which have no quantized value; "
            "find where they come from (torch.isfinite(x)) before this module"
        )
    scale, zero_point = choose_dynamic_qparams(lo, hi, quant_min, quant_max, reduce_range)
    s32 = torch.tensor(scale, dtype=torch.float32, device=x.device)
    zp32 = torch.tensor(float(zero_point), dtype=torch.float32, device=x.device)
    v = torch.round(fma_f32(x, torch.reciprocal(s32).expand_as(x), zp32.expand_as(x)))
    v = torch.clamp(v, float(quant_min), float(quant_max)) + 0.0  # integers have no -0.0
    return (v - zp32) * s32


def linear_dynamic(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], quant_min: int, quant_max: int, reduce_range: bool
) -> Tensor:
    """Dynamically quantized linear on the reference backend: ``F.linear`` of the dequantized input, in float32.

    ``weight`` is the dequantized float32 weight; the result has ``x``'s dtype.
    """
    y = F.linear(fake_quantize_dynamic(x, quant_min, quant_max, reduce_range), weight, bias)
    return y.to(x.dtype)


# --- per token ------------------------------------------------------------------------------------


def choose_per_token_qparams(x: Tensor, eps: float = PER_TOKEN_EPS) -> Tuple[Tensor, Tensor]:
    """(scale, zero_point) of each row of the 2-d float32 ``x``: float32 ``[rows, 1]`` both, the zero points integers in [0, 255].

    Asymmetric uint8 over ``[lo, hi] = [min(row, 0), max(row, 0)]``:
    ``scale = max((hi - lo) / 255, eps)`` and ``zero_point = round(-lo / scale)``
    (ties to even), each step in float32, so zero is exact. No clamp is
    needed: ``-lo <= hi - lo`` makes ``-lo / scale <= 255 * (1 + 2**-22)``,
    which rounds to at most 255. NaN or infinite values (or a row whose range
    exceeds float32) raise QuantizationError.
    """
    neg_lo = torch.amin(x, dim=-1, keepdim=True).clamp_max_(0.0).abs_()  # -lo, and +0.0 rather than -0.0
    hi = torch.amax(x, dim=-1, keepdim=True).clamp_min_(0.0)  # amin + amax: aminmax(dim=) is far slower on the CPU
    scale = hi.add_(neg_lo).div_(255.0).clamp_min_(eps)
    largest = float(scale.max())  # NaN and inf reach the largest scale
    if not math.isfinite(largest):
        raise QuantizationError(
            "per-token dynamic quantization: the input has NaN or infinite values (or a row whose range exceeds "
            "float32), which have no quantized value; find where they come from (torch.isfinite(x)) before this module"
        )
    zero_point = neg_lo.div_(scale).round_()
    return scale, zero_point


def per_token_codes(x: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int = 0, quant_max: int = 255) -> Tensor:
    """``clamp(round(x / scale) + zero_point, quant_min, quant_max)`` as float32 integers: per-token quantization's one rounding rule.

    ``x / scale`` is IEEE float32 division (correctly rounded); ``round``
    rounds half to even; adding the integer zero point is exact. The
    reference passes the zero points and [0, 255]; an int8 kernel passes
    ``zero_point - 128`` and [-128, 127], which gives exactly ``q - 128``.
    One float32 temporary, modified in place.
    """
    v = torch.div(x, scale)
    v.round_()
    v.add_(zero_point)
    return v.clamp_(float(quant_min), float(quant_max))


def quantize_per_token(x: Tensor, scale: Tensor, zero_point: Tensor) -> Tensor:
    """The uint8 codes of the 2-d float32 ``x`` with per-row qparams from :func:`choose_per_token_qparams`."""
    return per_token_codes(x, scale, zero_point).to(torch.uint8)


def per_token_epilogue(y: Tensor, scale: Tensor, w_scale: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``((y * scale) * w_scale) + bias`` in place, each step rounded to float32: the one per-token epilogue.

    ``y`` ``[rows, out]`` holds the exact integer sums ``sum_k (q - zp) * w``
    rounded to float32 (an integer rounds to the same nearest float32 from
    int32, int64 or float64); ``scale`` ``[rows, 1]``; ``w_scale`` float32,
    ``[out]`` or 0-d; ``bias`` float32 ``[out]``. Returns ``y``.
    """
    y.mul_(scale)
    y.mul_(w_scale)
    if bias is not None:
        y.add_(bias)
    return y


def linear_dynamic_per_token(x: Tensor, w_int8: Tensor, w_scale: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Per-token dynamic linear, the reference: exact integer sums, then :func:`per_token_epilogue`.

    ``w_int8`` ``[out, in]`` holds symmetric weight integers (zero point 0),
    ``w_scale`` their scales (per output channel ``[out]``, or 0-d). The
    integer sums run as a float64 matrix multiply of integer-valued tensors,
    exact while ``|sum| < 2**53``. ``x``: ``[..., in]``, any float dtype; the
    result has ``x``'s dtype and shape ``[..., out]``.
    """
    k = w_int8.size(1)
    shape: List[int] = list(x.shape[:-1])
    shape.append(w_int8.size(0))
    rows = x.reshape(-1, k).to(torch.float32)
    if rows.size(0) == 0:
        y = torch.zeros(shape, dtype=torch.float32, device=x.device)
        if bias is not None:
            y = y + bias
        return y.to(x.dtype)
    scale, zero_point = choose_per_token_qparams(rows)
    centred = per_token_codes(rows, scale, zero_point).to(torch.float64).sub_(zero_point)
    acc = torch.mm(centred, w_int8.to(torch.float64).t())
    y = per_token_epilogue(acc.to(torch.float32), scale, w_scale.to(torch.float32), bias)
    return y.reshape(shape).to(x.dtype)
