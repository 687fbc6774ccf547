"""QConfigs for weight-only quantization: integer weights (int8, int4, groupwise int4), float activations."""

from __future__ import annotations

from typing import Optional

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError
from qcore.observers import PerChannelMinMaxObserver, default_placeholder_observer
from qcore.qconfig import QConfig
from qcore.nn.quantized.weight_only.observer import GroupwiseMinMaxObserver

__all__ = ["weight_only_qconfig", "weight_only_int8_qconfig", "weight_only_int4_qconfig"]


def weight_only_qconfig(dtype: DTypeLike = dtypes.int8, group_size: Optional[int] = None, symmetric: bool = True) -> QConfig:
    """Weights per output channel (or per ``group_size`` weights of a row) in ``dtype``; activations stay float32.

    ``dtype`` is int8/uint8 or int4/uint4 (4-bit weights are packed two per byte).
    """
    d = dtypes.qdtype(dtype)
    if d not in (dtypes.int8, dtypes.uint8, dtypes.int4, dtypes.uint4):
        raise ConfigError(f"weight_only_qconfig: weights are int8, uint8, int4 or uint4, not {d.name}")
    qscheme = dtypes.per_channel_symmetric if symmetric else dtypes.per_channel_affine
    if group_size is not None:
        weight = GroupwiseMinMaxObserver.with_args(group_size=int(group_size), dtype=d, qscheme=qscheme)
    else:
        weight = PerChannelMinMaxObserver.with_args(ch_axis=0, dtype=d, qscheme=qscheme)
    return QConfig(activation=default_placeholder_observer, weight=weight)


#: int8 weights, one symmetric scale per output channel.
weight_only_int8_qconfig = weight_only_qconfig(dtypes.int8)
#: int4 weights (packed two per byte), one symmetric scale per output channel.
weight_only_int4_qconfig = weight_only_qconfig(dtypes.int4)
