"""QuantSpec: what a quantized tensor looks like (dtype, scheme, range, axis), checked at construction."""

from __future__ import annotations

from typing import Any, Optional

import attrs
import torch

from qcore import dtypes
from qcore.dtypes import QDType, QScheme
from qcore.errors import ConfigError

# torch.ao's floor on scale: keeps 1/scale finite and the grid non-degenerate.
DEFAULT_EPS = float(torch.finfo(torch.float32).eps)


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


@attrs.frozen
class QuantSpec:
    """How one tensor is quantized.

    ``quant_min``/``quant_max`` default to the dtype's full range, halved when
    ``reduce_range`` is set (fbgemm on CPUs without VNNI needs 7-bit activations
    so its int16 accumulation cannot saturate).
    """

    dtype: QDType = attrs.field(default=dtypes.uint8, converter=dtypes.qdtype)
    qscheme: QScheme = attrs.field(default=QScheme.PER_TENSOR_AFFINE, converter=dtypes.qscheme)
    quant_min: Optional[int] = attrs.field(default=None, converter=_optional_int)
    quant_max: Optional[int] = attrs.field(default=None, converter=_optional_int)
    ch_axis: int = attrs.field(default=0, converter=int)
    reduce_range: bool = attrs.field(default=False, converter=bool)
    is_dynamic: bool = attrs.field(default=False, converter=bool)
    eps: float = attrs.field(default=DEFAULT_EPS, converter=float)

    def __attrs_post_init__(self) -> None:
        d = self.dtype
        if d.is_float:
            if self.qscheme.is_per_channel:
                raise ConfigError(f"{d.name} is not an integer dtype and cannot use {self.qscheme.value}; use per_tensor_affine or an integer dtype")
            return
        if (self.quant_min is None) != (self.quant_max is None):
            raise ConfigError("set both quant_min and quant_max, or neither")
        if self.quant_min is not None:
            if self.quant_min > self.quant_max:
                raise ConfigError(f"quant_min ({self.quant_min}) is greater than quant_max ({self.quant_max}); swap them")
            if not self.quant_min <= 0 <= self.quant_max:
                raise ConfigError(f"quant_min/quant_max ({self.quant_min}, {self.quant_max}) must include 0 so that zero is exact")
            if self.quant_min < d.quant_min or self.quant_max > d.quant_max:
                raise ConfigError(
                    f"quant_min/quant_max ({self.quant_min}, {self.quant_max}) fall outside {d.name}'s range "
                    f"({d.quant_min}, {d.quant_max}); narrow them or choose a wider dtype"
                )
        if self.eps <= 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")

    @property
    def qrange(self) -> tuple[int, int]:
        """The integer range actually used, as torch.ao's ``calculate_qmin_qmax`` computes it.

        ``reduce_range`` halves a custom range and the 8-bit default ranges; the
        int32 and 4-bit defaults are never reduced (torch.ao does the same, and
        qparams must match it bit for bit).
        """
        d = self.dtype
        if d.is_float:
            raise ConfigError(f"{d.name} has no integer range")
        if self.quant_min is not None:
            lo, hi = self.quant_min, self.quant_max
            return (lo // 2, hi // 2) if self.reduce_range else (lo, hi)
        if self.reduce_range and d.bits == 8:
            return d.reduced_range()
        return d.quant_min, d.quant_max

    @property
    def is_per_channel(self) -> bool:
        return self.qscheme.is_per_channel

    @property
    def is_symmetric(self) -> bool:
        return self.qscheme.is_symmetric

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (dtype and qscheme by name)."""
        out = attrs.asdict(self)
        out["dtype"] = self.dtype.name
        out["qscheme"] = self.qscheme.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantSpec":
        return cls(**data)
