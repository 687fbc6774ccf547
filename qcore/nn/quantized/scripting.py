"""TorchScript twins of quantized modules: the same numerics on the dequantized-float representation.

Contract for every quantized module (see docs of :class:`ScriptableTwin`):

* ``torch.jit.script`` calls ``module.__prepare_scriptable__()`` on every
  submodule. A qcore quantized module answers with a *twin*: a scriptable
  module whose input is a float tensor lying on the input grid (the values
  ``QTensor.dequantize()`` gives) and whose output equals
  ``eager_output.dequantize()`` bit for bit.
* Build twins from the generic ones here: :class:`FakeQuantizeTwin` (what
  ``Quantize`` becomes), :class:`IdentityTwin` (``DeQuantize``),
  :class:`FloatModuleTwin` (run a float module, then :func:`fake_quantize_output`
  with the module's output qparams) and :class:`PassThroughTwin` (run a float
  module, no re-quantization: relu, max-pool, flatten). Write your own by
  subclassing :class:`ScriptableTwin` and overriding ``reference``; multi-input
  modules override ``forward`` with the same ``torch.jit.is_scripting()`` guard.
  Do not put class-level annotations on twins (``quant_min: int``): under
  ``from __future__ import annotations`` TorchScript cannot read them.
* ``torch.jit.script`` replaces the children of the model being scripted in
  place (``parent._modules[name] = twin``). So a twin keeps its source module
  (outside ``_modules``) and, in eager mode, behaves as that source: forward,
  ``state_dict``, ``load_state_dict`` and ``.to()`` go to it, and the eager model
  keeps working after it was scripted.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = [
    "fake_quantize_output",
    "ScriptableTwin",
    "FakeQuantizeTwin",
    "IdentityTwin",
    "FloatModuleTwin",
    "PassThroughTwin",
]


def _fma_f32(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """``a * b + c`` rounded once to float32 (a fused multiply-add), as qcore.affine computes it."""
    p = a.to(torch.float64) * b.to(torch.float64)
    c64 = c.to(torch.float64)
    s = p + c64
    bp = s - p
    err = (p - (s - bp)) + (c64 - bp)
    # Round to odd when inexact, so the final float64 -> float32 rounding is correct.
    # Parity of the last significand bit: frexp's mantissa times 2**53 is the (exact) significand.
    mantissa, _ = torch.frexp(s)
    even = torch.fmod(mantissa * 9007199254740992.0, 2.0) == 0
    inexact_even = (err != 0) & even & torch.isfinite(s)
    toward = torch.where(err > 0, torch.full_like(s, float("inf")), torch.full_like(s, float("-inf")))
    s = torch.where(inexact_even, torch.nextafter(s, toward), s)
    return s.to(torch.float32)


def fake_quantize_output(y: Tensor, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int) -> Tensor:
    """``dequantize(quantize(y))`` per tensor with 8-bit output qparams, bit-exact with qcore's eager path.

    Quantizes as ``qcore.affine.quantize_affine`` does for 8-bit storage (fused
    ``y * (1/scale) + zero_point`` in float32, round half to even, clamp to
    ``[quant_min, quant_max]``) and dequantizes as ``QTensor.dequantize()``
    (``(q - zero_point) * scale`` in float32). ``scale`` is a float32 tensor and
    ``zero_point`` an integer tensor, both with one element. TorchScript-compatible.
    """
    s32 = scale.reshape(()).to(torch.float32)
    zp32 = zero_point.reshape(()).to(torch.float32)
    y32 = y.to(torch.float32)
    inv = torch.reciprocal(s32)
    v = torch.round(_fma_f32(y32, inv.expand_as(y32), zp32.expand_as(y32)))
    # Through an integer, as the stored value: no -0.0 survives (dequantize gives +0.0 at the zero point).
    v = torch.clamp(v, float(quant_min), float(quant_max)).to(torch.int32).to(torch.float32)
    return (v - zp32) * s32


class _SourceRef:
    """Holds a twin's source module outside ``_modules``, hidden from scripting and from the recursion of nn.Module."""

    __slots__ = ("module",)

    def __init__(self, module: Optional[nn.Module]) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict) -> "_SourceRef":
        import copy

        return _SourceRef(copy.deepcopy(self.module, memo))


class ScriptableTwin(nn.Module):
    """Base of TorchScript twins: ``reference(x)`` when scripted, the source module in eager mode.

    ``source`` is the quantized module the twin stands for (None for a free-standing
    twin, whose eager forward is then ``reference`` too). Subclasses override
    ``reference(self, x: Tensor) -> Tensor`` with TorchScript-compatible code.
    """

    __jit_unused_properties__ = ["source"]

    def __init__(self, source: Optional[nn.Module] = None) -> None:
        super().__init__()
        self._qcore_source = _SourceRef(source)
        self.register_load_state_dict_post_hook(_hide_twin_children)

    @property
    def source(self) -> Optional[nn.Module]:
        """The eager module this twin stands for."""
        return self._qcore_source.module

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self.reference(x)
        return self._eager_forward(x)

    def reference(self, x: Tensor) -> Tensor:
        raise NotImplementedError("ScriptableTwin subclasses define reference(x)")

    def to_reference(self) -> nn.Module:
        """What ``qcore.save`` stores for this twin: its source module's reference form (``torch.jit.script``
        leaves twins in the scripted eager model)."""
        source = self._qcore_source.module
        if source is None:
            return self
        to_reference = getattr(source, "to_reference", None)
        return to_reference() if callable(to_reference) else source

    @torch.jit.unused
    def _eager_forward(self, x: Tensor) -> Tensor:
        source = self._qcore_source.module
        if source is None:
            return self.reference(x)
        return source(x)

    # --- eager-mode delegation to the source (torch.jit.script swapped us into the model) ---

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        source = self._qcore_source.module
        if source is None:
            return super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        return source.state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)

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
        source = self._qcore_source.module
        if source is None:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
            return
        _load_module_tree(source, state_dict, prefix, local_metadata, missing_keys, unexpected_keys, error_msgs)
        self._qcore_load_prefix = prefix
        if not error_msgs and hasattr(source, "__prepare_scriptable__"):
            self._adopt(source.__prepare_scriptable__())

    def _adopt(self, fresh: nn.Module) -> None:
        """Take the tensors and children of a freshly built twin of the (reloaded) source."""
        for name in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            self.__dict__[name] = fresh.__dict__[name]
        for name, value in fresh.__dict__.items():
            if not name.startswith("_") and name != "training":
                self.__dict__[name] = value

    def _apply(self, fn: Any, recurse: bool = True) -> "ScriptableTwin":
        source = self._qcore_source.module
        if source is not None:
            source._apply(fn, recurse)
        return super()._apply(fn, recurse)


def _load_module_tree(
    module: nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    """Load ``module`` and its children from ``state_dict`` as ``nn.Module.load_state_dict`` does."""
    module._load_from_state_dict(state_dict, prefix, local_metadata, True, missing_keys, unexpected_keys, error_msgs)
    for name, child in module._modules.items():
        if child is not None:
            child_prefix = prefix + name + "."
            child_state = {k: v for k, v in state_dict.items() if k.startswith(child_prefix)}
            _load_module_tree(child, child_state, child_prefix, {}, missing_keys, unexpected_keys, error_msgs)


def _hide_twin_children(module: nn.Module, incompatible_keys: Any) -> None:
    """The twin's own children are rebuilt from its source, not loaded: drop the keys they miss."""
    prefix = module.__dict__.pop("_qcore_load_prefix", None)
    if prefix is None:
        return
    own = tuple(prefix + name + "." for name in module._modules)
    if own:
        incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not k.startswith(own)]


def _qparam_buffers(twin: nn.Module, scale: Tensor, zero_point: Tensor) -> None:
    twin.register_buffer("scale", scale.detach().clone().reshape(()).to(torch.float32))
    twin.register_buffer("zero_point", zero_point.detach().clone().reshape(()).to(torch.int64))


class FakeQuantizeTwin(ScriptableTwin):
    """Twin of ``Quantize`` (QuantStub): float in, quantized-then-dequantized float out."""

    def __init__(self, scale: Tensor, zero_point: Tensor, quant_min: int, quant_max: int, source: Optional[nn.Module] = None) -> None:
        super().__init__(source)
        _qparam_buffers(self, scale, zero_point)
        self.quant_min = int(quant_min)
        self.quant_max = int(quant_max)

    def reference(self, x: Tensor) -> Tensor:
        return fake_quantize_output(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, zero_point={int(self.zero_point)}, quant_min={self.quant_min}, quant_max={self.quant_max}"


class IdentityTwin(ScriptableTwin):
    """Twin of ``DeQuantize`` (DeQuantStub): the float values already are the dequantized ones."""

    def reference(self, x: Tensor) -> Tensor:
        return x


class FloatModuleTwin(ScriptableTwin):
    """Runs a float module on the dequantized input, then re-quantizes with the output qparams.

    ``op`` must be scriptable and compute exactly what the eager module computes
    on dequantized values (e.g. ``nn.Linear`` holding the dequantized weight).
    """

    def __init__(
        self,
        op: nn.Module,
        scale: Tensor,
        zero_point: Tensor,
        quant_min: int,
        quant_max: int,
        source: Optional[nn.Module] = None,
    ) -> None:
        super().__init__(source)
        self.op = op
        _qparam_buffers(self, scale, zero_point)
        self.quant_min = int(quant_min)
        self.quant_max = int(quant_max)

    def reference(self, x: Tensor) -> Tensor:
        return fake_quantize_output(self.op(x), self.scale, self.zero_point, self.quant_min, self.quant_max)

    def extra_repr(self) -> str:
        return f"scale={float(self.scale)}, zero_point={int(self.zero_point)}, quant_min={self.quant_min}, quant_max={self.quant_max}"


class PassThroughTwin(ScriptableTwin):
    """Runs a float module whose result stays on the input grid (relu, max-pool, flatten): no re-quantization."""

    def __init__(self, op: nn.Module, source: Optional[nn.Module] = None) -> None:
        super().__init__(source)
        self.op = op

    def reference(self, x: Tensor) -> Tensor:
        return self.op(x)
