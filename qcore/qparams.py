"""Scale and zero point from an observed range, computed exactly as torch.ao's observers do.

``calculate_qparams`` runs the same tensor operations, in the same order and
dtypes, as ``torch.ao.quantization``'s ``_calculate_qparams`` so that a model
calibrated with qcore gets bit-identical qparams to one calibrated with torch.ao.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from qcore import dtypes
from qcore.errors import ConfigError, ObserverError, UncalibratedError
from qcore.quant_spec import QuantSpec

__all__ = ["calculate_qparams", "quant_range", "validate_min_max"]


def quant_range(spec: QuantSpec) -> tuple[int, int]:
    """``spec.qrange`` (torch.ao's ``calculate_qmin_qmax``), refused when it leaves fewer than two levels.

    A custom range such as (0, 1) halved by ``reduce_range`` collapses to (0, 0),
    which would divide by zero; QuantSpec alone accepts it.
    """
    lo, hi = spec.qrange
    if lo >= hi:
        raise ConfigError(
            f"the quant range ({spec.quant_min}, {spec.quant_max})"
            + (" halved by reduce_range" if spec.reduce_range else "")
            + f" leaves ({lo}, {hi}), fewer than two levels; widen quant_min/quant_max"
            + (" or drop reduce_range" if spec.reduce_range else "")
        )
    return lo, hi


def validate_min_max(
    min_val: Tensor, max_val: Tensor, spec: Optional[QuantSpec] = None, *, owner: str = "calculate_qparams"
) -> None:
    """Check an observed range before turning it into qparams.

    Raises ObserverError when the range is empty or still the uninitialised
    ``(+inf, -inf)`` (no data seen), holds NaN/inf, or has ``min > max``; and
    ConfigError when its shape does not fit ``spec`` (one value per tensor, a
    1-d tensor per channel). Costs one device sync on the good path.
    """
    if not isinstance(min_val, Tensor) or not isinstance(max_val, Tensor):
        raise ConfigError(f"{owner}: min_val and max_val must be tensors, got {type(min_val).__name__} and {type(max_val).__name__}")
    if min_val.shape != max_val.shape:
        raise ConfigError(f"{owner}: min_val has shape {tuple(min_val.shape)} but max_val has {tuple(max_val.shape)}; they must match")
    if spec is not None:
        if spec.is_per_channel and min_val.dim() != 1:
            raise ConfigError(
                f"{owner}: {spec.qscheme.value} needs one min/max per channel (a 1-d tensor), got shape {tuple(min_val.shape)}"
            )
        if not spec.is_per_channel and min_val.numel() > 1:
            raise ConfigError(
                f"{owner}: {spec.qscheme.value} needs a single min/max, got shape {tuple(min_val.shape)}; "
                "use a per_channel qscheme for one qparam per channel"
            )
    if min_val.numel() > 0:
        good = torch.isfinite(min_val) & torch.isfinite(max_val) & (min_val <= max_val)
        if bool(good.all()):
            return
    if min_val.numel() == 0 or bool(((min_val == float("inf")) & (max_val == float("-inf"))).all()):
        raise UncalibratedError(
            f"{owner}: the observer saw no data (its min/max are still unset); "
            "run calibration (pass representative inputs through the prepared model) before asking for qparams"
        )
    nonfinite = int((~(torch.isfinite(min_val) & torch.isfinite(max_val))).sum())
    if nonfinite:
        raise ObserverError(f"{owner}: {nonfinite} min/max value(s) are NaN or infinite; the observed data must be finite")
    where = torch.nonzero((min_val > max_val).reshape(-1)).reshape(-1).tolist()
    raise ObserverError(f"{owner}: min_val is greater than max_val at position(s) {where[:10]}; min must not exceed max")


def _eps_tensor(eps: Union[Tensor, float, None], spec: QuantSpec, device: torch.device) -> Tensor:
    # torch.ao keeps eps as a float32 buffer of shape [1]; broadcasting against it is
    # what turns a 0-d per-tensor result into shape [1], so mirror it exactly.
    if eps is None:
        eps = spec.eps
    if isinstance(eps, Tensor):
        return eps.to(device=device, dtype=torch.float32).reshape(-1)
    return torch.tensor([float(eps)], dtype=torch.float32, device=device)


def calculate_qparams(
    min_val: Tensor, max_val: Tensor, spec: QuantSpec, *, eps: Union[Tensor, float, None] = None, owner: str = "calculate_qparams"
) -> tuple[Tensor, Tensor]:
    """(scale, zero_point) for the range ``[min_val, max_val]`` under ``spec``.

    Per tensor (0-d or one-element min/max) both results have shape ``[1]``;
    per channel they have the channels' shape. ``scale`` is float32. The
    zero point's dtype follows torch.ao's observers: int32 for affine, int64
    for symmetric, float32 for ``per_channel_affine_float_qparams``. ``eps``
    (default ``spec.eps``) is the floor on ``scale``.
    """
    validate_min_max(min_val, max_val, spec, owner=owner)
    quant_min, quant_max = quant_range(spec)
    min_val = min_val.to(torch.float32)
    max_val = max_val.to(torch.float32)
    device = min_val.device
    eps_t = _eps_tensor(eps, spec, device)

    # Zero must be exactly representable, so the range always includes it.
    min_val_neg = torch.min(min_val, torch.zeros_like(min_val))
    max_val_pos = torch.max(max_val, torch.zeros_like(max_val))

    if spec.qscheme.is_symmetric:
        max_val_pos = torch.max(-min_val_neg, max_val_pos)
        scale = max_val_pos / (float(quant_max - quant_min) / 2)
        scale = torch.max(scale, eps_t)
        if spec.dtype is dtypes.uint8:
            # Unsigned symmetric: zero sits mid-range (the down-rounded midpoint of a custom range).
            zero = (quant_min + quant_max) // 2 if spec.quant_min is not None else 128
        else:
            zero = 0
        zero_point = torch.full(min_val_neg.shape, zero, dtype=torch.int64, device=device)
    elif spec.qscheme is dtypes.QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS:
        scale = (max_val - min_val) / float(quant_max - quant_min)
        scale = torch.where(scale > eps_t, scale, torch.ones_like(scale))
        # The zero point is a float offset: q = round((x - min) / scale).
        zero_point = -1 * min_val / scale
    else:
        scale = (max_val_pos - min_val_neg) / float(quant_max - quant_min)
        scale = torch.max(scale, eps_t)
        zero_point = quant_min - torch.round(min_val_neg / scale).to(torch.int)
        zero_point = torch.clamp(zero_point, quant_min, quant_max)

    if scale.dim() == 0:
        scale = scale.reshape(1)
    if zero_point.dim() == 0:
        zero_point = zero_point.reshape(1)
    return scale, zero_point
