"""What a qconfig asks of a dynamically quantized module: the weight dtype and the activation quantization.

Dynamic modules quantize each activation from its own min/max at run time, so
the activation observer is never run; it only says which dtype the activations
are quantized to (uint8 by default, int8 allowed) and, for a dynamic observer
with a custom ``quant_min``/``quant_max``, which range. ``reduce_range``
(halving that range, fbgemm's guard against int16 overflow) follows the
active backend: on, as torch.ao's dynamic modules always pass it, except where
the backend's kernels use the full range (qnnpack ignores the flag in torch.ao).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs
from torch import nn

from qcore import dtypes
from qcore.dtypes import QDType
from qcore.errors import ConfigError
from qcore.factory import Factory
from qcore.nn.quantized.weight_only.storage import weight_dtype_of

__all__ = ["DynamicQuantSettings", "dynamic_settings_from", "default_reduce_range", "DEFAULT_REDUCE_RANGE"]

#: torch.ao's dynamic modules (fbgemm) always quantize activations with the halved range.
DEFAULT_REDUCE_RANGE = True

_WEIGHT_DTYPES = (dtypes.int8, dtypes.float16)


def default_reduce_range() -> bool:
    """Whether the active backend wants 7-bit dynamic activations (fbgemm and reference: yes, as torch.ao; qnnpack: no)."""
    from qcore.backend_selection import get_backend_description

    return get_backend_description().dynamic_reduce_range


@attrs.frozen
class DynamicQuantSettings:
    """Weight dtype (int8 or float16), the activation range dynamic quantization uses, and per tensor or per token."""

    weight_dtype: QDType = attrs.field(default=dtypes.int8, converter=dtypes.qdtype)
    act_dtype: QDType = attrs.field(default=dtypes.uint8, converter=dtypes.qdtype)
    act_quant_min: Optional[int] = None
    act_quant_max: Optional[int] = None
    reduce_range: bool = DEFAULT_REDUCE_RANGE
    per_token: bool = attrs.field(default=False, converter=bool)

    def __attrs_post_init__(self) -> None:
        if self.weight_dtype not in _WEIGHT_DTYPES:
            raise ConfigError(
                f"dynamic quantization stores int8 or float16 weights, not {self.weight_dtype.name}; "
                "for int4 or uint8 weights with float activations use qcore.nn.quantized.weight_only"
            )
        if self.act_dtype not in (dtypes.uint8, dtypes.int8):
            raise ConfigError(
                f"dynamic quantization quantizes activations to uint8 or int8, not {self.act_dtype.name}; "
                "use qcore.default_dynamic_qconfig (or a weight-only module for float activations)"
            )
        lo, hi = self.quant_range
        if not self.act_dtype.quant_min <= lo < hi <= self.act_dtype.quant_max:
            raise ConfigError(
                f"dynamic activation range [{lo}, {hi}] does not fit {self.act_dtype.name}'s "
                f"[{self.act_dtype.quant_min}, {self.act_dtype.quant_max}]"
            )
        if self.per_token:
            self._check_per_token()

    def _check_per_token(self) -> None:
        what = "per-token dynamic quantization"
        if self.weight_dtype is not dtypes.int8:
            raise ConfigError(
                f"{what} needs int8 weights, not {self.weight_dtype.name}; use qcore.per_token_dynamic_qconfig "
                "(or float16_dynamic_qconfig without per_token)"
            )
        if self.act_dtype is not dtypes.uint8 or self.quant_range != (0, 255):
            lo, hi = self.quant_range
            raise ConfigError(
                f"{what} quantizes activations to uint8 over the full [0, 255], not {self.act_dtype.name} [{lo}, {hi}]; "
                "use qcore.per_token_dynamic_quant_observer"
            )
        if self.reduce_range:
            raise ConfigError(
                f"{what} always uses the full 8 bits: reduce_range=True (halving the range for fbgemm's per-tensor "
                "kernels) does not apply; pass reduce_range=False"
            )

    @property
    def quant_range(self) -> tuple[int, int]:
        """The activation range before ``reduce_range`` halves it."""
        lo = self.act_dtype.quant_min if self.act_quant_min is None else int(self.act_quant_min)
        hi = self.act_dtype.quant_max if self.act_quant_max is None else int(self.act_quant_max)
        return lo, hi


def _qconfig_of(mod: nn.Module, owner: str) -> Any:
    if not hasattr(mod, "qconfig"):
        raise ConfigError(
            f"{owner}.from_float: the {type(mod).__name__} has no qconfig; set mod.qconfig = qcore.default_dynamic_qconfig "
            "(or per_channel_dynamic_qconfig / float16_dynamic_qconfig), or use qcore.quantize_dynamic"
        )
    if mod.qconfig is None:
        from qcore.qconfig import default_dynamic_qconfig

        return default_dynamic_qconfig
    return mod.qconfig


def dynamic_settings_from(mod: nn.Module, owner: str, reduce_range: Optional[bool] = None) -> tuple[DynamicQuantSettings, Factory]:
    """The settings ``mod.qconfig`` asks for, and the weight observer factory (one fresh observer per weight).

    An activation observer with ``per_token=True`` asks for per-token
    activations (``reduce_range`` then defaults to False).
    ``qconfig = None`` means :data:`qcore.default_dynamic_qconfig`, as in torch.ao.
    A module carrying ``weight_fake_quant`` (QAT) is the caller's business.
    """
    qconfig = _qconfig_of(mod, owner)
    weight_factory = qconfig.weight
    weight_dtype = weight_dtype_of(weight_factory(), owner)
    if weight_dtype not in _WEIGHT_DTYPES:
        raise ConfigError(
            f"{owner}.from_float: dynamic quantization needs an int8 or float16 weight observer, the qconfig's gives "
            f"{weight_dtype.name}; use qcore.default_dynamic_qconfig, per_channel_dynamic_qconfig or float16_dynamic_qconfig"
        )
    act = qconfig.activation()
    per_token = bool(getattr(act, "per_token", False))
    if weight_dtype is dtypes.float16:
        if per_token:
            raise ConfigError(
                f"{owner}.from_float: the qconfig asks for per-token activations with float16 weights; per-token "
                "dynamic quantization needs int8 weights (use qcore.per_token_dynamic_qconfig)"
            )
        return DynamicQuantSettings(weight_dtype), weight_factory
    act_dtype = weight_dtype_of(act, owner)
    if act_dtype not in (dtypes.uint8, dtypes.int8):
        raise ConfigError(
            f"{owner}.from_float: int8 dynamic quantization quantizes activations to uint8 or int8, the qconfig's activation "
            f"observer gives {act_dtype.name}; use qcore.default_dynamic_qconfig, or qcore.nn.quantized.weight_only for float activations"
        )
    spec = getattr(act, "spec", None)
    lo = hi = None
    if spec is not None and spec.is_dynamic and spec.quant_min is not None:
        lo, hi = spec.quant_min, spec.quant_max
    if reduce_range is not None:
        rr = bool(reduce_range)
    elif per_token:
        rr = False  # per token always uses the full range, whatever the backend's per-tensor default
    else:
        rr = default_reduce_range() or bool(getattr(spec, "reduce_range", False))
    try:
        settings = DynamicQuantSettings(weight_dtype, act_dtype, lo, hi, rr, per_token)
    except ConfigError as exc:
        raise ConfigError(f"{owner}.from_float: {exc}") from None
    return settings, weight_factory
