"""qnnpack's default qconfigs: torch.ao's qnnpack defaults (full 8-bit activations, per-tensor weights)."""

from __future__ import annotations

import qcore
from qcore.fake_quant import defaults as fq
from qcore.observers import defaults as obs

default_qconfig = qcore.QConfig(
    activation=qcore.HistogramObserver.with_args(reduce_range=False),
    weight=obs.default_weight_observer,
)

default_qat_qconfig = qcore.QConfig(
    activation=qcore.FusedMovingAvgObsFakeQuantize.with_args(
        observer=qcore.MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=False
    ),
    weight=fq.default_fused_wt_fake_quant,
)

default_dynamic_qconfig = qcore.default_dynamic_qconfig
