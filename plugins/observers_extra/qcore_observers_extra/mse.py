"""MSE calibration: the clipping range whose quantization has the least mean squared error on the histogram.

The error of a candidate range is computed exactly for the histogram, taking
the values in each bin as spread uniformly over it: the candidate's qparams
come from :func:`qcore.qparams.calculate_qparams` (so the zero point is
rounded as it will be), and the squared error of rounding onto that grid, and
of clamping beyond it, is integrated in closed form bin by bin.

The search shrinks the zero-inclusive observed range ``[min(lo, 0), max(hi, 0)]``
by a common factor (a grid of ``grid`` factors, then a finer grid around the
best), and for affine schemes then moves each end on its own.
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QScheme, QSchemeLike
from qcore.errors import ConfigError
from qcore.qparams import calculate_qparams, quant_range
from qcore.quant_spec import DEFAULT_EPS, QuantSpec

from qcore_observers_extra.histogram_range import HistogramRangeObserver
from qcore_observers_extra.per_channel_histogram import PerChannelHistogramObserverBase
from qcore_observers_extra.validation import positive_int

__all__ = ["MSEObserver", "PerChannelMSEObserver", "rounding_error_integral", "histogram_mse", "mse_search"]

# Elements per chunk of the (channels x candidates x bins) error computation.
_CHUNK = 1 << 22

_PER_CHANNEL = {
    QScheme.PER_TENSOR_AFFINE: QScheme.PER_CHANNEL_AFFINE,
    QScheme.PER_TENSOR_SYMMETRIC: QScheme.PER_CHANNEL_SYMMETRIC,
}


def rounding_error_integral(x: Tensor, low: Tensor, high: Tensor, scale: Tensor) -> Tensor:
    """``∫_low^x (t - Q(t))^2 dt`` for the grid ``low, low + scale, ..., high`` with clamping outside it.

    ``Q`` rounds to the nearest grid point inside ``[low, high]`` and clamps to
    the ends outside; inside, each grid step contributes ``scale^3 / 12``. All
    arguments broadcast; negative for ``x < low``, as an antiderivative.
    """
    y = (x.clamp(min=low, max=high) - low) / scale
    whole = torch.floor(y)
    f = y - whole
    partial = torch.where(f <= 0.5, f**3 / 3, 1.0 / 24 + ((f - 1) ** 3 + 0.125) / 3)
    inside = scale**3 * (whole / 12 + partial)
    below = torch.clamp(x - low, max=0) ** 3 / 3
    above = torch.clamp(x - high, min=0) ** 3 / 3
    return inside + below + above


def _grid(cand_lo: Tensor, cand_hi: Tensor, spec: QuantSpec, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(low end, high end, scale) of the quantization grid each candidate range gets from calculate_qparams."""
    qscheme = _PER_CHANNEL.get(spec.qscheme, spec.qscheme)
    flat_spec = attrs.evolve(spec, qscheme=qscheme, ch_axis=0)
    scale, zero_point = calculate_qparams(
        cand_lo.reshape(-1).float(), cand_hi.reshape(-1).float(), flat_spec, eps=eps, owner="mse_search"
    )
    quant_min, quant_max = quant_range(spec)
    scale = scale.double().reshape(cand_lo.shape)
    zero_point = zero_point.double().reshape(cand_lo.shape)
    return (quant_min - zero_point) * scale, (quant_max - zero_point) * scale, scale


def histogram_mse(hist: Tensor, lo: Tensor, hi: Tensor, grid_low: Tensor, grid_high: Tensor, scale: Tensor) -> Tensor:
    """Mean squared quantization error ``(C, K)`` of ``hist`` (C x bins over ``[lo, hi]``) on K grids per channel.

    Values are taken as uniform within each bin; channels with ``lo == hi`` are
    treated as all their mass sitting at ``lo``.
    """
    channels, bins = hist.shape
    width = (hi - lo) / bins
    total = hist.sum(1).clamp(min=1e-300)
    steps = torch.arange(bins + 1, dtype=hist.dtype, device=hist.device)
    edges = lo.unsqueeze(1) + width.unsqueeze(1) * steps  # (C, bins + 1)
    out = torch.empty_like(grid_low)
    per_chunk = max(1, _CHUNK // max(1, channels * (bins + 1)))
    safe_width = torch.where(width > 0, width, torch.ones_like(width)).reshape(channels, 1, 1)
    for start in range(0, grid_low.shape[1], per_chunk):
        part = slice(start, start + per_chunk)
        g_lo, g_hi, s = (t[:, part].unsqueeze(2) for t in (grid_low, grid_high, scale))
        antiderivative = rounding_error_integral(edges.unsqueeze(1), g_lo, g_hi, s)  # (C, k, bins + 1)
        per_bin = (antiderivative[..., 1:] - antiderivative[..., :-1]) / safe_width
        error = (per_bin * hist.unsqueeze(1)).sum(2)
        # A zero-width channel: every value equals lo; its error is that of lo itself.
        point_error = _squared_rounding_error(lo.reshape(channels, 1), g_lo[..., 0], g_hi[..., 0], s[..., 0])
        error = torch.where((width > 0).unsqueeze(1), error, point_error * hist.sum(1, keepdim=True))
        out[:, part] = error / total.unsqueeze(1)
    return out


def _squared_rounding_error(x: Tensor, grid_low: Tensor, grid_high: Tensor, scale: Tensor) -> Tensor:
    nearest = grid_low + torch.round((x.clamp(min=grid_low, max=grid_high) - grid_low) / scale) * scale
    return (x - nearest) ** 2


def _best(
    hist: Tensor, lo: Tensor, hi: Tensor, cand_lo: Tensor, cand_hi: Tensor, spec: QuantSpec, eps: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The candidate (per channel, the first of the smallest error) and its error."""
    grid_low, grid_high, scale = _grid(cand_lo, cand_hi, spec, eps)
    error = histogram_mse(hist, lo, hi, grid_low, grid_high, scale)
    index = error.argmin(1, keepdim=True)
    return cand_lo.gather(1, index).squeeze(1), cand_hi.gather(1, index).squeeze(1), error.gather(1, index).squeeze(1)


def mse_search(hist: Tensor, lo: Tensor, hi: Tensor, spec: QuantSpec, eps: Tensor, grid: int = 100) -> tuple[Tensor, Tensor]:
    """Per channel, the (min, max) with the least quantization MSE on ``hist`` (C x bins over ``[lo, hi]``).

    Stage 1 scales the zero-inclusive range by ``k / grid`` (k = 1..grid);
    stage 2 refines that factor ten times finer around the best; for affine
    schemes stage 3 then scales the low end alone, and stage 4 the high end,
    each over the same ``grid``. Every stage keeps the incumbent among its
    candidates, so the error never grows from one stage to the next.
    """
    neg = lo.clamp(max=0).unsqueeze(1)
    pos = hi.clamp(min=0).unsqueeze(1)
    dtype, device = hist.dtype, hist.device
    factors = torch.arange(1, grid + 1, dtype=dtype, device=device) / grid
    best_lo, best_hi, best_err = _best(hist, lo, hi, neg * factors, pos * factors, spec, eps)

    span = torch.where(pos - neg > 0, pos - neg, torch.ones_like(pos)).squeeze(1)
    alpha = ((best_hi - best_lo) / span).unsqueeze(1)
    fine = (alpha + torch.arange(-10, 11, dtype=dtype, device=device) / (10 * grid)).clamp(1.0 / (10 * grid), 1.0)
    best_lo, best_hi, best_err = _keep_better(
        (best_lo, best_hi, best_err), _best(hist, lo, hi, neg * fine, pos * fine, spec, eps)
    )
    if spec.qscheme.is_symmetric:
        return best_lo, best_hi
    ones = torch.ones_like(factors)
    low_cands = torch.cat([best_lo.unsqueeze(1), neg * factors], 1)
    best_lo, best_hi, best_err = _keep_better(
        (best_lo, best_hi, best_err),
        _best(hist, lo, hi, low_cands, best_hi.unsqueeze(1) * torch.cat([ones[:1], ones]), spec, eps),
    )
    high_cands = torch.cat([best_hi.unsqueeze(1), pos * factors], 1)
    best_lo, best_hi, best_err = _keep_better(
        (best_lo, best_hi, best_err),
        _best(hist, lo, hi, best_lo.unsqueeze(1) * torch.cat([ones[:1], ones]), high_cands, spec, eps),
    )
    return best_lo, best_hi


def _keep_better(current: tuple[Tensor, Tensor, Tensor], new: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    better = new[2] < current[2]
    return tuple(torch.where(better, n, c) for n, c in zip(new, current))  # type: ignore[return-value]


class _MSERange:
    """The range rule both MSE observers share: :func:`mse_search` with ``grid`` steps."""

    grid: int
    spec: QuantSpec
    eps: Tensor

    def _select_ranges(self, hist: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return mse_search(hist, lo, hi, self.spec, self.eps, self.grid)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, {super().extra_repr()}"  # type: ignore[misc]


class MSEObserver(_MSERange, HistogramRangeObserver):
    """Per-tensor range minimising the quantization MSE on the observed histogram (``grid``: search resolution).

    Other arguments are HistogramObserver's.
    """

    def __init__(
        self,
        bins: int = 2048,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict[str, Any]] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
        upsample_rate: int = 16,
        *,
        grid: int = 100,
    ) -> None:
        grid = positive_int(type(self).__name__, "grid", grid)
        super().__init__(bins, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, upsample_rate)
        self.grid = grid


class PerChannelMSEObserver(_MSERange, PerChannelHistogramObserverBase):
    """Per-channel ranges minimising each channel's quantization MSE (weights); one histogram per channel."""

    def __init__(
        self,
        bins: int = 512,
        ch_axis: int = 0,
        dtype: DTypeLike = dtypes.uint8,
        qscheme: QSchemeLike = dtypes.per_channel_affine,
        reduce_range: bool = False,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
        factory_kwargs: Optional[dict[str, Any]] = None,
        eps: float = DEFAULT_EPS,
        is_dynamic: bool = False,
        upsample_rate: int = 16,
        *,
        grid: int = 100,
    ) -> None:
        grid = positive_int(type(self).__name__, "grid", grid)
        super().__init__(
            bins, ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, upsample_rate
        )
        self.grid = grid

    def _check_spec(self, spec: QuantSpec) -> None:
        super()._check_spec(spec)
        if spec.qscheme is QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS:
            raise ConfigError(
                f"{type(self).__name__} searches zero-inclusive ranges and does not support "
                f"{spec.qscheme.value}; use per_channel_affine or per_channel_symmetric, or "
                "PerChannelPercentileObserver / PerChannelMinMaxObserver for float qparams"
            )
