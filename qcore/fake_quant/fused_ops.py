"""The fused observe-and-fake-quantize step, vectorised in plain torch.

One call updates a moving-average min/max, derives scale/zero_point from it the
way torch's fused kernel does (fbgemm's ``ChooseQuantizationParams``, not the
observers' formula), and fake-quantizes the input. torch's kernel works in
float32 with some double-precision steps; every step here is done in float64
and rounded to float32 exactly where the kernel's arithmetic is float32, which
gives the same bits (a single float32 operation rounded through float64 is
correctly rounded).
"""

from __future__ import annotations

from typing import Optional

import torch

from qcore.affine import fake_quantize_affine
from qcore.errors import QuantizationError

# fbgemm never picks a scale below float16's smallest normal (keeps scales usable in fp16).
SMALL_SCALE_THRESHOLD = float(torch.tensor(6.1e-5, dtype=torch.float32))
# The scale used when the range is empty (all zeros) or its reciprocal overflows.
FALLBACK_SCALE = float(torch.tensor(0.1, dtype=torch.float32))


def _f32(t: torch.Tensor) -> torch.Tensor:
    """Round float64 values to float32 and back: emulates storing into a C ``float``."""
    return t.float().double()


def _f32_scalar(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float64).float())


def choose_qparams_from_range(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    quant_min: int,
    quant_max: int,
    symmetric: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero_point (int32) per element of ``min_val``/``max_val``.

    Follows fbgemm's ``ChooseQuantizationParams`` as torch's fused kernel calls it:
    ``symmetric`` widens the range around zero and centres the zero point, tiny
    scales are raised to :data:`SMALL_SCALE_THRESHOLD`, and the zero point comes
    from whichever end of the range gives the smaller rounding error.
    """
    qmin, qmax = int(quant_min), int(quant_max)
    n_levels = qmax - qmin
    lo = min_val.detach().to(torch.float32).double()
    hi = max_val.detach().to(torch.float32).double()

    if symmetric:
        straddles = (lo < 0) & (hi > 0)
        sym_qmin = -(n_levels // 2 + 1)
        sym_qmax = n_levels // 2
        # float / int in C: the int becomes a float first.
        max_scale = torch.maximum(_f32(lo / _f32_scalar(sym_qmin)).abs(), _f32(hi / _f32_scalar(sym_qmax)).abs())
        lo = torch.where(straddles, _f32(max_scale * sym_qmin), lo)
        hi = torch.where(straddles, _f32(max_scale * sym_qmax), hi)

    lo = torch.clamp(lo, max=0.0)
    hi = torch.clamp(hi, min=0.0)
    scale = _f32((hi - lo) / n_levels)
    unusable = (scale == 0) | torch.isinf(_f32(1.0 / scale))
    scale = torch.where(unusable, torch.full_like(scale, FALLBACK_SCALE), scale)

    tiny = scale < SMALL_SCALE_THRESHOLD
    if bool(tiny.any()):
        amplifier = _f32(SMALL_SCALE_THRESHOLD / scale)
        widened = _f32_scalar(SMALL_SCALE_THRESHOLD * _f32_scalar(n_levels))
        widened_hi = torch.full_like(hi, widened)
        widened_lo = torch.full_like(lo, -widened)
        new_lo = torch.where(lo == 0, lo, torch.where(hi == 0, widened_lo, _f32(lo * amplifier)))
        new_hi = torch.where(lo == 0, widened_hi, torch.where(hi == 0, hi, _f32(hi * amplifier)))
        lo = torch.where(tiny, new_lo, lo)
        hi = torch.where(tiny, new_hi, hi)
        scale = torch.where(tiny, torch.full_like(scale, SMALL_SCALE_THRESHOLD), scale)

    from_min = qmin - lo / scale
    from_max = qmax - hi / scale
    error_min = abs(qmin) + (lo / scale).abs()
    error_max = abs(qmax) + (hi / scale).abs()
    zero_point = torch.where(error_min < error_max, from_min, from_max)
    if symmetric:
        centred = (lo < 0) & (hi > 0)
        zero_point = torch.where(centred, torch.full_like(zero_point, (qmin + qmax) / 2), zero_point)
    zero_point = torch.round(zero_point.clamp(qmin, qmax))
    return scale.float(), zero_point.to(torch.int32)


def update_moving_range(
    x: torch.Tensor,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    averaging_constant: float,
    ch_axis: Optional[int] = None,
) -> None:
    """Fold ``x``'s min/max into ``running_min``/``running_max`` in place (moving average).

    An infinite running value (the initial state) is replaced by the new min/max;
    otherwise ``running + c * (new - running)`` in float32 arithmetic.
    """
    with torch.no_grad():
        x = x.detach()
        if ch_axis is None:
            cur_min, cur_max = torch.aminmax(x)
        else:
            flat = x.transpose(0, ch_axis).reshape(x.shape[ch_axis], -1) if x.dim() > 1 else x.reshape(-1, 1)
            cur_min, cur_max = torch.aminmax(flat, dim=1)
        c = float(torch.tensor(averaging_constant, dtype=torch.float32))
        for running, current in ((running_min, cur_min), (running_max, cur_max)):
            old = running.double()
            cur = current.to(torch.float32).double()
            moved = _f32(old + _f32(c * _f32(cur - old)))
            running.copy_(torch.where(torch.isinf(old), cur, moved).to(running.dtype))


def fused_moving_avg_obs_fake_quant(
    x: torch.Tensor,
    observer_on: bool,
    fake_quant_on: bool,
    running_min: torch.Tensor,
    running_max: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    averaging_constant: float,
    quant_min: int,
    quant_max: int,
    ch_axis: Optional[int],
    symmetric: bool,
) -> torch.Tensor:
    """Observe ``x`` into the running range, refresh ``scale``/``zero_point``, fake-quantize ``x``.

    ``ch_axis=None`` means per tensor. The buffers are updated in place (resized
    on first per-channel use, as torch's kernel does); with fake-quant off the
    qparams are left alone and ``x`` passes through with an identity gradient.
    """
    if x.numel() == 0:
        return x.clone()
    if ch_axis is not None:
        channels = x.shape[ch_axis]
        if running_min.numel() == 0:
            running_min.resize_(channels).fill_(float("inf"))
            running_max.resize_(channels).fill_(float("-inf"))
        elif running_min.numel() != channels:
            raise QuantizationError(
                f"fused_moving_avg_obs_fake_quant: the input has {channels} channels along axis {ch_axis} but the "
                f"running min/max hold {running_min.numel()}; feed tensors of one shape, or reset the observer"
            )
    if observer_on:
        update_moving_range(x, running_min, running_max, averaging_constant, ch_axis)
    if not fake_quant_on:
        return x.clone()
    new_scale, new_zero_point = choose_qparams_from_range(running_min, running_max, quant_min, quant_max, symmetric)
    with torch.no_grad():
        if ch_axis is not None and scale.shape != new_scale.shape:
            scale.resize_(new_scale.shape)
            zero_point.resize_(new_zero_point.shape)
        scale.copy_(new_scale)
        zero_point.copy_(new_zero_point)
    return fake_quantize_affine(x, scale, zero_point, quant_min, quant_max, axis=ch_axis)
