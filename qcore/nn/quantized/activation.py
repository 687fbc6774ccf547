"""Statically quantized activations (torch.ao.nn.quantized.ReLU6, Hardswish, ...): QTensor in, QTensor out.

Each computes the reference numerics: dequantize the input, run the float
activation in float32, quantize with the module's output qparams (``scale``,
``zero_point``, output dtype). Sigmoid, Tanh, Hardsigmoid and Softmax have
*fixed* output qparams, known from the function's range (see :func:`fixed_qparams`).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import affine, dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.base import QuantizedModule, _output_dtype, module_label, output_qparams_from
from qcore.nn.quantized.scripting import FloatModuleTwin
from qcore.qtensor import QTensor

__all__ = [
    "ReLU6",
    "Hardswish",
    "ELU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Hardsigmoid",
    "Softmax",
    "fixed_qparams",
]

#: Output range of each fixed-qparams activation: "0to1" (step 1/256 from the lowest
#: integer) or "neg1to1" (step 2/256 centred on the middle integer), as torch's kernels use.
_FIXED_RANGE = {"Sigmoid": "0to1", "Hardsigmoid": "0to1", "Softmax": "0to1", "Tanh": "neg1to1"}


def fixed_qparams(output_range: str, dtype: DTypeLike = dtypes.uint8) -> tuple[float, int]:
    """torch's fixed ``(scale, zero_point)`` for an output in [0, 1) ("0to1") or [-1, 1) ("neg1to1").

    uint8: (1/256, 0) and (2/256, 128); int8: (1/256, -128) and (2/256, 0), as
    ``torch.sigmoid`` / ``torch.tanh`` on quantized tensors choose them.
    """
    d = _output_dtype(dtype, "fixed_qparams")
    if output_range == "0to1":
        return 1.0 / 256.0, d.quant_min
    if output_range == "neg1to1":
        return 2.0 / 256.0, (d.quant_min + d.quant_max + 1) // 2
    raise ConfigError(f"fixed_qparams: output_range must be '0to1' or 'neg1to1', got {output_range!r}")


def _check_float_type(cls: type, mod: Any, float_type: type) -> None:
    if not isinstance(mod, float_type):
        raise ConfigError(
            f"{cls.__name__}.from_float expects an observed torch.nn.{float_type.__name__}, got {type(mod).__name__}"
        )


def _observer(cls: type, mod: nn.Module) -> Any:
    post = getattr(mod, "activation_post_process", None)
    if post is None or isinstance(post, nn.Identity):
        raise ConfigError(
            f"{cls.__name__}.from_float: the {type(mod).__name__} has no activation_post_process (output observer); "
            "prepare the model with a qconfig and calibrate it before converting"
        )
    return post


class _Activation(QuantizedModule):
    """An element-wise (or softmax) float function between a dequantized input and a quantized output."""

    _FLOAT_MODULE: type = nn.Module

    def __init__(self, scale: float, zero_point: int, output_dtype: DTypeLike = dtypes.uint8) -> None:
        QuantizedModule.__init__(self, output_dtype)
        self.set_output_qparams(scale, zero_point)

    def _get_name(self) -> str:
        return "Quantized" + type(self).__name__

    def _float_module(self) -> nn.Module:
        """The float torch module computing exactly :meth:`_float_forward` (scriptable)."""
        raise NotImplementedError

    def _float_forward(self, x: Tensor) -> Tensor:
        return self._float_module()(x)

    def forward(self, x: QTensor) -> QTensor:
        return self._quantize_output(self._float_forward(self._dequantized_input(x)))

    def _params_repr(self) -> str:
        return ""

    def extra_repr(self) -> str:
        params = self._params_repr()
        return f"{params}, {self._output_repr()}" if params else self._output_repr()

    def __prepare_scriptable__(self) -> nn.Module:
        return FloatModuleTwin(self._float_module(), self.scale, self.zero_point, self.quant_min, self.quant_max, source=self)

    @classmethod
    def _from_output_observer(cls, mod: nn.Module, **params: Any) -> Any:
        _check_float_type(cls, mod, cls._FLOAT_MODULE)
        qp = output_qparams_from(_observer(cls, mod), cls.__name__)
        new = cls(qp.scale, qp.zero_point, **params, output_dtype=qp.dtype)
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new


class ReLU6(_Activation):
    """Quantized ReLU6: ``quantize(relu6(x))`` with the output qparams.

    Built with ``scale``/``zero_point`` (as ``from_float`` does, from the output
    observer) it re-quantizes onto that grid. Built without them, as torch.ao's
    ``ReLU6(inplace)``, the output keeps the input's qparams (integers clamped to
    ``[zero_point, q(6)]``); such a module has no TorchScript twin, since the
    twin cannot know the input grid. ``inplace`` is accepted for torch.ao
    compatibility; the result is always a new QTensor.
    """

    _FLOAT_MODULE = nn.ReLU6

    def __init__(
        self,
        inplace: bool = False,
        scale: Optional[float] = None,
        zero_point: Optional[int] = None,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        if (scale is None) != (zero_point is None):
            raise ConfigError("ReLU6: give both scale and zero_point, or neither (the output then keeps the input's qparams)")
        QuantizedModule.__init__(self, output_dtype)
        self.inplace = bool(inplace)
        self.keep_input_qparams = scale is None
        if scale is not None:
            self.set_output_qparams(scale, zero_point)

    def _float_module(self) -> nn.Module:
        return nn.ReLU6()

    def _float_forward(self, x: Tensor) -> Tensor:
        return F.relu6(x)

    def forward(self, x: QTensor) -> QTensor:
        q = self._as_qtensor_input(x)
        if not self.keep_input_qparams:
            return self._quantize_output(F.relu6(q.dequantize()))
        if q.qscheme().is_per_channel:
            raise QuantizationError(
                f"{module_label(self)}: without output qparams the output keeps the input's, which must be per tensor; "
                f"got a {q.qscheme().value} QTensor"
            )
        d = q.qdtype
        out = affine.quantize_affine(F.relu6(q.dequantize()), q.q_scale(), q.q_zero_point(), d.quant_min, d.quant_max, d)
        return QTensor.from_int(out, q.q_scale(), q.q_zero_point(), d)

    def _params_repr(self) -> str:
        return "inplace=True" if self.inplace else ""

    def extra_repr(self) -> str:
        if self.keep_input_qparams:
            return ", ".join(p for p in (self._params_repr(), "output qparams=input's") if p)
        return super().extra_repr()

    def _qcore_extra_state(self) -> dict[str, Any]:
        return {**super()._qcore_extra_state(), "keep_input_qparams": self.keep_input_qparams}

    def _qcore_set_extra_state(self, state: dict[str, Any]) -> None:
        super()._qcore_set_extra_state(state)
        self.keep_input_qparams = bool(state.get("keep_input_qparams", self.keep_input_qparams))

    def __prepare_scriptable__(self) -> nn.Module:
        if self.keep_input_qparams:
            raise QuantizationError(
                f"{module_label(self)} keeps its input's qparams, which a TorchScript twin cannot know; give it output "
                "qparams (ReLU6(scale=..., zero_point=...), or convert a model whose ReLU6 has an output observer)"
            )
        return super().__prepare_scriptable__()

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "ReLU6":
        """Output qparams from ``mod.activation_post_process``; without one, torch.ao's keep-the-input's behaviour."""
        _check_float_type(cls, mod, nn.ReLU6)
        post = getattr(mod, "activation_post_process", None)
        if post is None or isinstance(post, nn.Identity):
            return cls(mod.inplace)
        qp = output_qparams_from(post, cls.__name__)
        new = cls(mod.inplace, qp.scale, qp.zero_point, output_dtype=qp.dtype)
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new


class Hardswish(_Activation):
    """Quantized Hardswish: ``quantize(hardswish(x))`` with the output qparams."""

    _FLOAT_MODULE = nn.Hardswish

    def __init__(self, scale: float, zero_point: int, *, output_dtype: DTypeLike = dtypes.uint8) -> None:
        super().__init__(scale, zero_point, output_dtype)

    def _float_module(self) -> nn.Module:
        return nn.Hardswish()

    def _float_forward(self, x: Tensor) -> Tensor:
        return F.hardswish(x)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Hardswish":
        return cls._from_output_observer(mod)


class ELU(_Activation):
    """Quantized ELU: ``quantize(elu(x, alpha))`` with the output qparams."""

    _FLOAT_MODULE = nn.ELU

    def __init__(self, scale: float, zero_point: int, alpha: float = 1.0, *, output_dtype: DTypeLike = dtypes.uint8) -> None:
        super().__init__(scale, zero_point, output_dtype)
        self.alpha = float(alpha)

    def _float_module(self) -> nn.Module:
        return nn.ELU(self.alpha)

    def _float_forward(self, x: Tensor) -> Tensor:
        return F.elu(x, self.alpha)

    def _params_repr(self) -> str:
        return f"alpha={self.alpha}"

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "ELU":
        _check_float_type(cls, mod, nn.ELU)
        return cls._from_output_observer(mod, alpha=mod.alpha)


class LeakyReLU(_Activation):
    """Quantized LeakyReLU: ``quantize(leaky_relu(x, negative_slope))`` with the output qparams.

    ``inplace`` is accepted for torch.ao compatibility; the result is always a new QTensor.
    """

    _FLOAT_MODULE = nn.LeakyReLU

    def __init__(
        self,
        scale: float,
        zero_point: int,
        negative_slope: float = 1e-2,
        inplace: bool = False,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        super().__init__(scale, zero_point, output_dtype)
        self.negative_slope = float(negative_slope)
        self.inplace = bool(inplace)

    def _float_module(self) -> nn.Module:
        return nn.LeakyReLU(self.negative_slope)

    def _float_forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def _params_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "LeakyReLU":
        _check_float_type(cls, mod, nn.LeakyReLU)
        return cls._from_output_observer(mod, negative_slope=mod.negative_slope, inplace=mod.inplace)


class _FixedQParamsActivation(_Activation):
    """An activation with a known output range, whose output qparams are fixed (:func:`fixed_qparams`).

    ``from_float`` takes the qparams of a ``FixedQParamsObserver`` /
    ``FixedQParamsFakeQuantize`` output observer (the default fixed-qparams
    qconfigs). Any other observer gets a UserWarning and the function's fixed
    qparams for that observer's dtype: these functions' outputs always fill
    the same range, which is what torch.ao's eager kernels assume (its FX flow
    warns the same way).
    """

    def __init__(
        self,
        output_scale: Optional[float] = None,
        output_zero_point: Optional[int] = None,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        if (output_scale is None) != (output_zero_point is None):
            raise ConfigError(f"{type(self).__name__}: give both output_scale and output_zero_point, or neither (fixed qparams)")
        if output_scale is None:
            output_scale, output_zero_point = fixed_qparams(_FIXED_RANGE[type(self).__name__], output_dtype)
        super().__init__(output_scale, output_zero_point, output_dtype)

    @property
    def output_scale(self) -> float:
        """torch.ao's name for the output scale."""
        return float(self.scale)

    @property
    def output_zero_point(self) -> int:
        """torch.ao's name for the output zero point."""
        return int(self.zero_point)

    @classmethod
    def _fixed_from_observer(cls, mod: nn.Module, **params: Any) -> Any:
        _check_float_type(cls, mod, cls._FLOAT_MODULE)
        post = _observer(cls, mod)
        if _has_fixed_qparams(post):
            qp = output_qparams_from(post, cls.__name__)
            scale, zero_point, d = qp.scale, qp.zero_point, qp.dtype
        else:
            d = _output_dtype(getattr(post, "dtype", dtypes.uint8), cls.__name__)
            scale, zero_point = fixed_qparams(_FIXED_RANGE[cls.__name__], d)
            suggestion = "range_neg1to1" if _FIXED_RANGE[cls.__name__] == "neg1to1" else "range_0to1"
            warnings.warn(
                f"{cls.__name__}.from_float: the {type(mod).__name__}'s output observer is a {type(post).__name__}, "
                f"but {cls.__name__} has fixed output qparams; using scale={scale}, zero_point={zero_point} ({d.name}). "
                f"Use qcore.qconfig.default_fixed_qparams_{suggestion}_qconfig (or its _qat_ version) for this module "
                "to silence this warning",
                UserWarning,
                stacklevel=3,
            )
        return cls(**params, output_scale=scale, output_zero_point=zero_point, output_dtype=d)


def _has_fixed_qparams(post: Any) -> bool:
    from qcore.fake_quant.fixed_qparams import FixedQParamsFakeQuantize
    from qcore.observers.fixed_qparams import FixedQParamsObserver

    return isinstance(post, (FixedQParamsObserver, FixedQParamsFakeQuantize))


class Sigmoid(_FixedQParamsActivation):
    """Quantized Sigmoid with fixed output qparams (uint8: scale 1/256, zero point 0)."""

    _FLOAT_MODULE = nn.Sigmoid

    def _float_module(self) -> nn.Module:
        return nn.Sigmoid()

    def _float_forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Sigmoid":
        return cls._fixed_from_observer(mod)


class Hardsigmoid(_FixedQParamsActivation):
    """Quantized Hardsigmoid with fixed output qparams (uint8: scale 1/256, zero point 0)."""

    _FLOAT_MODULE = nn.Hardsigmoid

    def _float_module(self) -> nn.Module:
        return nn.Hardsigmoid()

    def _float_forward(self, x: Tensor) -> Tensor:
        return F.hardsigmoid(x)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Hardsigmoid":
        return cls._fixed_from_observer(mod)


class Tanh(_FixedQParamsActivation):
    """Quantized Tanh with fixed output qparams (uint8: scale 2/256, zero point 128)."""

    _FLOAT_MODULE = nn.Tanh

    def _float_module(self) -> nn.Module:
        return nn.Tanh()

    def _float_forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Tanh":
        return cls._fixed_from_observer(mod)


class Softmax(_FixedQParamsActivation):
    """Quantized Softmax along ``dim`` with fixed output qparams (uint8: scale 1/256, zero point 0).

    ``dim=None`` picks the dimension as ``torch.nn.Softmax`` does (with its warning).
    """

    _FLOAT_MODULE = nn.Softmax

    def __init__(
        self,
        dim: Optional[int] = None,
        scale: Optional[float] = None,
        zero_point: Optional[int] = None,
        *,
        output_scale: Optional[float] = None,
        output_zero_point: Optional[int] = None,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        scale = output_scale if scale is None else scale
        zero_point = output_zero_point if zero_point is None else zero_point
        super().__init__(scale, zero_point, output_dtype=output_dtype)
        self.dim = dim

    def _float_module(self) -> nn.Module:
        return nn.Softmax(self.dim)

    def _float_forward(self, x: Tensor) -> Tensor:
        return nn.Softmax(self.dim)(x)

    def _params_repr(self) -> str:
        return f"dim={self.dim}"

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Softmax":
        _check_float_type(cls, mod, nn.Softmax)
        return cls._fixed_from_observer(mod, dim=mod.dim)


#: {float module: quantized module} for the static mapping table.
STATIC_MAPPINGS: dict[type, type] = {
    nn.ReLU6: ReLU6,
    nn.Hardswish: Hardswish,
    nn.ELU: ELU,
    nn.LeakyReLU: LeakyReLU,
    nn.Sigmoid: Sigmoid,
    nn.Tanh: Tanh,
    nn.Hardsigmoid: Hardsigmoid,
    nn.Softmax: Softmax,
}
