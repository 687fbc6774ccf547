"""Percentile calibration: the range runs from a low to a high percentile of everything observed.

The percentiles are read off the observer's histogram (linear within a bin),
so memory stays fixed however long calibration runs; the answer is within
one bin width, ``(max - min) / bins``, of the exact quantile of the data seen.
Percentiles are taken of the signed values; the symmetric qschemes then use
the larger magnitude of the two ends.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError
from qcore.quant_spec import DEFAULT_EPS

from qcore_observers_extra.histogram_range import HistogramRangeObserver
from qcore_observers_extra.per_channel_histogram import PerChannelHistogramObserverBase
from qcore_observers_extra.validation import percent

__all__ = ["PercentileObserver", "PerChannelPercentileObserver", "histogram_quantile"]


def histogram_quantile(hist: Tensor, lo: Tensor, hi: Tensor, q: float) -> Tensor:
    """The ``q``-quantile (``q`` in [0, 1]) of each row of ``hist`` (C x bins over ``[lo, hi]``), linear within a bin."""
    bins = hist.shape[1]
    csum = hist.cumsum(1)
    target = (q * hist.sum(1)).unsqueeze(1)
    k = torch.searchsorted(csum, target, side="left").clamp_(max=bins - 1)
    before = torch.where(k > 0, csum.gather(1, (k - 1).clamp(min=0)), torch.zeros_like(target))
    count = hist.gather(1, k)
    frac = torch.where(count > 0, (target - before) / torch.where(count > 0, count, torch.ones_like(count)), count)
    position = (k.to(hist.dtype) + frac.clamp(0, 1)).squeeze(1)
    return lo + (hi - lo) / bins * position


def _percentiles(
    owner: str, percentile: float, min_percentile: Optional[float], max_percentile: Optional[float]
) -> tuple[float, float]:
    """(low, high) in percent: ``max_percentile`` defaults to ``percentile``, ``min_percentile`` to ``100 - percentile``."""
    high = percent(owner, "max_percentile", percentile if max_percentile is None else max_percentile)
    low = percent(owner, "min_percentile", 100.0 - high if min_percentile is None else min_percentile)
    if low >= high:
        raise ConfigError(
            f"{owner}: min_percentile ({low}) must be below max_percentile ({high}); "
            "e.g. percentile=99.99 keeps the range from the 0.01th to the 99.99th percentile"
        )
    return low, high


class _PercentileRange:
    """The range rule both percentile observers share: the two percentiles of the histogram(s)."""

    min_percentile: float
    max_percentile: float

    def _select_ranges(self, hist: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        return (
            histogram_quantile(hist, lo, hi, self.min_percentile / 100.0),
            histogram_quantile(hist, lo, hi, self.max_percentile / 100.0),
        )

    def extra_repr(self) -> str:
        return f"min_percentile={self.min_percentile}, max_percentile={self.max_percentile}, {super().extra_repr()}"  # type: ignore[misc]


class PercentileObserver(_PercentileRange, HistogramRangeObserver):
    """Per-tensor range from the ``min_percentile``-th to the ``max_percentile``-th percentile of the data.

    ``percentile=99.99`` (the default) means 0.01 to 99.99; set
    ``min_percentile``/``max_percentile`` to choose the two ends separately
    (``min_percentile=0`` keeps the minimum). Other arguments are
    HistogramObserver's.
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
        percentile: float = 99.99,
        min_percentile: Optional[float] = None,
        max_percentile: Optional[float] = None,
    ) -> None:
        low, high = _percentiles(type(self).__name__, percentile, min_percentile, max_percentile)
        super().__init__(bins, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, upsample_rate)
        self.min_percentile = low
        self.max_percentile = high


class PerChannelPercentileObserver(_PercentileRange, PerChannelHistogramObserverBase):
    """Per-channel percentile ranges (weights): one histogram of ``bins`` bins per slice along ``ch_axis``."""

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
        percentile: float = 99.99,
        min_percentile: Optional[float] = None,
        max_percentile: Optional[float] = None,
    ) -> None:
        low, high = _percentiles(type(self).__name__, percentile, min_percentile, max_percentile)
        super().__init__(
            bins, ch_axis, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, upsample_rate
        )
        self.min_percentile = low
        self.max_percentile = high
