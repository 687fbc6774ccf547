"""FloatFunctional, FXFloatFunctional and QFunctional (torch.ao.nn.quantized's): tensor ops as observable modules.

A model calls ``self.f.add(x, y)`` instead of ``x + y`` so the op has a module
that prepare can attach an output observer to (``activation_post_process``)
and convert can swap for :class:`QFunctional`, which runs the op on QTensors:

* ``add``, ``mul``, ``add_relu``, ``cat``, ``matmul``: dequantize the inputs,
  run the float op in float32, quantize with the module's output qparams
  (the observer's).
* ``add_scalar``, ``mul_scalar``: not observed; the output qparams follow from
  the input's, by torch's rules (:func:`add_scalar_int` / :func:`mul_scalar_int`),
  and the integers agree with ``torch.ops.quantized.add_scalar`` / ``mul_scalar``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.base import QuantizedModule, module_label, output_qparams_from
from qcore.nn.quantized.scripting import ScriptableTwin, fake_quantize_output
from qcore.qtensor import QTensor

__all__ = ["FloatFunctional", "FXFloatFunctional", "QFunctional", "add_scalar_int", "mul_scalar_int"]


class FloatFunctional(nn.Module):
    """Float tensor ops whose results pass through ``activation_post_process`` (identity until prepare).

    Use one instance per op site, as with torch.ao: each holds one observer.
    ``add_scalar`` and ``mul_scalar`` are not observed (their quantized output
    qparams follow from the input's).
    """

    def __init__(self) -> None:
        super().__init__()
        self.activation_post_process = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("FloatFunctional is not meant to be called; use its operations (add, cat, mul, ...)")

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.add(x, y)``, observed."""
        return self.activation_post_process(torch.add(x, y))

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        """``torch.add(x, y)`` for a number ``y``; not observed."""
        return torch.add(x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.mul(x, y)``, observed."""
        return self.activation_post_process(torch.mul(x, y))

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        """``torch.mul(x, y)`` for a number ``y``; not observed."""
        return torch.mul(x, y)

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        """``torch.cat(x, dim)``, observed."""
        return self.activation_post_process(torch.cat(x, dim=dim))

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        """``relu(torch.add(x, y))``, observed."""
        return self.activation_post_process(F.relu(torch.add(x, y)))

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        """``torch.matmul(x, y)``, observed."""
        return self.activation_post_process(torch.matmul(x, y))


class FXFloatFunctional(nn.Module):
    """FloatFunctional without an observer of its own (graph-mode flows observe the op's output in the graph)."""

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("FXFloatFunctional is not meant to be called; use its operations (add, cat, mul, ...)")

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.add(x, y)

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        return torch.add(x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.mul(x, y)

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        return torch.mul(x, y)

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        return torch.cat(x, dim=dim)

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        return F.relu(torch.add(x, y))

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.matmul(x, y)


# --- the scalar ops' integer arithmetic (TorchScript-compatible, shared by QFunctional and its twin) ----------


def add_scalar_int(q: Tensor, scale: float, zero_point: int, c: float, qmin: int, qmax: int) -> tuple[Tensor, float, int]:
    """torch's quantized ``add_scalar`` on integers ``q`` (any dtype, integer-valued): ``(q_out, scale', zero_point')``.

    ``c`` is rounded to the input grid, ``c_q = round(c / scale)``; when
    ``zero_point - c_q`` still lies in the dtype's ``[qmin, qmax]`` the integers
    stay and only the zero point moves, otherwise the range is widened
    (``scale' > scale``, zero point at the saturated end) and the integers
    requantized as ``round((q - zero_point + c_q) * scale / scale')`` in float32.
    ``q_out`` is float32 holding integers.
    """
    c_q = int(torch.round(torch.tensor(c / scale, dtype=torch.float64)))
    shifted = zero_point - c_q
    qf = q.to(torch.float32)
    if shifted >= qmin and shifted <= qmax:
        return qf, scale, shifted
    if shifted < qmin:
        new_scale = (float(qmax) - shifted) / (float(qmax) - qmin) * scale
        new_zero_point = qmin
    else:
        new_scale = (float(shifted) - qmin) / (float(qmax) - qmin) * scale
        new_zero_point = qmax
    s32 = torch.tensor(scale, dtype=torch.float32)
    multiplier = s32 * torch.reciprocal(torch.tensor(new_scale, dtype=torch.float32))
    total = (qf - float(zero_point)) + float(c_q)
    out = torch.round(total * multiplier) + float(new_zero_point)
    return torch.clamp(out, float(qmin), float(qmax)), new_scale, new_zero_point


def mul_scalar_int(q: Tensor, scale: float, zero_point: int, c: float, qmin: int, qmax: int) -> tuple[Tensor, float, int]:
    """torch's quantized ``mul_scalar`` on integers ``q``: exact, by relabelling qparams: ``(q_out, scale', zero_point')``.

    ``c > 0``: same integers, scale ``c * scale``; ``c == 0``: zeros with scale 1
    and zero point 0; ``c < 0``: integers mirrored (``qmin + qmax - q``), scale
    ``|c| * scale``, zero point ``qmin + qmax - zero_point``. ``q_out`` is float32.
    """
    qf = q.to(torch.float32)
    if c > 0.0:
        return qf, c * scale, zero_point
    if c == 0.0:
        return torch.zeros_like(qf), 1.0, 0
    return float(qmax + qmin) - qf, abs(c) * scale, qmax - (zero_point - qmin)


def _scalar(value: Any, owner: str, op: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1 or isinstance(value, QTensor):
            raise QuantizationError(f"{owner}.{op}: the scalar must be a number or a one-element float tensor")
        value = value.item()
    try:
        c = float(value)
    except (TypeError, ValueError):
        raise QuantizationError(f"{owner}.{op}: the scalar must be a number, got {type(value).__name__}") from None
    if not math.isfinite(c):
        raise QuantizationError(f"{owner}.{op}: the scalar must be finite, got {c}")
    return c


class QFunctional(QuantizedModule):
    """The quantized FloatFunctional: the same ops on QTensors, output qparams from its observer.

    ``add``/``mul``/``add_relu``/``cat``/``matmul`` follow the reference
    numerics (dequantize, float32 op, quantize with ``scale``/``zero_point``);
    ``add_scalar``/``mul_scalar`` keep torch's integer rules (see the module
    docstring). The scalar ops remember the input qparams they saw, so the
    TorchScript twin can reproduce them exactly.
    """

    #: op name -> [scale, zero_point, dtype name] of the inputs seen; None when several differed.
    #: (Annotated here, not in ``__init__``: TorchScript warns about annotated empty containers there.)
    _scalar_inputs: dict[str, Optional[list]]

    def __init__(self, *, output_dtype: DTypeLike = dtypes.uint8) -> None:
        QuantizedModule.__init__(self, output_dtype)
        self._scalar_inputs = {}

    def _get_name(self) -> str:
        return "QFunctional"

    def forward(self, x: Any) -> Any:
        raise RuntimeError("QFunctional is not meant to be called; use its operations (add, cat, mul, ...)")

    def _float(self, x: Any) -> Tensor:
        return self._dequantized_input(x)

    def add(self, x: QTensor, y: QTensor) -> QTensor:
        """``quantize(x + y)`` with the output qparams."""
        return self._quantize_output(torch.add(self._float(x), self._float(y)))

    def mul(self, x: QTensor, y: QTensor) -> QTensor:
        """``quantize(x * y)`` with the output qparams."""
        return self._quantize_output(torch.mul(self._float(x), self._float(y)))

    def add_relu(self, x: QTensor, y: QTensor) -> QTensor:
        """``quantize(relu(x + y))`` with the output qparams."""
        return self._quantize_output(F.relu(torch.add(self._float(x), self._float(y))))

    def cat(self, x: list[QTensor], dim: int = 0) -> QTensor:
        """``quantize(cat(x, dim))`` with the output qparams."""
        if not isinstance(x, (list, tuple)) or not x:
            raise QuantizationError(f"{module_label(self)}.cat: expected a non-empty list of QTensors")
        return self._quantize_output(torch.cat([self._float(t) for t in x], dim=dim))

    def matmul(self, x: QTensor, y: QTensor) -> QTensor:
        """``quantize(x @ y)`` with the output qparams."""
        return self._quantize_output(torch.matmul(self._float(x), self._float(y)))

    def add_scalar(self, x: QTensor, y: float) -> QTensor:
        """``x + y`` by torch's rule: ``y`` rounded to ``x``'s grid, output qparams derived from ``x``'s."""
        return self._scalar_op("add_scalar", add_scalar_int, x, y)

    def mul_scalar(self, x: QTensor, y: float) -> QTensor:
        """``x * y`` by torch's rule: exact, the output qparams derived from ``x``'s."""
        return self._scalar_op("mul_scalar", mul_scalar_int, x, y)

    def _scalar_op(self, op: str, fn: Any, x: Any, y: Any) -> QTensor:
        q = self._as_qtensor_input(x)
        c = _scalar(y, module_label(self), op)
        if q.qscheme().is_per_channel:
            raise QuantizationError(f"{module_label(self)}.{op}: needs a per-tensor QTensor, got a {q.qscheme().value} one")
        d = q.qdtype
        s, z = q.q_scale(), q.q_zero_point()
        self._record(op, [s, z, d.name])
        out, new_scale, new_zero_point = fn(q.int_repr(), s, z, c, d.quant_min, d.quant_max)
        if not float(torch.tensor(new_scale, dtype=torch.float32)) >= torch.finfo(torch.float32).tiny:
            raise QuantizationError(
                f"{module_label(self)}.{op}({c!r}): the output scale {new_scale!r} is below float32's smallest normal "
                "number; such a scalar underflows the quantized grid, compute this op in float instead"
            )
        return QTensor.from_int(out.to(q.int_repr().dtype), new_scale, new_zero_point, d)

    def _record(self, op: str, qparams: list) -> None:
        if op not in self._scalar_inputs:
            self._scalar_inputs[op] = qparams
        elif self._scalar_inputs[op] is not None and self._scalar_inputs[op] != qparams:
            self._scalar_inputs[op] = None

    def _qcore_extra_state(self) -> dict[str, Any]:
        state = super()._qcore_extra_state()
        if self._scalar_inputs:
            state["scalar_inputs"] = {k: (list(v) if v is not None else None) for k, v in self._scalar_inputs.items()}
        return state

    def _qcore_set_extra_state(self, state: dict[str, Any]) -> None:
        super()._qcore_set_extra_state(state)
        self._scalar_inputs = {k: (list(v) if v is not None else None) for k, v in state.get("scalar_inputs", {}).items()}

    def __prepare_scriptable__(self) -> nn.Module:
        return QFunctionalTwin(self)

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> "QFunctional":
        """From an observed FloatFunctional (its ``activation_post_process`` gives the output qparams)."""
        if not isinstance(mod, FloatFunctional):
            raise ConfigError(f"QFunctional.from_float expects a FloatFunctional, got {type(mod).__name__}")
        post = mod.activation_post_process
        if isinstance(post, nn.Identity):
            post = None
        qp = output_qparams_from(post, cls.__name__)
        new = cls(output_dtype=qp.dtype)
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new


class QFunctionalTwin(ScriptableTwin):
    """TorchScript twin of QFunctional: its ops on float tensors lying on the input grids.

    ``add``/``mul``/``add_relu``/``cat``/``matmul`` fake-quantize the float
    result with the output qparams, exactly as the eager module. The scalar
    ops need the input grid, which a float tensor does not carry: they use the
    grid the eager module recorded (exact), or, when it never ran eagerly or
    saw several grids, compute in float (within one step) and warn.
    """

    def __init__(self, source: QFunctional) -> None:
        super().__init__(source)
        self.register_buffer("scale", source.scale.detach().clone())
        self.register_buffer("zero_point", source.zero_point.detach().clone())
        self.quant_min = int(source.quant_min)
        self.quant_max = int(source.quant_max)
        for op in ("add_scalar", "mul_scalar"):
            seen = source._scalar_inputs.get(op)
            d = dtypes.qdtype(seen[2]) if seen is not None else dtypes.uint8
            setattr(self, f"{op}_known", seen is not None)
            setattr(self, f"{op}_scale", float(seen[0]) if seen is not None else 1.0)
            setattr(self, f"{op}_zero_point", int(seen[1]) if seen is not None else 0)
            setattr(self, f"{op}_qmin", d.quant_min)
            setattr(self, f"{op}_qmax", d.quant_max)

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("QFunctional is not meant to be called; use its operations (add, cat, mul, ...)")

    def _out(self, y: Tensor) -> Tensor:
        return fake_quantize_output(y, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._out(torch.add(x, y))
        return self._eager_binary("add", x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._out(torch.mul(x, y))
        return self._eager_binary("mul", x, y)

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._out(F.relu(torch.add(x, y)))
        return self._eager_binary("add_relu", x, y)

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._out(torch.matmul(x, y))
        return self._eager_binary("matmul", x, y)

    def cat(self, x: list[Tensor], dim: int = 0) -> Tensor:
        if torch.jit.is_scripting():
            return self._out(torch.cat(x, dim=dim))
        return self._eager_cat(x, dim)

    def add_scalar(self, x: Tensor, y: float) -> Tensor:
        if torch.jit.is_scripting():
            if not self.add_scalar_known:
                warnings.warn(
                    "QFunctional.add_scalar in TorchScript: the input grid is unknown (the eager module never ran, or saw "
                    "several grids); computing x + y in float, within one quantization step of the eager result"
                )
                return torch.add(x, y)
            s, z = self.add_scalar_scale, self.add_scalar_zero_point
            q = _grid_integers(x, s, z)
            out, new_scale, new_zero_point = add_scalar_int(q, s, z, y, self.add_scalar_qmin, self.add_scalar_qmax)
            return _dequantize_float(out, new_scale, new_zero_point)
        return self._eager_scalar("add_scalar", x, y)

    def mul_scalar(self, x: Tensor, y: float) -> Tensor:
        if torch.jit.is_scripting():
            if not self.mul_scalar_known:
                warnings.warn(
                    "QFunctional.mul_scalar in TorchScript: the input grid is unknown (the eager module never ran, or saw "
                    "several grids); computing x * y in float, within one quantization step of the eager result"
                )
                return torch.mul(x, y)
            s, z = self.mul_scalar_scale, self.mul_scalar_zero_point
            q = _grid_integers(x, s, z)
            out, new_scale, new_zero_point = mul_scalar_int(q, s, z, y, self.mul_scalar_qmin, self.mul_scalar_qmax)
            return _dequantize_float(out, new_scale, new_zero_point)
        return self._eager_scalar("mul_scalar", x, y)

    @torch.jit.unused
    def _eager_binary(self, op: str, x: Tensor, y: Tensor) -> Tensor:
        return getattr(self.source, op)(x, y)

    @torch.jit.unused
    def _eager_cat(self, x: list[Tensor], dim: int) -> Tensor:
        return self.source.cat(x, dim)

    @torch.jit.unused
    def _eager_scalar(self, op: str, x: Tensor, y: float) -> Tensor:
        return getattr(self.source, op)(x, y)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, zero_point={int(self.zero_point)}, quant_min={self.quant_min}, quant_max={self.quant_max}"


def _grid_integers(x: Tensor, scale: float, zero_point: int) -> Tensor:
    """The integers ``q`` (as float32) of float values ``x`` lying on the grid ``(q - zero_point) * scale``."""
    inv = torch.reciprocal(torch.tensor(scale, dtype=torch.float32))
    return torch.round(x.to(torch.float32) * inv) + float(zero_point)


def _dequantize_float(q: Tensor, scale: float, zero_point: int) -> Tensor:
    """``(q - zero_point) * scale`` in float32, as ``QTensor.dequantize()`` computes it for 8-bit integers."""
    return (q - float(zero_point)) * torch.tensor(scale, dtype=torch.float32)


#: {float module: quantized module} for the static mapping table.
STATIC_MAPPINGS: dict[type, type] = {FloatFunctional: QFunctional}
