"""What every kernel-backed static module shares: lowering from its reference twin, caches, TorchScript.

A kernel module subclasses the reference module it replaces (so it keeps its
``state_dict`` layout, ``weight()``, ``from_float`` and error messages) with
:class:`KernelModule` mixed in first. Its forward turns the input QTensor into
a torch quantized tensor (reusing the one the previous kernel produced), runs
its op module (:mod:`qcore_fbgemm.static.ops`) and wraps the result; inputs the
kernel does not take (int8 or per-channel activations, odd shapes) run the
reference forward instead, which also raises the reference's errors.

Weights are packed when the module is lowered and again only after its state
changes (assignment, ``load_state_dict``, ``.to()``), never per call.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

from qcore import dtypes
from qcore.nn.quantized.base import module_label
from qcore.nn.quantized.scripting import ScriptableTwin

from qcore_fbgemm.torch_quantized import KernelQTensor, from_torch, output_qparams, to_torch

__all__ = ["KernelModule", "KernelTwin", "ENGINE", "UnseenInputWarning"]

#: torch's quantized engine the kernels are packed for.
ENGINE = "fbgemm"

_VARIED = "varied"  # the module saw inputs on more than one grid
_QUINT8 = torch.quint8


class UnseenInputWarning(UserWarning):
    """A lowered module was scripted before it saw a quantized input, so its twin uses the reference numerics."""


# Attributes whose assignment leaves the packed kernel valid.
_NOT_KERNEL_STATE = frozenset({"training", "_qcore_name", "qconfig", "_qcore_backend"})

_KERNEL_ATTRS = ("_kernel_op", "_kernel_run", "_kernel_out_qp", "_kernel_seen", "_kernel_stale")


def reference_class(cls: type) -> type:
    """The reference (qcore) class a kernel class lowers: the first qcore class in its MRO."""
    for base in cls.__mro__:
        if base.__module__.startswith("qcore.") and issubclass(base, nn.Module):
            return base
    raise TypeError(f"{cls.__name__} does not derive from a qcore reference module")


def reference_copy(module: nn.Module) -> nn.Module:
    """A copy of a kernel module as its reference class: the same state, no kernel caches or hooks."""
    ref = copy.deepcopy(module)
    for name in _KERNEL_ATTRS:
        ref.__dict__.pop(name, None)
    ref.__class__ = reference_class(type(module))
    return ref


class KernelModule:
    """Mixin (listed before the reference class) running a reference quantized module on torch's int8 kernels.

    Subclasses define ``_make_op()`` (the op module, packing weights) and may
    narrow ``supports`` (which reference modules lower) and ``_accepts``
    (which inputs the kernel takes).
    """

    _kernel_stale: bool
    _kernel_seen: Any
    _kernel_out_qp: Any
    _kernel_run: Any

    # --- lowering -----------------------------------------------------------------------

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        """Whether ``ref`` fits the kernel: on the CPU, uint8 output clamped to the whole uint8 range."""
        return (
            ref.dtype is dtypes.uint8 and (ref.quant_min, ref.quant_max) == (0, 255) and ref.scale.device.type == "cpu"
        )

    @classmethod
    def from_reference(cls, ref: nn.Module) -> Optional[nn.Module]:
        """A kernel-backed copy of the reference module ``ref``, or None when the kernel cannot compute it."""
        if not cls.supports(ref):
            return None
        new = copy.deepcopy(ref)
        new.__class__ = cls
        new.__dict__["_kernel_seen"] = None
        new._refresh()
        return new

    def to_reference(self) -> nn.Module:
        """The reference module this one lowers (a copy, without packed weights): what qcore.save stores."""
        return reference_copy(self)

    # --- caches ---------------------------------------------------------------------------

    def _make_op(self) -> nn.Module:
        raise NotImplementedError

    def _refresh(self) -> None:
        """Rebuild the output qparams and the op module (packing the weights) from the current state.

        A state the kernel cannot compute (a state dict with uint8 weights, say)
        leaves no op: the module then runs the reference forward.
        """
        d = self.__dict__
        d["_kernel_stale"] = False
        if not type(self).supports(self):
            d["_kernel_op"] = d["_kernel_run"] = None
            return
        d["_kernel_out_qp"] = output_qparams(float(self.scale), int(self.zero_point))
        op = self._make_op()
        d["_kernel_op"] = op
        eager = getattr(op, "eager", None)
        d["_kernel_run"] = eager() if eager is not None else op.forward

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)  # type: ignore[misc]
        if name not in _NOT_KERNEL_STATE:
            self.__dict__["_kernel_stale"] = True

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)  # type: ignore[misc]
        # new weights and qparams to pack. The recorded input grid stays: the TorchScript twin checks that
        # its inputs lie on it and runs the reference otherwise.
        self.__dict__["_kernel_stale"] = True

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        result = super()._apply(fn, recurse)  # type: ignore[misc]
        self.__dict__["_kernel_stale"] = True
        return result

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("_kernel_op", "_kernel_run", "_kernel_out_qp"):
            state.pop(name, None)
        state["_kernel_stale"] = True
        return state

    # --- forward --------------------------------------------------------------------------

    def _accepts(self, tq: Tensor) -> bool:
        """Whether the kernel takes this (quint8, per-tensor) input; the reference runs otherwise."""
        return True

    def forward(self, x: Any) -> Any:
        d = self.__dict__
        if d.get("_kernel_stale", True):
            self._refresh()
        run = d["_kernel_run"]
        # the hot path, checks inlined: the torch tensor the previous kernel left (what to_torch reuses)
        if type(x) is KernelQTensor and x._torch_qparams is x._qparams and run is not None:
            tq = x._torch
            if tq.dtype is not _QUINT8 or not self._accepts(tq):
                return super().forward(x)  # type: ignore[misc]
        else:
            tq = to_torch(x)
            if tq is None or run is None or not self._accepts(tq):
                return super().forward(x)  # type: ignore[misc]
        qp = x._qparams
        if qp is not d.get("_kernel_seen"):
            self._note_input(qp)
        return from_torch(run(tq), d["_kernel_out_qp"])

    def _note_input(self, qp: Any) -> None:
        """Remember the input grid for the TorchScript twin (which only sees float values)."""
        seen = self.__dict__.get("_kernel_seen")
        if seen is None or (seen is not _VARIED and seen.same_as(qp)):
            self.__dict__["_kernel_seen"] = qp
        else:
            self.__dict__["_kernel_seen"] = _VARIED

    # --- repr and TorchScript ---------------------------------------------------------------

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, engine={ENGINE}"  # type: ignore[misc]

    def __prepare_scriptable__(self) -> nn.Module:
        """The kernel twin when the input grid is known (the same integers as eager), else the reference twin."""
        if self._kernel_stale:
            self._refresh()
        seen = self.__dict__.get("_kernel_seen")
        if self._kernel_op is None:
            return super().__prepare_scriptable__()  # type: ignore[misc]
        if seen is None or seen is _VARIED:
            why = "has not run on a quantized input yet" if seen is None else "saw inputs on several grids"
            warnings.warn(
                f"{module_label(self)} {why}, so its TorchScript form computes the reference numerics, which can "
                "differ from the eager kernel by one quantization step; run the eager model on a batch before "
                "torch.jit.script for a scripted model with the same outputs",
                UnseenInputWarning,
                stacklevel=2,
            )
            return super().__prepare_scriptable__()  # type: ignore[misc]
        fallback = self._fallback_twin()
        return KernelTwin(copy.copy(self._kernel_op), seen.scale, seen.zero_point, fallback, source=self)


    def _fallback_twin(self) -> nn.Module:
        """What the kernel twin runs on an input off the recorded grid: the reference twin, on its own.

        It stands for no module (its source is cleared): the kernel twin is the
        one that loads and forwards for this module in eager mode.
        """
        twin = super().__prepare_scriptable__()  # type: ignore[misc]
        source = getattr(twin, "_qcore_source", None)
        if source is not None:
            source.module = None
        return twin


class KernelTwin(ScriptableTwin):
    """TorchScript twin of a kernel module: quantize onto the recorded input grid, run the op, dequantize.

    An input that does not lie on that grid (the model's qparams changed after
    the eager run) runs ``fallback``, the reference twin, instead.
    """

    def __init__(self, op: nn.Module, in_scale: float, in_zero_point: int, fallback: nn.Module,
                 source: Optional[nn.Module] = None) -> None:
        super().__init__(source)
        self.op = op
        self.fallback = fallback
        self.in_scale = float(in_scale)
        self.in_zero_point = int(in_zero_point)

    def reference(self, x: Tensor) -> Tensor:
        q = torch.quantize_per_tensor(x, self.in_scale, self.in_zero_point, torch.quint8)
        if torch.equal(q.dequantize(), x):
            return self.op(q).dequantize()
        return self.fallback(x)

    def extra_repr(self) -> str:
        return f"in_scale={self.in_scale}, in_zero_point={self.in_zero_point}, engine={ENGINE}"
