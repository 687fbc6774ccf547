"""Dynamically quantized Linear (and LinearReLU): int8 or float16 weights, float activations in and out.

int8: each input is quantized per tensor from its own min/max (uint8, range
halved by ``reduce_range`` as torch.ao's fbgemm modules do), the linear runs in
float32 on the dequantized input and weight, the result stays float. That is
torch.ao's ``quantized::linear_dynamic`` up to float32 summation order.
float16: the weight is rounded to float16 and the linear runs in float32.

Per token (``per_token=True``, from :data:`qcore.per_token_dynamic_qconfig`):
each row of the input (flattened to ``[-1, in_features]``) is quantized with
its own scale and zero point (uint8, full range), the integer products are
summed exactly and scaled by one fixed float32 epilogue
(:func:`~qcore.nn.quantized.dynamic.functional.linear_dynamic_per_token`).
The weights must be int8 and symmetric (zero points 0), per tensor or per
output channel.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError, QuantizationError
from qcore.qtensor import QTensor
from qcore.nn.quantized.base import module_label
from qcore.nn.quantized.dynamic.functional import linear_dynamic, linear_dynamic_per_token
from qcore.nn.quantized.dynamic.settings import DEFAULT_REDUCE_RANGE, DynamicQuantSettings, dynamic_settings_from
from qcore.nn.quantized.weight_only.storage import QuantizedWeightStorage, quantize_weight

__all__ = ["Linear", "LinearReLU", "check_float_input", "per_token_weight_problem"]


def check_float_input(module: nn.Module, x: Any) -> None:
    """Raise QuantizationError unless ``x`` is a float tensor: dynamic and weight-only modules take float activations."""
    if isinstance(x, QTensor):
        raise QuantizationError(
            f"{module_label(module)} takes float activations and quantizes them itself, but got a quantized tensor (QTensor); "
            "put a DeQuantStub before it (or call x.dequantize())"
        )
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise QuantizationError(f"{module_label(module)} expects a float tensor, got {got}")


class Linear(QuantizedWeightStorage):
    """torch.ao.nn.quantized.dynamic.Linear on the reference backend: float in, float out.

    ``dtype`` is the weight dtype: int8 (``torch.qint8``; per tensor or per
    channel) or float16. ``act_dtype``/``act_quant_min``/``act_quant_max``,
    ``reduce_range`` and ``per_token`` say how each input is quantized (int8
    weights only).
    """

    __jit_unused_properties__ = ["settings"]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_: bool = True,
        dtype: DTypeLike = dtypes.int8,
        *,
        act_dtype: DTypeLike = dtypes.uint8,
        act_quant_min: Optional[int] = None,
        act_quant_max: Optional[int] = None,
        reduce_range: bool = DEFAULT_REDUCE_RANGE,
        per_token: bool = False,
    ) -> None:
        super().__init__()
        try:
            settings = DynamicQuantSettings(dtype, act_dtype, act_quant_min, act_quant_max, reduce_range, per_token)
        except ConfigError as exc:
            raise ConfigError(f"{type(self).__name__}: {exc}") from None
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self._init_weight((self.out_features, self.in_features), settings.weight_dtype, bias_)
        self.apply_settings(settings)

    def apply_settings(self, settings: DynamicQuantSettings) -> None:
        """Set how activations are quantized (the weight dtype is fixed at construction)."""
        if settings.per_token:
            self._check_per_token_weight(type(self).__name__)
        self.act_dtype = settings.act_dtype
        self.act_quant_min, self.act_quant_max = settings.quant_range
        self.reduce_range = bool(settings.reduce_range)
        self.per_token = bool(settings.per_token)

    @property
    def settings(self) -> DynamicQuantSettings:
        return DynamicQuantSettings(
            self.weight_dtype, self.act_dtype, self.act_quant_min, self.act_quant_max, self.reduce_range, self.per_token
        )

    def _check_per_token_weight(self, owner: str) -> None:
        """Raise ConfigError unless the stored weight suits per-token activations."""
        axis = -1 if self.weight_axis is None else int(self.weight_axis)
        zero_points = self.weight_zero_point if self.weight_zero_point is not None else torch.zeros(0)
        problem = per_token_weight_problem(self.weight_dtype, axis, self.group_size, zero_points)
        if problem is not None:
            raise ConfigError(f"{owner}: {problem}")

    def set_weight_bias(self, w: Any, b: Optional[Tensor]) -> None:
        """Store the weight and bias; a per-token module takes only int8 symmetric weights (per tensor or per output channel)."""
        if getattr(self, "per_token", False) and isinstance(w, QTensor):
            per_channel = w.qscheme().is_per_channel
            problem = per_token_weight_problem(
                w.qdtype, w.q_per_channel_axis() if per_channel else -1, 0,
                w.q_per_channel_zero_points() if per_channel else torch.tensor(w.q_zero_point()),
            )
            if problem is not None:
                raise ConfigError(f"{type(self).__name__}.set_weight_bias: {problem}")
        super().set_weight_bias(w, b)

    def forward(self, x: Tensor) -> Tensor:
        return self._linear(x)

    def _linear(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            check_float_input(self, x)
        w_scale = self.weight_scale
        if self.per_token and w_scale is not None:  # (per token implies int8 weights, which have scales)
            if not torch.jit.is_scripting():
                return self._per_token_named(x)
            return linear_dynamic_per_token(x, self._qweight, w_scale, self._bias)
        weight = self.dequantized_weight()
        if self._bits == 16:
            return F.linear(x.to(torch.float32), weight, self._bias).to(x.dtype)
        return linear_dynamic(x, weight, self._bias, self.act_quant_min, self.act_quant_max, self.reduce_range)

    @torch.jit.unused
    def _per_token_named(self, x: Tensor) -> Tensor:
        """The per-token reference, its input errors (NaN, inf) naming this module."""
        try:
            return linear_dynamic_per_token(x, self._qweight, self.weight_scale, self._bias)
        except QuantizationError as exc:
            raise QuantizationError(f"{module_label(self)}: {exc}") from None

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear"

    def extra_repr(self) -> str:
        text = f"in_features={self.in_features}, out_features={self.out_features}, {self._weight_repr()}"
        if self.weight_dtype is not dtypes.float16:
            text += f", act_dtype={self.act_dtype.name}, act_range=[{self.act_quant_min}, {self.act_quant_max}]"
            text += f", reduce_range={self.reduce_range}"
            if self.per_token:
                text += ", per_token=True"
        if self._bias is None:
            text += ", bias=False"
        return text

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        state.update(act_dtype=self.act_dtype.name, act_quant_min=self.act_quant_min, act_quant_max=self.act_quant_max, reduce_range=self.reduce_range)
        if self.per_token:  # written only when set: older checkpoints and readers see the same keys as before
            state["per_token"] = True
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        if "act_dtype" in state:
            settings = DynamicQuantSettings(
                self.weight_dtype, state["act_dtype"], state.get("act_quant_min"), state.get("act_quant_max"),
                bool(state.get("reduce_range", True)), bool(state.get("per_token", False)),
            )
            self.apply_settings(settings)  # torch loads the extra state after the weights: they are checked

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False, *, reduce_range: Optional[bool] = None) -> "Linear":
        """Quantize a float ``nn.Linear`` (or a fused LinearReLU's linear) with ``mod.qconfig``'s weight observer.

        A QAT module's ``weight_fake_quant`` is used as the weight observer.
        ``reduce_range`` overrides the default (True, as torch.ao).
        """
        owner = cls.__name__ if cls is not Linear else "dynamic.Linear"
        linear = _inner_linear(mod, owner)
        settings, weight_factory = dynamic_settings_from(mod, owner, reduce_range)
        observer = getattr(linear, "weight_fake_quant", None)
        if observer is None:
            observer = weight_factory()
            observer(linear.weight.detach())
        elif settings.weight_dtype is dtypes.float16:
            raise ConfigError(f"{owner}.from_float: a QAT module's weight_fake_quant cannot give float16 weights")
        qlinear = cls(linear.in_features, linear.out_features, linear.bias is not None, settings.weight_dtype)
        qlinear.apply_settings(settings)
        qlinear.set_weight_bias(quantize_weight(linear.weight, observer, owner), linear.bias)
        return qlinear


def per_token_weight_problem(weight_dtype: dtypes.QDType, axis: int, group_size: int, zero_points: Tensor) -> Optional[str]:
    """Why a weight cannot serve per-token activations (None when it can): int8, symmetric, per tensor or per row."""
    what = "per-token dynamic quantization needs"
    if weight_dtype is not dtypes.int8:
        return f"{what} int8 weights, not {weight_dtype.name}"
    if group_size > 0:
        return f"{what} weights quantized per tensor or per output channel (axis 0), not in groups"
    if axis > 0:
        return f"{what} weights quantized per tensor or per output channel (axis 0), not along axis {axis}"
    if bool((zero_points != 0).any()):
        return (f"{what} symmetric weights (zero points 0), these have zero points up to "
                f"{int(zero_points.abs().max())}; use a symmetric weight observer (qscheme=torch.per_channel_symmetric, "
                "as qcore.per_token_dynamic_qconfig does)")
    return None


def _inner_linear(mod: nn.Module, owner: str) -> nn.Linear:
    if isinstance(mod, nn.Linear):
        return mod
    if isinstance(mod, nn.Sequential) and len(mod) >= 1 and isinstance(mod[0], nn.Linear):
        return mod[0]  # a fused LinearReLU
    raise ConfigError(f"{owner}.from_float expects an nn.Linear (or a fused LinearReLU), got {type(mod).__name__}")


class LinearReLU(Linear):
    """torch.ao.nn.intrinsic.quantized.dynamic.LinearReLU: the dynamic Linear followed by ReLU."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self._linear(x))

    def _get_name(self) -> str:
        return "DynamicQuantizedLinearReLU"

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False, *, reduce_range: Optional[bool] = None) -> "LinearReLU":
        """Quantize a fused LinearReLU (``nn.Sequential(Linear, ReLU)``) with ``mod.qconfig``."""
        if not (isinstance(mod, nn.Sequential) and len(mod) == 2 and isinstance(mod[1], nn.ReLU)):
            raise ConfigError(f"dynamic.LinearReLU.from_float expects a fused LinearReLU (Linear followed by ReLU), got {type(mod).__name__}")
        return super().from_float(mod, use_precomputed_fake_quant, reduce_range=reduce_range)  # type: ignore[return-value]
