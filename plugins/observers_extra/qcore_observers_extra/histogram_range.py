"""Per-tensor observers that record like the core HistogramObserver and choose the range by another rule.

The histogram (``bins`` counts over the running ``[min_val, max_val]``,
re-binned when the range grows) is the core's, so it scales to calibration
runs of any length at fixed memory; subclasses replace only the range search.
"""

from __future__ import annotations

import abc

from torch import Tensor

from qcore.observers.histogram import HistogramObserver

__all__ = ["HistogramRangeObserver"]


class HistogramRangeObserver(HistogramObserver):
    """A HistogramObserver whose qparams cover the range :meth:`_select_ranges` picks from its histogram."""

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        self._require_histogram()
        lo, hi = self._select_ranges(
            self.histogram.double().unsqueeze(0), self.min_val.double().reshape(1), self.max_val.double().reshape(1)
        )
        return self._calculate_qparams(lo[0].to(self.min_val.dtype), hi[0].to(self.max_val.dtype))

    @abc.abstractmethod
    def _select_ranges(self, hist: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The (min, max) to quantize with, from float64 histograms ``(1, bins)`` over ``[lo, hi]`` (shape ``(1,)``)."""
