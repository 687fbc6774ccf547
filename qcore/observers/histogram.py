"""HistogramObserver: picks the clipping range that minimises the L2 quantization error.

It keeps a running histogram of its inputs over their running range (re-binning
the old counts when the range grows), then searches for the sub-range whose
quantization minimises the expected squared error, so a few outliers do not
stretch the grid. Numerics follow torch.ao's HistogramObserver bit for bit; the
search loop runs on Python floats (rounded to float32 where torch.ao compares
float32 tensors) instead of one tensor operation per step.
"""

from __future__ import annotations

import bisect
import struct
from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.errors import ConfigError, ObserverError, UncalibratedError
from qcore.observers.base import UniformQuantizationObserverBase
from qcore.quant_spec import DEFAULT_EPS

__all__ = ["HistogramObserver"]

_STEP = 1e-5  # quantile granularity of the range search


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32, as torch rounds a Python scalar compared with a float32 tensor."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return value


def _l2_norm(delta_begin: Tensor, delta_end: Tensor, density: Tensor) -> Tensor:
    """Squared error of values spread with ``density`` over [begin, end] around a bin centre: density * (e^3 - b^3) / 3."""
    return density * ((delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3)


class HistogramObserver(UniformQuantizationObserverBase):
    """Records a ``bins``-bin histogram of its inputs; qparams cover the L2-optimal sub-range.

    ``upsample_rate`` sub-divides old bins when the range grows, to spread their
    counts over the new bins more faithfully.
    """

    per_channel = False
    supports_dynamic = False

    histogram: Tensor
    min_val: Tensor
    max_val: Tensor

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
    ) -> None:
        name = type(self).__name__
        bins = _positive_int(name, "bins", bins)
        upsample_rate = _positive_int(name, "upsample_rate", upsample_rate)
        super().__init__(dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic)
        kwargs = torch.nn.factory_kwargs(factory_kwargs)
        self.bins = bins
        self.upsample_rate = upsample_rate
        self.register_buffer("histogram", torch.zeros(bins, **kwargs))
        self.register_buffer("min_val", torch.tensor(float("inf"), **kwargs))
        self.register_buffer("max_val", torch.tensor(float("-inf"), **kwargs))

    @property
    def dst_nbins(self) -> int:
        """Levels of the quantized grid the error is estimated for (2**bits, as torch.ao)."""
        return 2**self.dtype.bits

    # --- recording -------------------------------------------------------------------------

    def forward(self, x_orig: Tensor) -> Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().to(self.min_val.dtype)
        x_min, x_max = torch.aminmax(x)
        self._require_finite(x, x_min, x_max)
        self._record(x, x_min, x_max)
        return x_orig

    def _empty(self) -> bool:
        """True until the first input sets the range."""
        return bool((self.min_val == float("inf")) | (self.max_val == float("-inf")))

    def _record(self, x: Tensor, x_min: Tensor, x_max: Tensor) -> None:
        """Add ``x`` (finite, with its min and max) to the histogram, widening the range and re-binning as needed."""
        if self._empty():
            self.min_val.copy_(x_min)
            self.max_val.copy_(x_max)
            self.histogram.copy_(torch.histc(x, self.bins, min=float(x_min), max=float(x_max)))
            return
        cur_min, cur_max = self.min_val, self.max_val
        new_min, new_max = torch.min(cur_min, x_min), torch.max(cur_max, x_max)
        update = torch.histc(x, self.bins, min=float(new_min), max=float(new_max)).to(self.histogram.device)
        if bool((new_min == cur_min) & (new_max == cur_max)):
            self.histogram.copy_(self.histogram + update)
            return
        combined = self._combine_histograms(self.histogram, cur_min, cur_max, update, new_min, new_max)
        self.histogram.copy_(combined)
        self.min_val.copy_(new_min)
        self.max_val.copy_(new_max)

    def _combine_histograms(
        self, orig_hist: Tensor, orig_min: Tensor, orig_max: Tensor, update_hist: Tensor, update_min: Tensor, update_max: Tensor
    ) -> Tensor:
        """``update_hist`` (binned over the new, wider range) plus the old counts re-binned into that range."""
        if bool(orig_min == orig_max):
            # Every old value equals orig_min: they all fall in one new bin.
            moved = torch.histc(orig_min, bins=self.bins, min=float(update_min), max=float(update_max)) * torch.sum(orig_hist)
            return moved + update_hist
        return update_hist + self._upscale_histogram(orig_hist, orig_min, orig_max, update_min, update_max)

    def _upscale_histogram(
        self, histogram: Tensor, orig_min: Tensor, orig_max: Tensor, update_min: Tensor, update_max: Tensor
    ) -> Tensor:
        """Split each old bin into ``upsample_rate`` equal parts and drop each part's mass at its midpoint's new bin."""
        rate, bins = self.upsample_rate, self.bins
        parts = histogram.repeat_interleave(rate) / rate
        part_width = (orig_max - orig_min) / (bins * rate)
        midpoints = (
            torch.linspace(orig_min, orig_max, bins * rate + 1, device=orig_min.device)[:-1].to(histogram.device)
            + 0.5 * part_width
        )
        edges = torch.linspace(update_min, update_max, bins + 1, device=update_min.device).to(histogram.device)
        # Float error can put a midpoint just outside the new range: keep it in the edge bins.
        target = (torch.bucketize(midpoints, edges, right=True) - 1).clamp_(0, bins - 1)
        return torch.bincount(target, weights=parts, minlength=bins)

    # --- qparams -------------------------------------------------------------------------

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """qparams for the sub-range found by :meth:`_non_linear_param_search`."""
        self._require_histogram()
        new_min, new_max = self._non_linear_param_search()
        return self._calculate_qparams(new_min, new_max)

    def _require_histogram(self) -> None:
        """Raise unless data was recorded into a histogram of ``bins`` bins (before choosing a range from it)."""
        name = type(self).__name__
        if bool((self.min_val == float("inf")) & (self.max_val == float("-inf"))):
            raise UncalibratedError(
                f"{name} saw no data; run calibration (pass representative inputs through the prepared model) "
                "before asking for qparams"
            )
        if self.histogram.numel() != self.bins:
            raise ObserverError(
                f"{name} has a histogram of {self.histogram.numel()} bins but was built with bins={self.bins}; "
                "load state dicts only into an observer with the same bins"
            )

    def _non_linear_param_search(self) -> tuple[Tensor, Tensor]:
        """The (min, max) whose quantization has the least L2 error, trimming quantiles from either end.

        Each step moves whichever end gains more bins by trimming a further 1e-5
        of the mass; the search stops when the estimated error starts growing.
        """
        bins = self.bins
        bin_width = (self.max_val - self.min_val) / bins
        total = torch.sum(self.histogram).item()
        csum = torch.cumsum(self.histogram, dim=0).tolist()
        monotone = all(a <= b for a, b in zip(csum, csum[1:]))
        error = _QuantizationError(self)

        alpha, beta = 0.0, 1.0
        start_bin, end_bin = 0, bins - 1
        norm_min = float("inf")
        while alpha < beta:
            next_alpha = alpha + _STEP
            next_beta = beta - _STEP
            low = _float32(next_alpha * total)
            high = _float32(next_beta * total)
            if monotone:
                left = bisect.bisect_left(csum, low, start_bin, end_bin)
                right = max(start_bin, bisect.bisect_right(csum, high, start_bin, end_bin + 1) - 1)
            else:
                left = start_bin
                while left < end_bin and csum[left] < low:
                    left += 1
                right = end_bin
                while right > start_bin and csum[right] > high:
                    right -= 1

            next_start_bin, next_end_bin = start_bin, end_bin
            if (left - start_bin) > (end_bin - right):
                next_start_bin = left
                alpha = next_alpha
            else:
                next_end_bin = right
                beta = next_beta
            if next_start_bin == start_bin and next_end_bin == end_bin:
                continue
            norm = error(next_start_bin, next_end_bin)
            if norm > norm_min:
                break
            norm_min = norm
            start_bin, end_bin = next_start_bin, next_end_bin

        new_min = self.min_val + bin_width * start_bin
        new_max = self.min_val + bin_width * (end_bin + 1)
        return new_min, new_max

    def _compute_quantization_error(self, next_start_bin: int, next_end_bin: int) -> float:
        """Estimated L2 error of quantizing the histogram with the range of bins [start, end]."""
        return _QuantizationError(self)(next_start_bin, next_end_bin)

    # --- housekeeping --------------------------------------------------------------------

    def reset_min_max_vals(self) -> None:
        """Forget what was observed."""
        self.min_val.fill_(float("inf"))
        self.max_val.fill_(float("-inf"))
        self.histogram.zero_()

    def extra_repr(self) -> str:
        return f"bins={self.bins}, {self._spec_repr()}, min_val={self.min_val}, max_val={self.max_val}"

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
        if isinstance(hist, Tensor) and hist.shape != self.histogram.shape:
            error_msgs.append(
                f"{type(self).__name__} was built with bins={self.bins} but the state dict's histogram has "
                f"{hist.numel()} bins; construct it with bins={hist.numel()}"
            )
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class _QuantizationError:
    """The L2 error estimate for candidate ranges of one observer's current histogram.

    Values in each source bin are taken as uniformly spread; the candidate range
    [start_bin, end_bin + 1) is split into ``dst_nbins`` quantization bins, and
    each source bin's squared distance to the centres of the quantization bins it
    overlaps is integrated (torch.ao's computation, operation for operation).
    """

    def __init__(self, observer: HistogramObserver) -> None:
        self.bins = observer.bins
        self.dst_nbins = observer.dst_nbins
        self.histogram = observer.histogram
        self.bin_width = (observer.max_val.item() - observer.min_val.item()) / self.bins
        device = self.histogram.device
        self.src_bin = torch.arange(self.bins, device=device)
        self.density = self.histogram / self.bin_width if self.bin_width != 0.0 else None
        self.ones = torch.ones(self.bins, device=device)

    def __call__(self, next_start_bin: int, next_end_bin: int) -> float:
        bin_width = self.bin_width
        dst_bin_width = bin_width * (next_end_bin - next_start_bin + 1) / self.dst_nbins
        if dst_bin_width == 0.0:
            return 0.0
        density = self.density
        top = self.dst_nbins - 1
        # Distances from the start of the first quantization bin to each source bin's ends.
        src_bin_begin = (self.src_bin - next_start_bin) * bin_width
        src_bin_end = src_bin_begin + bin_width
        # The quantization bins holding each source bin's two ends.
        dst_bin_of_begin = torch.clamp(torch.div(src_bin_begin, dst_bin_width, rounding_mode="floor"), 0, top)
        dst_bin_of_begin_center = (dst_bin_of_begin + 0.5) * dst_bin_width
        dst_bin_of_end = torch.clamp(torch.div(src_bin_end, dst_bin_width, rounding_mode="floor"), 0, top)

        norm = torch.zeros(self.bins, device=self.histogram.device)
        # The part of the source bin inside its first quantization bin ...
        delta_begin = src_bin_begin - dst_bin_of_begin_center
        norm += _l2_norm(delta_begin, self.ones * (dst_bin_width / 2), density)
        # ... the quantization bins it covers whole ...
        norm += (dst_bin_of_end - dst_bin_of_begin - 1) * _l2_norm(
            torch.tensor(-dst_bin_width / 2), torch.tensor(dst_bin_width / 2), density
        )
        # ... and the part inside its last quantization bin.
        dst_bin_of_end_center = dst_bin_of_end * dst_bin_width + dst_bin_width / 2
        delta_end = src_bin_end - dst_bin_of_end_center
        norm += _l2_norm(torch.tensor(-dst_bin_width / 2), delta_end, density)
        return norm.sum().item()
