"""fbgemm's default qconfigs: torch.ao's fbgemm/x86 defaults, value for value.

Activations use a 7-bit range (``reduce_range=True``): on AVX2 CPUs without
VNNI fbgemm accumulates uint8 x int8 products in int16, which 8-bit
activations can saturate.
"""

from __future__ import annotations

import qcore
from qcore.fake_quant import defaults as fq
from qcore.observers import defaults as obs

default_qconfig = qcore.QConfig(
    activation=qcore.HistogramObserver.with_args(reduce_range=True),
    weight=obs.default_per_channel_weight_observer,
)

default_qat_qconfig = qcore.QConfig(
    activation=qcore.FusedMovingAvgObsFakeQuantize.with_args(
        observer=qcore.MovingAverageMinMaxObserver, quant_min=0, quant_max=255, reduce_range=True
    ),
    weight=fq.default_fused_per_channel_wt_fake_quant,
)

default_dynamic_qconfig = qcore.default_dynamic_qconfig
