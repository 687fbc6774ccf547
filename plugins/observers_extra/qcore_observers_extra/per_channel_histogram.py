"""Per-channel histograms: one ``bins``-bin histogram per slice along ``ch_axis``, over that slice's running range.

The per-channel observers of this plugin (percentile, MSE) share this
recording; they differ only in how they pick a range from the histograms.
Growing ranges re-bin the old counts the way the core HistogramObserver does
(each old bin split into ``upsample_rate`` parts, each part dropped into the
new bin holding its midpoint), for all channels at once.
"""

from __future__ import annotations

import abc
from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.observers.per_channel import PerChannelObserverBase
from qcore.quant_spec import DEFAULT_EPS

from qcore_observers_extra.validation import positive_int, require_data

__all__ = ["PerChannelHistogramObserverBase", "histogram_rows", "rebin_rows"]

# Elements per chunk when re-binning (channels x bins x upsample_rate).
_CHUNK = 1 << 22


def histogram_rows(rows: Tensor, lo: Tensor, hi: Tensor, bins: int) -> Tensor:
    """``(C, bins)`` counts of each row of ``rows`` over its own ``[lo[c], hi[c]]`` (torch.histc's bin rule).

    A row whose range is empty (``lo == hi``) puts all its values in bin 0.
    """
    channels = rows.shape[0]
    span = (hi - lo).unsqueeze(1)
    scaled = (rows - lo.unsqueeze(1)) * bins / torch.where(span > 0, span, torch.ones_like(span))
    index = scaled.floor().clamp_(0, bins - 1).to(torch.int64)
    index = torch.where(span > 0, index, torch.zeros_like(index))
    flat = index + torch.arange(channels, device=rows.device).unsqueeze(1) * bins
    counts = torch.bincount(flat.reshape(-1), minlength=channels * bins)
    return counts.reshape(channels, bins).to(rows.dtype)


def rebin_rows(hist: Tensor, lo: Tensor, hi: Tensor, new_lo: Tensor, new_hi: Tensor, upsample_rate: int) -> Tensor:
    """Each row of ``hist`` (over ``[lo, hi]``) moved onto the wider ``[new_lo, new_hi]`` with the same bin count.

    Works on a few channels at a time so that memory stays bounded for wide layers.
    """
    channels, bins = hist.shape
    steps = (torch.arange(bins * upsample_rate, device=hist.device, dtype=hist.dtype) + 0.5) / (bins * upsample_rate)
    per_chunk = max(1, _CHUNK // (bins * upsample_rate))
    out = []
    for start in range(0, channels, per_chunk):
        rows = slice(start, start + per_chunk)
        parts = hist[rows].repeat_interleave(upsample_rate, dim=1) / upsample_rate
        midpoints = lo[rows].unsqueeze(1) + (hi[rows] - lo[rows]).unsqueeze(1) * steps
        out.append(_scatter_rows(parts, midpoints, new_lo[rows], new_hi[rows], bins))
    return torch.cat(out) if out else hist.clone()


def _scatter_rows(weights: Tensor, points: Tensor, lo: Tensor, hi: Tensor, bins: int) -> Tensor:
    channels = weights.shape[0]
    span = (hi - lo).unsqueeze(1)
    scaled = (points - lo.unsqueeze(1)) * bins / torch.where(span > 0, span, torch.ones_like(span))
    index = torch.where(span > 0, scaled.floor().clamp_(0, bins - 1), torch.zeros_like(scaled)).to(torch.int64)
    flat = index + torch.arange(channels, device=weights.device).unsqueeze(1) * bins
    out = torch.zeros(channels * bins, dtype=weights.dtype, device=weights.device)
    out.index_add_(0, flat.reshape(-1), weights.reshape(-1))
    return out.reshape(channels, bins)


class PerChannelHistogramObserverBase(PerChannelObserverBase):
    """Records a histogram per channel; subclasses turn the histograms into one range per channel.

    ``min_val``/``max_val`` (one value per channel) and ``histogram``
    (channels x bins) are empty until the first input; loading a state dict
    resizes them.
    """

    _channel_buffers = ("histogram", "min_val", "max_val")

    histogram: Tensor

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
    ) -> None:
        name = type(self).__name__
        bins = positive_int(name, "bins", bins)
        upsample_rate = positive_int(name, "upsample_rate", upsample_rate)
        super().__init__(
            dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, ch_axis=ch_axis
        )
        kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.bins = bins
        self.upsample_rate = upsample_rate
        self.register_buffer("histogram", torch.zeros(0, bins, **kwargs))
        self.register_buffer("min_val", torch.tensor([], **kwargs))
        self.register_buffer("max_val", torch.tensor([], **kwargs))

    def forward(self, x_orig: Tensor) -> Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach()
        rows = self._channel_rows(x)
        cur_min, cur_max = torch.aminmax(rows, dim=1)
        self._require_finite(x, cur_min, cur_max)
        if not self._has_channels(cur_min):
            new_min, new_max = cur_min, cur_max
            hist = torch.zeros(rows.shape[0], self.bins, dtype=self.histogram.dtype, device=rows.device)
        else:
            new_min, new_max = torch.min(self.min_val, cur_min), torch.max(self.max_val, cur_max)
            hist = self.histogram
            if not (torch.equal(new_min, self.min_val) and torch.equal(new_max, self.max_val)):
                hist = rebin_rows(hist, self.min_val, self.max_val, new_min, new_max, self.upsample_rate)
        hist = hist + histogram_rows(rows, new_min, new_max, self.bins).to(hist.dtype)
        self._store(histogram=hist, min_val=new_min, max_val=new_max)
        return x_orig

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """One (scale, zero_point) per channel, for the ranges :meth:`_select_ranges` picks."""
        require_data(type(self).__name__, self.min_val, self.max_val)
        lo, hi = self._select_ranges(self.histogram.double(), self.min_val.double(), self.max_val.double())
        return self._calculate_qparams(lo.to(self.min_val.dtype), hi.to(self.max_val.dtype))

    @abc.abstractmethod
    def _select_ranges(self, hist: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The (min, max) per channel to quantize with, from the float64 histograms over ``[lo, hi]``."""

    def reset_min_max_vals(self) -> None:
        """Forget what was observed (and the channel count)."""
        super().reset_min_max_vals()
        self.histogram.resize_(0, self.bins)

    def extra_repr(self) -> str:
        return f"bins={self.bins}, {self._spec_repr()}, channels={self.min_val.numel()}"

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        hist = state_dict.get(prefix + "histogram")
        if isinstance(hist, Tensor) and (hist.dim() != 2 or hist.shape[1] != self.bins):
            error_msgs.append(
                f"{type(self).__name__} was built with bins={self.bins} but the state dict's histogram has shape "
                f"{tuple(hist.shape)}; construct it with bins={hist.shape[-1]}"
            )
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
