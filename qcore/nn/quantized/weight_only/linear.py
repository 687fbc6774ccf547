"""Weight-only quantized Linear: int8 or int4 weights (int4 packed two per byte), float activations in and out.

The weight is stored quantized per output channel (or per tensor, or in
groups of ``group_size`` along the input dimension) and the linear runs in
float32 on the exactly dequantized weight; activations are never quantized.

Memory versus speed (``cache_dequantized``): False (the default) keeps only
the integers resident (int8: 1/4 of the float32 weight, int4: 1/8, plus one
float64 scale and zero point per channel or group) and dequantizes the whole
weight on every forward, one elementwise pass over it, small next to the
matmul for batches of more than a few rows. True also keeps the float32
weight: forward costs what the float module costs, memory is 1.25x (int8) or
1.125x (int4) the float module's. Outputs are identical either way.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError
from qcore.qtensor import quantize_per_channel
from qcore.nn.quantized.dynamic.linear import check_float_input
from qcore.nn.quantized.weight_only.storage import QuantizedWeightStorage, quantize_weight, weight_dtype_of

__all__ = ["Linear"]

_WEIGHT_DTYPES = (dtypes.int8, dtypes.uint8, dtypes.int4, dtypes.uint4)


class Linear(QuantizedWeightStorage):
    """Linear with int8 / int4 weights and float activations (``group_size`` > 0: groupwise, 4-bit or 8-bit)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        dtype: DTypeLike = dtypes.int8,
        *,
        group_size: Optional[int] = None,
        cache_dequantized: bool = False,
    ) -> None:
        super().__init__()
        d = dtypes.qdtype(dtype)
        if d not in _WEIGHT_DTYPES:
            raise ConfigError(f"weight_only.Linear: weights are int8, uint8, int4 or uint4, not {d.name}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if group_size is not None and (int(group_size) < 1 or self.in_features % int(group_size)):
            raise ConfigError(
                f"weight_only.Linear: group_size {group_size} must be a positive divisor of in_features={self.in_features}"
            )
        self._init_weight((self.out_features, self.in_features), d, bias_, cache_dequantized=cache_dequantized)
        if group_size is not None:
            groups = self.in_features // int(group_size)
            zero = max(d.quant_min, 0)
            self.set_groupwise_weight(
                self._int_weight(), torch.ones(self.out_features, groups), torch.full((self.out_features, groups), zero),
                int(group_size), d, dtypes.per_channel_affine,
            )

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            check_float_input(self, x)
        return F.linear(x.to(torch.float32), self.dequantized_weight(), self._bias).to(x.dtype)

    def _get_name(self) -> str:
        return "WeightOnlyQuantizedLinear"

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}, {self._weight_repr()}"
        if self._bias is None:
            text += ", bias=False"
        if self.cache_dequantized:
            text += ", cache_dequantized=True"
        return text

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False, *, cache_dequantized: bool = False) -> "Linear":
        """Quantize a float ``nn.Linear``'s weight with ``mod.qconfig.weight()`` (or a QAT ``weight_fake_quant``).

        ``qconfig = None`` means :data:`weight_only_int8_qconfig`. A
        :class:`GroupwiseMinMaxObserver` gives groupwise weights.
        """
        owner = "weight_only.Linear"
        if not isinstance(mod, nn.Linear):
            raise ConfigError(f"{owner}.from_float expects an nn.Linear, got {type(mod).__name__}")
        observer = getattr(mod, "weight_fake_quant", None)
        if observer is None:
            if not hasattr(mod, "qconfig"):
                raise ConfigError(
                    f"{owner}.from_float: the Linear has no qconfig; set mod.qconfig = "
                    "qcore.nn.quantized.weight_only.weight_only_int8_qconfig (or weight_only_int4_qconfig / weight_only_qconfig(...))"
                )
            from qcore.nn.quantized.weight_only.qconfig import weight_only_int8_qconfig

            qconfig = mod.qconfig if mod.qconfig is not None else weight_only_int8_qconfig
            observer = qconfig.weight()
            observer(mod.weight.detach())
        d = weight_dtype_of(observer, owner)
        if d not in _WEIGHT_DTYPES:
            raise ConfigError(f"{owner}.from_float: the weight observer gives {d.name}; weight-only weights are int8, uint8, int4 or uint4")
        qscheme = dtypes.qscheme(observer.qscheme)
        group_size = getattr(observer, "group_size", None)
        qlinear = cls(mod.in_features, mod.out_features, mod.bias is not None, d, group_size=group_size, cache_dequantized=cache_dequantized)
        if group_size is not None:
            scale, zero_point = observer.calculate_qparams()
            zp = zero_point.to(torch.float32) if zero_point.is_floating_point() else zero_point.to(torch.int64)
            rows = quantize_per_channel(mod.weight.detach().float().reshape(-1, group_size), scale.to(torch.float64), zp, 0, d)
            groups = mod.in_features // group_size
            qlinear.set_groupwise_weight(
                rows.int_repr().reshape(mod.out_features, mod.in_features), scale.reshape(mod.out_features, groups),
                zp.reshape(mod.out_features, groups), group_size, d, qscheme,
            )
            qlinear._set_bias(mod.bias)
            qlinear._refresh()
            return qlinear
        if qscheme.is_per_channel and int(getattr(observer, "ch_axis", 0)) != 0:
            raise ConfigError(f"{owner}.from_float: per-channel weights must be quantized along the output channels (ch_axis=0)")
        qlinear.set_weight_bias(quantize_weight(mod.weight, observer, owner), mod.bias)
        return qlinear

    def weight_bytes(self) -> int:
        """Bytes the stored weight and its qparams take (not the bias or a cached float copy)."""
        total = self._qweight.numel() * self._qweight.element_size()
        for name in ("weight_scale", "weight_zero_point"):
            t: Any = getattr(self, name)
            if t is not None:
                total += t.numel() * t.element_size()
        return total
