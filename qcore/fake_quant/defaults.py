"""The named fake-quant factories of torch.ao, with the same settings."""

from __future__ import annotations

from qcore import dtypes
from qcore.dtypes import QScheme
from qcore.fake_quant.fake_quantize import FakeQuantize
from qcore.fake_quant.fixed_qparams import FixedQParamsFakeQuantize
from qcore.fake_quant.fused import FusedMovingAvgObsFakeQuantize
from qcore.observers import (
    HistogramObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
)
from qcore.observers.defaults import (
    default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer,
)

__all__ = [
    "default_fake_quant",
    "default_weight_fake_quant",
    "default_dynamic_fake_quant",
    "default_fixed_qparams_range_neg1to1_fake_quant",
    "default_fixed_qparams_range_0to1_fake_quant",
    "default_symmetric_fixed_qparams_fake_quant",
    "default_affine_fixed_qparams_fake_quant",
    "default_per_channel_weight_fake_quant",
    "default_embedding_fake_quant",
    "default_embedding_fake_quant_4bit",
    "default_histogram_fake_quant",
    "default_fused_act_fake_quant",
    "default_fused_wt_fake_quant",
    "default_fused_per_channel_wt_fake_quant",
    "fused_wt_fake_quant_range_neg_127_to_127",
    "fused_per_channel_wt_fake_quant_range_neg_127_to_127",
]

# The value ranges the defaults share.
_UINT8 = {"dtype": dtypes.uint8, "quant_min": 0, "quant_max": 255}
_INT8 = {"dtype": dtypes.int8, "quant_min": -128, "quant_max": 127}
# int8 weights restricted to [-127, 127] (no -128), so negation cannot overflow.
_INT8_NARROW = {"dtype": dtypes.int8, "quant_min": -127, "quant_max": 127, "eps": 2**-12}

_PER_TENSOR = MovingAverageMinMaxObserver
_PER_CHANNEL = MovingAveragePerChannelMinMaxObserver

# Activations: uint8, affine, 7-bit range so fbgemm's int16 accumulation cannot overflow.
default_fake_quant = FakeQuantize.with_args(
    observer=_PER_TENSOR, **_UINT8, qscheme=QScheme.PER_TENSOR_AFFINE, reduce_range=True
)
# Weights: int8, symmetric, per tensor.
default_weight_fake_quant = FakeQuantize.with_args(
    observer=_PER_TENSOR, **_INT8, qscheme=QScheme.PER_TENSOR_SYMMETRIC, reduce_range=False
)
# Placeholder for dynamic quantization: the observer forgets (averaging_constant=1).
default_dynamic_fake_quant = FakeQuantize.with_args(
    observer=_PER_TENSOR, **_UINT8, is_dynamic=True, averaging_constant=1
)

# Outputs of tanh (-1..1) and sigmoid/hardsigmoid (0..1).
default_fixed_qparams_range_neg1to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_neg1to1_observer
)
default_fixed_qparams_range_0to1_fake_quant = FixedQParamsFakeQuantize.with_args(
    observer=default_fixed_qparams_range_0to1_observer
)
# Older torch.ao names of the two above.
default_symmetric_fixed_qparams_fake_quant = default_fixed_qparams_range_neg1to1_fake_quant
default_affine_fixed_qparams_fake_quant = default_fixed_qparams_range_0to1_fake_quant

default_per_channel_weight_fake_quant = FakeQuantize.with_args(
    observer=_PER_CHANNEL, **_INT8, qscheme=QScheme.PER_CHANNEL_SYMMETRIC, reduce_range=False, ch_axis=0
)

# Embedding tables: one float scale and float zero point per row.
default_embedding_fake_quant = FakeQuantize.with_args(
    observer=_PER_CHANNEL, **_UINT8, qscheme=QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS, ch_axis=0, averaging_constant=1
)
default_embedding_fake_quant_4bit = FakeQuantize.with_args(
    observer=_PER_CHANNEL,
    dtype=dtypes.uint4,
    qscheme=QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS,
    ch_axis=0,
    averaging_constant=1,
)

default_histogram_fake_quant = FakeQuantize.with_args(
    observer=HistogramObserver, **_UINT8, qscheme=QScheme.PER_TENSOR_AFFINE, reduce_range=True
)

# Fused versions of the above: the same numerics target, one pass per forward.
default_fused_act_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(observer=_PER_TENSOR, **_UINT8)
default_fused_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=_PER_TENSOR, **_INT8, qscheme=QScheme.PER_TENSOR_SYMMETRIC
)
default_fused_per_channel_wt_fake_quant = FusedMovingAvgObsFakeQuantize.with_args(
    observer=_PER_CHANNEL, **_INT8, qscheme=QScheme.PER_CHANNEL_SYMMETRIC
)
fused_wt_fake_quant_range_neg_127_to_127 = FusedMovingAvgObsFakeQuantize.with_args(
    observer=_PER_TENSOR, **_INT8_NARROW, qscheme=QScheme.PER_TENSOR_SYMMETRIC
)
fused_per_channel_wt_fake_quant_range_neg_127_to_127 = FusedMovingAvgObsFakeQuantize.with_args(
    observer=_PER_CHANNEL, **_INT8_NARROW, qscheme=QScheme.PER_CHANNEL_SYMMETRIC
)
