"""Base classes of qcore's statically quantized modules: QTensor in, QTensor out.

Contract for module authors:

* Subclass :class:`QuantizedModule` (weighted modules also mix in
  :class:`QuantizedWeightMixin`, listed first). Output qparams live in buffers
  ``scale`` (float32, 0-d) and ``zero_point`` (int64, 0-d); the output dtype and
  clamp range in the plain attributes ``dtype`` (a QDType), ``quant_min`` and
  ``quant_max``, saved in ``state_dict`` as ``_extra_state`` (a small JSON-able
  dict). Assigning a number to ``module.scale`` / ``module.zero_point`` works as
  with torch.ao.
* ``from_float`` reads the output observer with :func:`output_qparams_from`
  (or calls ``set_output_qparams_from(mod.activation_post_process)``).
* ``forward``: ``x = self._dequantized_input(x)`` (raises QuantizationError for
  a float input, naming the module), run the float op in float32, return
  ``self._quantize_output(y)``. That is the reference numerics.
* ``__prepare_scriptable__`` returns a twin from :mod:`qcore.nn.quantized.scripting`
  (see there); the default raises a clear error.
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Any, Optional, Union

import attrs
import torch
from torch import Tensor, nn

from qcore import affine, dtypes
from qcore.dtypes import DTypeLike, QDType, QScheme
from qcore.errors import ConfigError, QuantizationError, UncalibratedError, UncalibratedWarning
from qcore.qtensor import QTensor

__all__ = [
    "QuantizedModule",
    "QuantizedWeightMixin",
    "OutputQParams",
    "output_qparams_from",
    "module_label",
]


@attrs.frozen
class OutputQParams:
    """Per-tensor output qparams of a quantized module: the output grid and clamp range."""

    scale: float
    zero_point: int
    dtype: QDType
    quant_min: int
    quant_max: int


def module_label(module: nn.Module) -> str:
    """How errors name a module: its qualified name in the model (set by convert) and class, or the class."""
    cls = _public_class_name(type(module))
    name = getattr(module, "_qcore_name", None)
    return f"{name} ({cls})" if name else cls


def _public_class_name(cls: type) -> str:
    """``qcore.nn.quantized.Linear`` rather than ``qcore.nn.quantized.linear.Linear`` where the package exports it."""
    module = cls.__module__
    package = module.rpartition(".")[0]
    if package:
        try:
            exported = getattr(importlib.import_module(package), cls.__qualname__, None)
        except Exception:
            exported = None
        if exported is cls:
            module = package
    return f"{module}.{cls.__qualname__}"


def _output_dtype(value: DTypeLike, owner: str) -> QDType:
    d = dtypes.qdtype(value)
    if d.is_float or d.bits != 8:
        raise ConfigError(
            f"{owner}: static quantized modules produce uint8 or int8 activations, not {d.name}; "
            "use an activation observer with dtype uint8 (torch.quint8) or int8 (torch.qint8)"
        )
    return d


def output_qparams_from(post: Any, owner: str) -> OutputQParams:
    """The output qparams an observer or fake-quant (``activation_post_process``) calls for.

    The clamp range is the dtype's full range, as torch.ao's quantized kernels
    clamp; the observer's narrower range (``reduce_range``, custom
    ``quant_min``/``quant_max``) only shapes the scale and zero point.
    """
    if post is None:
        raise ConfigError(
            f"{owner}: the module has no activation_post_process (output observer); prepare the model with a qconfig "
            "and calibrate it before converting"
        )
    dtype = getattr(post, "dtype", None)
    if dtype is None:
        raise ConfigError(f"{owner}: {type(post).__name__} has no dtype; expected an observer or fake-quant module")
    d = _output_dtype(dtype, owner)
    try:
        scale, zero_point = post.calculate_qparams()
    except UncalibratedError:
        # The reference doc converts a fresh prepared model and then loads a calibrated state_dict into it.
        warnings.warn(
            f"{owner}: its output observer saw no data, so convert used placeholder qparams "
            "(scale=1.0, zero_point=0); calibrate before convert, or load the state_dict of a calibrated model",
            UncalibratedWarning,
            stacklevel=2,
        )
        scale, zero_point = torch.tensor(1.0), torch.tensor(0 if d.quant_min <= 0 <= d.quant_max else d.quant_min)
    scale = torch.as_tensor(scale)
    zero_point = torch.as_tensor(zero_point)
    if scale.numel() != 1 or zero_point.numel() != 1:
        raise ConfigError(
            f"{owner}: {type(post).__name__} gives {scale.numel()} scales; activations are quantized per tensor, "
            "use a per-tensor activation observer"
        )
    return OutputQParams(float(scale.reshape(())), int(zero_point.reshape(())), d, d.quant_min, d.quant_max)


class QuantizedModule(nn.Module):
    """Base of statically quantized modules: output qparams, input checking, output quantization."""

    scale: Tensor
    zero_point: Tensor
    dtype: QDType
    quant_min: int
    quant_max: int

    def __init__(self, output_dtype: DTypeLike = dtypes.uint8) -> None:
        super().__init__()
        d = _output_dtype(output_dtype, type(self).__name__)
        self.dtype = d
        self.quant_min, self.quant_max = d.quant_min, d.quant_max
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int64))

    # --- output qparams ------------------------------------------------------------------

    def set_output_qparams(
        self,
        scale: Union[float, Tensor],
        zero_point: Union[int, Tensor],
        dtype: Optional[DTypeLike] = None,
        quant_min: Optional[int] = None,
        quant_max: Optional[int] = None,
    ) -> None:
        """Set the output grid; the clamp range defaults to the whole range of ``dtype``."""
        owner = type(self).__name__
        d = self.dtype if dtype is None else _output_dtype(dtype, owner)
        qmin = d.quant_min if quant_min is None else int(quant_min)
        qmax = d.quant_max if quant_max is None else int(quant_max)
        if not d.quant_min <= qmin <= qmax <= d.quant_max:
            raise ConfigError(f"{owner}: output range [{qmin}, {qmax}] does not fit {d.name}'s [{d.quant_min}, {d.quant_max}]")
        s = float(torch.as_tensor(scale).reshape(()))
        if not (math.isfinite(s) and s > 0):
            raise ConfigError(f"{owner}: output scale must be a finite positive number, got {s}")
        zp_value = torch.as_tensor(zero_point).reshape(())
        zp = int(zp_value)
        if zp != float(zp_value) or not qmin <= zp <= qmax:
            raise ConfigError(f"{owner}: output zero_point {zp_value.item()} must be an integer within [{qmin}, {qmax}]")
        self.dtype, self.quant_min, self.quant_max = d, qmin, qmax
        self.scale = s
        self.zero_point = zp

    def set_output_qparams_from(self, post: Any) -> None:
        """Take the output qparams from an observer or fake-quant (``mod.activation_post_process``)."""
        qp = output_qparams_from(post, type(self).__name__)
        self.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)

    def __setattr__(self, name: str, value: Any) -> None:
        # torch.ao modules hold scale/zero_point as Python numbers; accept those (and odd shapes).
        if name in ("scale", "zero_point") and name in self.__dict__.get("_buffers", {}):
            dtype = torch.float32 if name == "scale" else torch.int64
            current = self._buffers[name]
            value = torch.as_tensor(value).detach().reshape(()).to(dtype=dtype, device=current.device if current is not None else None).clone()
        super().__setattr__(name, value)

    # --- forward helpers -----------------------------------------------------------------

    def _as_qtensor_input(self, x: Any) -> QTensor:
        """``x`` if it is a QTensor; a QuantizationError naming this module otherwise."""
        if isinstance(x, QTensor):
            return x
        if isinstance(x, Tensor) and x.is_floating_point():
            raise QuantizationError(
                f"{module_label(self)}: expected a quantized input (QTensor) but got a float tensor; "
                "put a QuantStub (or qcore.quantize_per_tensor) before this module"
            )
        got = f"a {x.dtype} tensor" if isinstance(x, Tensor) else type(x).__name__
        raise QuantizationError(
            f"{module_label(self)}: expected a quantized input (QTensor) but got {got}; "
            "put a QuantStub (or qcore.quantize_per_tensor) before this module"
        )

    def _dequantized_input(self, x: Any) -> Tensor:
        """The float32 values of a quantized input (checked with :meth:`_as_qtensor_input`)."""
        return self._as_qtensor_input(x).dequantize()

    def _quantize_output(self, y: Tensor) -> QTensor:
        """Quantize a float32 result with the module's output qparams."""
        q = affine.quantize_affine(y, self.scale, self.zero_point, self.quant_min, self.quant_max, self.dtype)
        return QTensor.from_int(q, float(self.scale), int(self.zero_point), self.dtype)

    # --- repr, state_dict, scripting -----------------------------------------------------

    def _output_repr(self) -> str:
        text = f"dtype={self.dtype.name}, scale={float(self.scale)}, zero_point={int(self.zero_point)}"
        if (self.quant_min, self.quant_max) != (self.dtype.quant_min, self.dtype.quant_max):
            text += f", quant_min={self.quant_min}, quant_max={self.quant_max}"
        return text

    def extra_repr(self) -> str:
        return self._output_repr()

    def _qcore_extra_state(self) -> dict[str, Any]:
        return {"dtype": self.dtype.name, "quant_min": self.quant_min, "quant_max": self.quant_max}

    def _qcore_set_extra_state(self, state: dict[str, Any]) -> None:
        if "dtype" in state:
            d = _output_dtype(state["dtype"], type(self).__name__)
            self.dtype = d
            self.quant_min = int(state.get("quant_min", d.quant_min))
            self.quant_max = int(state.get("quant_max", d.quant_max))

    def get_extra_state(self) -> dict[str, Any]:
        return self._qcore_extra_state()

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ConfigError(f"{type(self).__name__}: unexpected _extra_state {state!r} in the state dict; expected a dict")
        self._qcore_set_extra_state(state)

    def __prepare_scriptable__(self) -> nn.Module:
        raise QuantizationError(
            f"{module_label(self)} has no TorchScript form; keep the model in eager mode or replace this module"
        )


class QuantizedWeightMixin:
    """Quantized weight and float bias for a module: ``weight()``/``bias()`` methods, torch.ao's API.

    Buffers: ``_qweight`` (integers, saved as state-dict key ``weight``),
    ``weight_scale`` (float64; 0-d per tensor, 1-d per channel),
    ``weight_zero_point`` (int64, or float32 for float qparams, same shape),
    ``weight_axis`` (0-d int64, -1 per tensor) and ``_bias`` (float32 or None,
    saved as ``bias``). Loading a state dict takes the saved shapes, so a
    per-channel module loads into a freshly converted one of any channel count.
    Mix in before :class:`QuantizedModule` and call :meth:`_init_weight` in ``__init__``.
    """

    weight_scale: Tensor
    weight_zero_point: Tensor
    weight_axis: Tensor
    weight_qscheme: QScheme

    _STATE_NAMES = {"weight": "_qweight", "bias": "_bias"}  # state-dict key -> buffer name

    def _init_weight(self, shape: tuple[int, ...], dtype: DTypeLike = dtypes.int8, bias: bool = True) -> None:
        """Register zero weight buffers (per tensor, scale 1) of ``shape`` and, if ``bias``, a zero bias."""
        d = dtypes.qdtype(dtype)
        if d not in (dtypes.int8, dtypes.uint8):
            raise ConfigError(f"{type(self).__name__}: weights are int8 or uint8, not {d.name}")
        zero = max(d.quant_min, 0)
        self.register_buffer("_qweight", torch.full(shape, zero, dtype=d.storage))
        self.register_buffer("weight_scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("weight_zero_point", torch.tensor(zero, dtype=torch.int64))
        self.register_buffer("weight_axis", torch.tensor(-1, dtype=torch.int64))
        self.register_buffer("_bias", torch.zeros(shape[0] if shape else 1, dtype=torch.float32) if bias else None)
        self.weight_qscheme = QScheme.PER_TENSOR_AFFINE

    # --- torch.ao's API -------------------------------------------------------------------

    @property
    def weight_dtype(self) -> QDType:
        return dtypes.uint8 if self._qweight.dtype == torch.uint8 else dtypes.int8

    def weight(self) -> QTensor:
        """The quantized weight as a QTensor."""
        axis = int(self.weight_axis)
        if axis < 0:
            return QTensor.from_int(
                self._qweight, float(self.weight_scale), int(self.weight_zero_point), self.weight_dtype, qscheme=self.weight_qscheme
            )
        return QTensor.from_int(
            self._qweight, self.weight_scale, self.weight_zero_point, self.weight_dtype, axis=axis, qscheme=self.weight_qscheme
        )

    def bias(self) -> Optional[Tensor]:
        """The float bias (None without one)."""
        return self._bias

    def set_weight_bias(self, w: QTensor, b: Optional[Tensor]) -> None:
        """Store a quantized weight (a QTensor, per tensor or per channel) and a float bias."""
        owner = type(self).__name__
        if not isinstance(w, QTensor):
            raise QuantizationError(
                f"{owner}.set_weight_bias: the weight must be a QTensor (qcore.quantize_per_tensor / quantize_per_channel), "
                f"got {type(w).__name__}"
            )
        if w.qdtype not in (dtypes.int8, dtypes.uint8):
            raise QuantizationError(f"{owner}.set_weight_bias: weights are int8 or uint8, got {w.qdtype.name}")
        expected = tuple(self._qweight.shape)
        if tuple(w.shape) != expected:
            raise QuantizationError(f"{owner}.set_weight_bias: weight shape {tuple(w.shape)} does not match the module's {expected}")
        device = self._qweight.device
        self._qweight = w.int_repr().to(device)
        if w.qscheme().is_per_channel:
            self.weight_scale = w.q_per_channel_scales().to(device=device, dtype=torch.float64)
            zps = w.q_per_channel_zero_points()
            self.weight_zero_point = zps.to(device=device, dtype=torch.float32 if zps.is_floating_point() else torch.int64)
            self.weight_axis = torch.tensor(w.q_per_channel_axis(), dtype=torch.int64, device=device)
        else:
            self.weight_scale = torch.tensor(w.q_scale(), dtype=torch.float64, device=device)
            self.weight_zero_point = torch.tensor(w.q_zero_point(), dtype=torch.int64, device=device)
            self.weight_axis = torch.tensor(-1, dtype=torch.int64, device=device)
        self.weight_qscheme = w.qscheme()
        if b is None:
            self._bias = None
        else:
            if not isinstance(b, Tensor) or not b.is_floating_point():
                raise QuantizationError(f"{owner}.set_weight_bias: the bias must be a float tensor or None")
            self._bias = b.detach().to(device=device, dtype=torch.float32).clone()

    def _weight_float(self) -> Tensor:
        """The dequantized float32 weight the reference numerics use."""
        return self.weight().dequantize()

    def _weight_repr(self) -> str:
        text = f"weight_dtype={self.weight_dtype.name}, weight_qscheme={self.weight_qscheme.value}"
        axis = int(self.weight_axis)
        if axis >= 0:
            text += f", weight_axis={axis}"
        else:
            text += f", weight_scale={float(self.weight_scale)}, weight_zero_point={int(self.weight_zero_point)}"
        return text

    # --- state dict: keys weight / bias, shapes taken from what is loaded ---------------------------

    def _qcore_extra_state(self) -> dict[str, Any]:
        parent = getattr(super(), "_qcore_extra_state", None)
        state = dict(parent()) if parent is not None else {}
        state["weight_qscheme"] = self.weight_qscheme.value
        return state

    def _qcore_set_extra_state(self, state: dict[str, Any]) -> None:
        parent = getattr(super(), "_qcore_set_extra_state", None)
        if parent is not None:
            parent(state)
        if "weight_qscheme" in state:
            self.weight_qscheme = dtypes.qscheme(state["weight_qscheme"])

    def get_extra_state(self) -> dict[str, Any]:
        return self._qcore_extra_state()

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ConfigError(f"{type(self).__name__}: unexpected _extra_state {state!r} in the state dict; expected a dict")
        self._qcore_set_extra_state(state)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        # Renamed to the documented keys, in a readable order: weight first, the small dict last.
        order = ("_qweight", "weight_scale", "weight_zero_point", "weight_axis", "_bias", "scale", "zero_point", "_extra_state")
        renames = {buffer: key for key, buffer in self._STATE_NAMES.items()}
        for name in order:
            if prefix + name in destination:
                destination[prefix + renames.get(name, name)] = destination.pop(prefix + name)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        for key, buffer in self._STATE_NAMES.items():
            if prefix + key in state_dict:
                state_dict[prefix + buffer] = state_dict.pop(prefix + key)
        for name in ("_qweight", "weight_scale", "weight_zero_point", "weight_axis", "_bias"):
            value = state_dict.get(prefix + name)
            if not isinstance(value, Tensor):
                continue
            current = self._buffers.get(name)  # type: ignore[attr-defined]
            if current is None or current.shape != value.shape or current.dtype != value.dtype:
                device = current.device if current is not None else self._qweight.device
                self._buffers[name] = torch.empty(value.shape, dtype=value.dtype, device=device)  # type: ignore[attr-defined]
        before = len(missing_keys)
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        renames = {prefix + buffer: prefix + key for key, buffer in self._STATE_NAMES.items()}
        missing_keys[before:] = [renames.get(k, k) for k in missing_keys[before:]]
        axis = int(self.weight_axis)
        if (axis >= 0) != self.weight_qscheme.is_per_channel:
            # The weight's kind changed (per tensor <-> per channel) and no extra state said how.
            self.weight_qscheme = QScheme.PER_CHANNEL_AFFINE if axis >= 0 else QScheme.PER_TENSOR_AFFINE


# --- from_float for weighted modules ------------------------------------------------------------


def quantize_weight(weight: Tensor, post: Any, owner: str) -> QTensor:
    """Quantize a float weight with the qparams of an observer or fake-quant that has seen it.

    Per tensor or per channel (along the observer's ``ch_axis``), symmetric or
    affine; values are clamped to the observer's ``[quant_min, quant_max]``, as
    torch.ao's ``_quantize_weight`` does.
    """
    d = dtypes.qdtype(post.dtype)
    if d not in (dtypes.int8, dtypes.uint8):
        raise ConfigError(
            f"{owner}: weight observer {type(post).__name__} has dtype {d.name}; static modules take int8 "
            "(torch.qint8) or uint8 weights"
        )
    scheme = dtypes.qscheme(post.qscheme)
    scale, zero_point = post.calculate_qparams()
    qmin, qmax = int(post.quant_min), int(post.quant_max)
    w = weight.detach().to(torch.float32)
    if scheme.is_per_channel:
        axis = int(post.ch_axis)
        scale = torch.as_tensor(scale).reshape(-1).to(torch.float64)
        zero_point = torch.as_tensor(zero_point).reshape(-1)
        zero_point = zero_point.to(torch.float32 if zero_point.is_floating_point() else torch.int64)
        q = affine.quantize_affine(w, scale, zero_point, qmin, qmax, d, axis=axis)
        return QTensor.from_int(q, scale, zero_point, d, axis=axis, qscheme=scheme)
    q = affine.quantize_affine(w, scale, zero_point, qmin, qmax, d)
    return QTensor.from_int(q, float(torch.as_tensor(scale).reshape(())), int(torch.as_tensor(zero_point).reshape(())), d, qscheme=scheme)


@attrs.frozen
class ObservedWeighted:
    """What ``from_float`` of a weighted module needs: the float layer, its quantized weight, its bias, the output qparams."""

    layer: nn.Module
    weight: QTensor
    bias: Optional[Tensor]
    output: OutputQParams


def _fold_bn(mod: nn.Module, weight: Tensor, bias: Optional[Tensor], transpose: bool) -> tuple[Tensor, Tensor]:
    """BN statistics folded into a (QAT) conv or linear weight and bias, without changing ``mod``."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    bn = mod.bn
    if isinstance(mod, nn.Linear):
        w, b = fuse_linear_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    else:
        w, b = fuse_conv_bn_weights(weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias, transpose=transpose)
    return w.detach(), b.detach()


def observe_weighted(
    cls: type,
    mod: nn.Module,
    float_types: tuple[type, ...],
    use_precomputed_fake_quant: bool = False,
    transpose: bool = False,
    with_relu: bool = False,
    fused_types: tuple[type, ...] = (),
) -> ObservedWeighted:
    """Read a float, fused-float or QAT module for ``cls.from_float``: weight quantized, output qparams taken.

    * QAT module (has ``weight_fake_quant``): BN folded in (``mod.fold_bn()``)
      for ConvBn / LinearBn modules; the fake-quant observes the (folded) weight
      once more unless ``use_precomputed_fake_quant``, as torch.ao does.
    * Fused float module (``nn.Sequential`` of one of ``float_types`` then a
      ReLU, for ``with_relu`` classes), one of ``fused_types`` (a fused
      container whose first part is the layer: conv + add), or plain float
      module: a weight observer is built from ``mod.qconfig.weight()`` and run
      on the weight.
    The output qparams come from ``mod.activation_post_process``.
    """
    owner = f"{cls.__name__}.from_float"
    names = ", ".join(t.__name__ for t in float_types)
    expected = f"a float {names}{' fused with ReLU' if with_relu else ''} or its QAT version"
    post = getattr(mod, "activation_post_process", None)
    if hasattr(mod, "weight_fake_quant"):
        if not isinstance(mod, float_types):
            raise ConfigError(f"{owner} expects {expected}, got the QAT module {type(mod).__name__}")
        layer = mod
        if hasattr(mod, "fold_bn"):
            weight, bias = mod.fold_bn()
        elif isinstance(getattr(mod, "bn", None), nn.modules.batchnorm._BatchNorm):
            weight, bias = _fold_bn(mod, mod.weight.detach(), None if mod.bias is None else mod.bias.detach(), transpose)
        else:
            weight, bias = mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
        weight_post = mod.weight_fake_quant
        if not use_precomputed_fake_quant:
            weight_post(weight)
    else:
        layer = mod
        if fused_types and type(mod) in fused_types:
            layer = mod[0]
        elif isinstance(mod, nn.Sequential) and not isinstance(mod, float_types):
            # prepare attaches the output observer as a child named activation_post_process
            parts = [m for name, m in mod.named_children() if name != "activation_post_process"]
            fused_ok = (
                with_relu and len(parts) == 2 and isinstance(parts[0], float_types) and isinstance(parts[1], nn.ReLU)
            )
            if not fused_ok:
                raise ConfigError(
                    f"{owner} expects {expected}, got the fused {type(mod).__name__} of "
                    f"({', '.join(type(p).__name__ for p in parts)})"
                )
            layer = parts[0]
        elif not isinstance(mod, float_types) or with_relu:
            raise ConfigError(f"{owner} expects {expected}, got {type(mod).__name__}")
        qconfig = getattr(mod, "qconfig", None) or getattr(layer, "qconfig", None)
        if qconfig is None:
            raise ConfigError(
                f"{owner}: the {type(mod).__name__} has no qconfig; set module.qconfig (or run qcore.prepare with one) "
                "before converting"
            )
        weight, bias = layer.weight.detach(), None if layer.bias is None else layer.bias.detach()
        weight_post = qconfig.weight()
        weight_post.to(weight.device)
        weight_post(weight)
    if post is None:
        raise ConfigError(
            f"{owner}: the {type(mod).__name__} has no activation_post_process (output observer); prepare the model "
            "with a qconfig and calibrate it before converting"
        )
    qweight = quantize_weight(weight, weight_post, owner)
    return ObservedWeighted(layer, qweight, bias, output_qparams_from(post, owner))
