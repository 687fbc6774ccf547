"""TensorRT's default qconfigs: symmetric int8 everywhere (zero point 0), per-channel weights.

TensorRT's explicit quantization only accepts symmetric scales, and uses the
narrow weight range [-127, 127].
"""

from __future__ import annotations

import torch

import qcore
from qcore.fake_quant import defaults as fq
from qcore.observers import defaults as obs

default_qconfig = qcore.QConfig(
    activation=qcore.HistogramObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    weight=obs.per_channel_weight_observer_range_neg_127_to_127,
)

default_qat_qconfig = qcore.QConfig(
    activation=qcore.FakeQuantize.with_args(
        observer=qcore.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
    ),
    weight=fq.fused_per_channel_wt_fake_quant_range_neg_127_to_127,
)
