"""Entropy (KL-divergence) calibration, as TensorRT's int8 entropy calibrator does it.

The observer keeps a histogram of ``|x|`` over ``[0, amax]`` (``bins=2048``).
For every candidate threshold ``i`` bins wide (``i`` from the number of
quantized levels up to ``bins``):

* the reference distribution P is ``hist[:i]`` with everything beyond the
  threshold (the outliers) folded into its last bin;
* the candidate Q merges ``hist[:i]`` into ``levels`` quantization bins and
  expands each back over the source bins that were non-empty, evenly;
* zeros in P and Q are smoothed (``eps`` counts moved onto them from the
  non-zero bins), and the divergence is ``KL(P || Q)``.

The threshold with the least divergence (the widest among ties) wins. As in
NVIDIA's pytorch-quantization calibrator, bin 0 is replaced by bin 1 first, so
a spike of exact zeros (ReLU outputs), which quantize without error, does not
pull the threshold down.

Levels: ``(quant_max - quant_min + 1) // 2`` for symmetric schemes and for
affine schemes on data with negative values (128 for int8, as TensorRT); the
whole range ``quant_max - quant_min + 1`` for affine schemes on non-negative
data (uint8 over ``[0, threshold]``). Affine qparams then cover the observed
range clipped to ``[-threshold, threshold]``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError
from qcore.observers.histogram import HistogramObserver
from qcore.qparams import quant_range
from qcore.quant_spec import DEFAULT_EPS

from qcore_observers_extra.validation import positive_int

__all__ = ["EntropyObserver", "kl_divergences", "entropy_threshold_bins"]

# Elements per chunk of the (candidates x bins) matrices.
_CHUNK = 1 << 20


def _smooth(counts: Tensor, valid: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Give each empty valid bin ``eps`` counts taken evenly from the non-empty ones; also say which rows broke."""
    zero = valid & (counts == 0)
    nonzero = valid & (counts != 0)
    n_zero = zero.sum(1, keepdim=True).to(counts.dtype)
    n_nonzero = nonzero.sum(1, keepdim=True).to(counts.dtype)
    taken = eps * n_zero / n_nonzero.clamp(min=1)
    smoothed = counts + eps * zero - taken * nonzero
    broken = (n_nonzero.squeeze(1) == 0) | ((smoothed <= 0) & valid).any(1)
    return smoothed, broken


def kl_divergences(hist: Tensor, candidates: Tensor, levels: int, eps: float = 1e-4) -> Tensor:
    """``KL(P_i || Q_i)`` for each candidate width ``i`` (in bins) of the histogram ``hist`` (1-d, float64).

    Candidates whose smoothed distributions are not positive get ``inf``.
    """
    bins = hist.numel()
    total = hist.sum()
    csum = hist.cumsum(0)
    j = torch.arange(bins, device=hist.device)
    nonzero = hist > 0
    out = torch.empty(candidates.numel(), dtype=hist.dtype, device=hist.device)
    per_chunk = max(1, _CHUNK // bins)
    for start in range(0, candidates.numel(), per_chunk):
        width = candidates[start : start + per_chunk].unsqueeze(1)  # (n, 1)
        n = width.shape[0]
        valid = j.unsqueeze(0) < width
        # Source bin j of a candidate i bins wide falls in level floor(j * levels / i); bins past i go to a spare level.
        level = torch.div(j * levels, width, rounding_mode="floor")
        level = torch.where(valid, level, torch.full_like(level, levels))
        kept = torch.where(valid, hist.expand(n, bins), torch.zeros((), dtype=hist.dtype, device=hist.device))
        level_sum = torch.zeros(n, levels + 1, dtype=hist.dtype, device=hist.device).scatter_add_(1, level, kept)
        level_nonzero = torch.zeros_like(level_sum).scatter_add_(1, level, (valid & nonzero).to(hist.dtype))
        expanded = level_sum.gather(1, level) / level_nonzero.gather(1, level).clamp(min=1)
        q = torch.where(valid & nonzero, expanded, torch.zeros_like(expanded))
        outliers = (total - csum[width.squeeze(1) - 1]).unsqueeze(1)
        p = kept.scatter_add(1, width - 1, outliers)
        p, p_broken = _smooth(p, valid, eps)
        q, q_broken = _smooth(q, valid, eps)
        p = p / torch.where(valid, p, torch.zeros_like(p)).sum(1, keepdim=True)
        q = q / torch.where(valid, q, torch.zeros_like(q)).sum(1, keepdim=True)
        terms = torch.where(valid, p * torch.log(torch.where(valid, p / q, torch.ones_like(p))), torch.zeros_like(p))
        divergence = terms.sum(1)
        out[start : start + n] = torch.where(p_broken | q_broken, torch.full_like(divergence, float("inf")), divergence)
    return out


def entropy_threshold_bins(hist: Tensor, levels: int, start_bin: Optional[int] = None, stride: int = 1, eps: float = 1e-4) -> int:
    """The number of histogram bins (from 0) below the KL-optimal threshold of ``hist`` (1-d counts of ``|x|``)."""
    bins = hist.numel()
    h = hist.to(torch.float64).clone()
    if bins > 1:
        h[0] = h[1]
    if h.sum() <= 0:
        return bins
    first = min(bins, max(1, levels if start_bin is None else start_bin))
    candidates = torch.arange(first, bins + 1, stride, device=h.device)
    if int(candidates[-1]) != bins:
        candidates = torch.cat([candidates, torch.tensor([bins], device=h.device)])
    divergence = kl_divergences(h, candidates, levels, eps)
    best = divergence.min()
    if not torch.isfinite(best):
        return bins
    # The widest of the best candidates.
    index = int(torch.nonzero(divergence == best).max())
    return int(candidates[index])


class EntropyObserver(HistogramObserver):
    """Per-tensor KL-divergence calibration (TensorRT's entropy calibrator) over a ``bins``-bin ``|x|`` histogram.

    ``start_bin`` (default: the number of quantized levels) and ``stride``
    select the candidate thresholds; ``smoothing`` is the count moved onto
    empty bins. ``histogram`` holds counts of ``|x|`` over ``[0, amax]`` with
    ``amax = max(-min_val, max_val)``. TensorRT's own setting is
    ``dtype=int8, qscheme=per_tensor_symmetric``; the default (uint8, affine)
    matches the core observers.
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
        start_bin: Optional[int] = None,
        stride: int = 1,
        smoothing: float = 1e-4,
    ) -> None:
        name = type(self).__name__
        if start_bin is not None:
            start_bin = positive_int(name, "start_bin", start_bin)
        stride = positive_int(name, "stride", stride)
        smoothing = float(smoothing)
        if not 0.0 < smoothing < 1.0:
            raise ConfigError(f"{name}: smoothing must be in (0, 1), got {smoothing}; 1e-4 is TensorRT's choice")
        super().__init__(bins, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, upsample_rate)
        self.start_bin = start_bin
        self.stride = stride
        self.smoothing = smoothing

    def _abs_histogram(self, x: Tensor, amax: Tensor) -> Tensor:
        if float(amax) == 0.0:
            hist = torch.zeros_like(self.histogram)
            hist[0] = x.numel()
            return hist
        return torch.histc(x.abs(), self.bins, min=0.0, max=float(amax)).to(self.histogram.device)

    def _record(self, x: Tensor, x_min: Tensor, x_max: Tensor) -> None:
        if self._empty():
            self.histogram.copy_(self._abs_histogram(x, torch.max(-x_min, x_max)))
        else:
            old_amax = torch.max(-self.min_val, self.max_val)
            amax = torch.max(old_amax, torch.max(-x_min, x_max))
            update = self._abs_histogram(x, amax)
            if bool(amax == old_amax):
                self.histogram.add_(update)
            else:
                zero = torch.zeros_like(amax)
                self.histogram.copy_(self._combine_histograms(self.histogram, zero, old_amax, update, zero, amax))
            x_min, x_max = torch.min(self.min_val, x_min), torch.max(self.max_val, x_max)
        self.min_val.copy_(x_min)
        self.max_val.copy_(x_max)

    @property
    def levels(self) -> int:
        """Quantized levels the threshold range is divided into (see the module docstring)."""
        quant_min, quant_max = quant_range(self.spec)
        if self.spec.is_symmetric or not bool(self.min_val >= 0):
            return (quant_max - quant_min + 1) // 2
        return quant_max - quant_min + 1

    def threshold(self) -> Tensor:
        """The KL-optimal clipping threshold on ``|x|``."""
        self._require_histogram()
        amax = torch.max(-self.min_val, self.max_val)
        kept = entropy_threshold_bins(self.histogram, self.levels, self.start_bin, self.stride, self.smoothing)
        return amax * (kept / self.bins)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """qparams for the observed range clipped to ``[-threshold, threshold]``."""
        threshold = self.threshold()
        return self._calculate_qparams(torch.max(self.min_val, -threshold), torch.min(self.max_val, threshold))

    def extra_repr(self) -> str:
        return f"start_bin={self.start_bin}, stride={self.stride}, smoothing={self.smoothing}, {super().extra_repr()}"
