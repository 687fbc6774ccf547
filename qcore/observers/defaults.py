"""torch.ao's named default observers, as Factory values built from qcore's own dtypes and qschemes."""

from __future__ import annotations

from qcore import dtypes
from qcore.observers.fixed_qparams import FixedQParamsObserver
from qcore.observers.histogram import HistogramObserver
from qcore.observers.minmax import MinMaxObserver
from qcore.observers.passthrough import NoopObserver, PlaceholderObserver, RecordingObserver, ReuseInputObserver
from qcore.observers.per_channel import PerChannelMinMaxObserver

__all__ = [
    "default_observer",
    "default_placeholder_observer",
    "default_debug_observer",
    "default_weight_observer",
    "weight_observer_range_neg_127_to_127",
    "default_histogram_observer",
    "default_per_channel_weight_observer",
    "per_channel_weight_observer_range_neg_127_to_127",
    "default_dynamic_quant_observer",
    "per_token_dynamic_quant_observer",
    "default_float_qparams_observer",
    "default_float_qparams_observer_4bit",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_fixed_qparams_range_0to1_observer",
    "default_symmetric_fixed_qparams_observer",
    "default_affine_fixed_qparams_observer",
    "default_reuse_input_observer",
    "default_noop_observer",
]

#: Activations in 0..127 (7 bits leave fbgemm's int16 accumulation headroom).
default_observer = MinMaxObserver.with_args(quant_min=0, quant_max=127)
#: For float16 and other casts that need no qparams.
default_placeholder_observer = PlaceholderObserver.with_args()
#: Debug-only: records every tensor.
default_debug_observer = RecordingObserver.with_args()
#: Symmetric int8 weights.
default_weight_observer = MinMaxObserver.with_args(dtype=dtypes.int8, qscheme=dtypes.per_tensor_symmetric)
#: Symmetric int8 weights in [-127, 127] (excluding -128).
weight_observer_range_neg_127_to_127 = MinMaxObserver.with_args(
    dtype=dtypes.int8, qscheme=dtypes.per_tensor_symmetric, quant_min=-127, quant_max=127, eps=2**-12
)
#: Activations in 0..127 with the L2-optimal clipping range (PTQ).
default_histogram_observer = HistogramObserver.with_args(quant_min=0, quant_max=127)
#: Symmetric int8 weights, one scale per output channel.
default_per_channel_weight_observer = PerChannelMinMaxObserver.with_args(
    dtype=dtypes.int8, qscheme=dtypes.per_channel_symmetric
)
#: Per-channel symmetric int8 weights in [-127, 127].
per_channel_weight_observer_range_neg_127_to_127 = PerChannelMinMaxObserver.with_args(
    dtype=dtypes.int8, qscheme=dtypes.per_channel_symmetric, quant_min=-127, quant_max=127, eps=2**-12
)
#: Dynamic quantization: uint8 activations, qparams computed per input at run time.
default_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=dtypes.uint8, quant_min=0, quant_max=255, is_dynamic=True
)
#: Dynamic quantization per token: uint8 over [0, 255], one scale and zero point per row of the input, at run time.
per_token_dynamic_quant_observer = PlaceholderObserver.with_args(
    dtype=dtypes.uint8, quant_min=0, quant_max=255, is_dynamic=True, per_token=True
)
#: Per-row float scale and offset (embedding weights).
default_float_qparams_observer = PerChannelMinMaxObserver.with_args(
    dtype=dtypes.uint8, qscheme=dtypes.per_channel_affine_float_qparams, ch_axis=0
)
#: Per-row float scale and offset, 4-bit values.
default_float_qparams_observer_4bit = PerChannelMinMaxObserver.with_args(
    dtype=dtypes.uint4, qscheme=dtypes.per_channel_affine_float_qparams, ch_axis=0
)
#: Outputs in [-1, 1) (tanh).
default_fixed_qparams_range_neg1to1_observer = FixedQParamsObserver.with_args(
    scale=2.0 / 256.0, zero_point=128, dtype=dtypes.uint8, quant_min=0, quant_max=255
)
#: Outputs in [0, 1) (sigmoid, softmax).
default_fixed_qparams_range_0to1_observer = FixedQParamsObserver.with_args(
    scale=1.0 / 256.0, zero_point=0, dtype=dtypes.uint8, quant_min=0, quant_max=255
)
# torch.ao's older names for the two above.
default_symmetric_fixed_qparams_observer = default_fixed_qparams_range_neg1to1_observer
default_affine_fixed_qparams_observer = default_fixed_qparams_range_0to1_observer
#: Ops like reshape: reuse the input's observer.
default_reuse_input_observer = ReuseInputObserver.with_args()
#: float16 pass-through (torch.ao has no named default for NoopObserver; this is its class default).
default_noop_observer = NoopObserver.with_args()
