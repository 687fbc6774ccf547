"""Per-tensor observers that record like the core HistogramObserver and choose the range by another rule.

The histogram (``bins`` counts over the running ``[min_val, max_val]``,
re-binned when the range grows) is the core's, so it scales to calibration
runs of any length at fixed memory; subclasses replace only the range search.
"""

from __future__ import annotations

import abc

from torch import Tensor

from qcore.errors import ObserverError
from qcore.observers.histogram import HistogramObserver

from qcore_observers_extra.validation import require_data

__all__ = ["HistogramRangeObserver"]


class HistogramRangeObserver(HistogramObserver):
    """A HistogramObserver whose qparams cover the range :meth:`_select_ranges` picks from its histogram."""

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        name = type(self).__name__
        require_data(name, self.min_val, self.max_val)
        if self.histogram.numel() != self.bins:
            raise ObserverError(
                f"{name} has a histogram of {self.histogram.numel()} bins but was built with bins={self.bins}; "
                "load state dicts only into an observer with the same bins"
            )
        lo, hi = self._select_ranges(
            self.histogram.double().unsqueeze(0), self.min_val.double().reshape(1), self.max_val.double().reshape(1)
        )
        return self._calculate_qparams(lo[0].to(self.min_val.dtype), hi[0].to(self.max_val.dtype))

    @abc.abstractmethod
    def _select_ranges(self, hist: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """The (min, max) to quantize with, from float64 histograms ``(1, bins)`` over ``[lo, hi]`` (shape ``(1,)``)."""
