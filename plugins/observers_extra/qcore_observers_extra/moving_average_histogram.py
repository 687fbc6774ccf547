"""MovingAverageHistogramObserver: an exponential moving average of histograms, for long calibration runs.

Each batch's histogram is blended in as ``hist = (1 - c) * hist + c * batch``
(over the running range; old counts are re-binned when it grows, as the core
HistogramObserver does), so early batches, and the outliers they held, fade
instead of weighing on the result forever. The range is then chosen as the
core HistogramObserver chooses it, minimising the L2 quantization error of the
averaged histogram, which trims tails whose weight has decayed.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from qcore import dtypes
from qcore.dtypes import DTypeLike, QSchemeLike
from qcore.observers.histogram import HistogramObserver
from qcore.observers.minmax import check_averaging_constant
from qcore.quant_spec import DEFAULT_EPS

__all__ = ["MovingAverageHistogramObserver"]


class MovingAverageHistogramObserver(HistogramObserver):
    """A HistogramObserver whose histogram is the moving average (constant ``averaging_constant``) of batch histograms.

    The first batch sets the histogram; ``averaging_constant=1`` keeps only
    the latest batch's counts (over the range of everything seen).
    """

    def __init__(
        self,
        averaging_constant: float = 0.01,
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
        constant = check_averaging_constant(type(self).__name__, averaging_constant)
        super().__init__(bins, dtype, qscheme, reduce_range, quant_min, quant_max, factory_kwargs, eps, is_dynamic, upsample_rate)
        self.averaging_constant = constant

    def _record(self, x: Tensor, x_min: Tensor, x_max: Tensor) -> None:
        if self._empty():
            super()._record(x, x_min, x_max)
            return
        cur_min, cur_max = self.min_val, self.max_val
        new_min, new_max = torch.min(cur_min, x_min), torch.max(cur_max, x_max)
        update = torch.histc(x, self.bins, min=float(new_min), max=float(new_max)).to(self.histogram.device)
        if bool((new_min == cur_min) & (new_max == cur_max)):
            old = self.histogram
        else:
            old = self._combine_histograms(self.histogram, cur_min, cur_max, torch.zeros_like(update), new_min, new_max)
        c = self.averaging_constant
        self.histogram.copy_((1 - c) * old + c * update)
        self.min_val.copy_(new_min)
        self.max_val.copy_(new_max)

    def extra_repr(self) -> str:
        return f"averaging_constant={self.averaging_constant}, {super().extra_repr()}"
