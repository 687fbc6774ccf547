"""QFunctional on torch's quantized kernels: add, add_relu, mul, cat and matmul of QTensors.

``add_scalar`` / ``mul_scalar`` keep the reference (already torch's integer
rules). Inputs the kernels do not take (int8 or per-channel, a left operand
that would need broadcasting) run the reference op.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore.nn.quantized import functional_modules as _ref
from qcore.nn.quantized.base import module_label

from qcore_fbgemm.static.kernel import _VARIED, ENGINE, KernelModule, UnseenInputWarning
from qcore_fbgemm.static.ops import fast_op
from qcore_fbgemm.torch_quantized import from_torch, output_qparams, to_torch

__all__ = ["QFunctional", "QFunctionalKernelTwin"]

_BINARY: dict[str, Callable[..., Tensor]] = {name: fast_op(name) for name in ("add", "add_relu", "mul", "matmul")}
_CAT = fast_op("cat")


def _fits(a: Tensor, b: Tensor) -> bool:
    """Element-wise kernels write an output of ``a``'s shape: ``b`` may broadcast, ``a`` may not."""
    if a.shape == b.shape:
        return True
    try:
        return torch.broadcast_shapes(a.shape, b.shape) == a.shape
    except RuntimeError:
        return False  # the reference op raises torch's error


class QFunctional(KernelModule, _ref.QFunctional):
    """qcore's QFunctional with add / add_relu / mul / cat / matmul on torch's kernels."""

    def _make_op(self) -> Optional[nn.Module]:
        return None

    def _refresh(self) -> None:
        d = self.__dict__
        supported = type(self).supports(self)
        d["_kernel_out_qp"] = output_qparams(float(self.scale), int(self.zero_point)) if supported else None
        d["_kernel_op"] = d["_kernel_run"] = None
        d["_kernel_stale"] = False
        if not isinstance(d.get("_kernel_seen"), dict):
            d["_kernel_seen"] = {}

    def _binary(self, name: str, x: Any, y: Any) -> Any:
        if self._kernel_stale:
            self._refresh()
        qp = self._kernel_out_qp
        a, b = to_torch(x), to_torch(y)
        if a is None or b is None or qp is None or (name != "matmul" and not _fits(a, b)):
            return getattr(_ref.QFunctional, name)(self, x, y)
        self._note(name, (x._qparams, y._qparams))
        return from_torch(_BINARY[name](a, b, qp.scale, qp.zero_point), qp)

    def add(self, x: Any, y: Any) -> Any:
        return self._binary("add", x, y)

    def add_relu(self, x: Any, y: Any) -> Any:
        return self._binary("add_relu", x, y)

    def mul(self, x: Any, y: Any) -> Any:
        return self._binary("mul", x, y)

    def matmul(self, x: Any, y: Any) -> Any:
        return self._binary("matmul", x, y)

    def cat(self, x: Any, dim: int = 0) -> Any:
        if self._kernel_stale:
            self._refresh()
        qp = self._kernel_out_qp
        tensors = [to_torch(t) for t in x] if isinstance(x, (list, tuple)) and x else [None]
        if qp is None or any(t is None for t in tensors):
            return _ref.QFunctional.cat(self, x, dim)
        self._note("cat", tuple(t._qparams for t in x))
        return from_torch(_CAT(tensors, dim, qp.scale, qp.zero_point), qp)

    def _note(self, op: str, grids: tuple) -> None:
        seen = self._kernel_seen
        before = seen.get(op)
        if before is None:
            seen[op] = grids
        elif before is not _VARIED and (
            len(before) != len(grids) or any(g is not h and not g.same_as(h) for g, h in zip(before, grids))
        ):
            seen[op] = _VARIED

    def _recorded(self, op: str) -> Optional[tuple]:
        grids = (self.__dict__.get("_kernel_seen") or {}).get(op)
        return None if grids is None or grids is _VARIED else grids

    def extra_repr(self) -> str:
        return f"{_ref.QFunctional.extra_repr(self)}, engine={ENGINE}"

    def __prepare_scriptable__(self) -> nn.Module:
        if self._kernel_stale:
            self._refresh()
        return QFunctionalKernelTwin(self)


def _grids(source: QFunctional, op: str, count: int) -> tuple[bool, List[float], List[int]]:
    grids = source._recorded(op)
    if grids is None or (count > 0 and len(grids) != count):
        return False, [1.0] * max(count, 1), [0] * max(count, 1)
    return True, [float(g.scale) for g in grids], [int(g.zero_point) for g in grids]


class QFunctionalKernelTwin(_ref.QFunctionalTwin):
    """TorchScript twin of the kernel QFunctional: its kernels on the recorded input grids.

    An op the eager module never ran (or ran on several grids) computes the
    reference numerics instead, within one step of the kernel, with a warning
    when scripted.
    """

    def __init__(self, source: QFunctional) -> None:
        super().__init__(source)
        for op in ("add", "add_relu", "mul", "matmul"):
            known, scales, zero_points = _grids(source, op, 2)
            setattr(self, f"{op}_kernel", known)
            setattr(self, f"{op}_scales", scales)
            setattr(self, f"{op}_zero_points", zero_points)
        known, scales, zero_points = _grids(source, "cat", 0)
        self.cat_kernel = known
        self.cat_scales = scales
        self.cat_zero_points = zero_points
        ran = any(getattr(self, f"{op}_kernel") for op in ("add", "add_relu", "mul", "matmul", "cat"))
        if not ran and not source._scalar_inputs:
            warnings.warn(
                f"{module_label(source)} has not run on a quantized input yet, so its TorchScript form computes the "
                "reference numerics, which can differ from the eager kernels by one quantization step; run the eager "
                "model on a batch before torch.jit.script for a scripted model with the same outputs",
                UnseenInputWarning,
                stacklevel=3,
            )

    def _q(self, x: Tensor, scale: float, zero_point: int) -> Tensor:
        return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)

    def _on_grids(self, xs: List[Tensor], scales: List[float], zero_points: List[int]) -> bool:
        """Whether each input lies on its recorded grid (else the model changed since the eager run)."""
        for i in range(len(xs)):
            if not torch.equal(self._q(xs[i], scales[i], zero_points[i]).dequantize(), xs[i]):
                return False
        return True

    def add(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if self.add_kernel and self._on_grids([x, y], self.add_scales, self.add_zero_points):
                a = self._q(x, self.add_scales[0], self.add_zero_points[0])
                b = self._q(y, self.add_scales[1], self.add_zero_points[1])
                return torch.ops.quantized.add(a, b, float(self.scale), int(self.zero_point)).dequantize()
            return self._out(torch.add(x, y))
        return self._eager_binary("add", x, y)

    def add_relu(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if self.add_relu_kernel and self._on_grids([x, y], self.add_relu_scales, self.add_relu_zero_points):
                a = self._q(x, self.add_relu_scales[0], self.add_relu_zero_points[0])
                b = self._q(y, self.add_relu_scales[1], self.add_relu_zero_points[1])
                return torch.ops.quantized.add_relu(a, b, float(self.scale), int(self.zero_point)).dequantize()
            return self._out(F.relu(torch.add(x, y)))
        return self._eager_binary("add_relu", x, y)

    def mul(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if self.mul_kernel and self._on_grids([x, y], self.mul_scales, self.mul_zero_points):
                a = self._q(x, self.mul_scales[0], self.mul_zero_points[0])
                b = self._q(y, self.mul_scales[1], self.mul_zero_points[1])
                return torch.ops.quantized.mul(a, b, float(self.scale), int(self.zero_point)).dequantize()
            return self._out(torch.mul(x, y))
        return self._eager_binary("mul", x, y)

    def matmul(self, x: Tensor, y: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if self.matmul_kernel and self._on_grids([x, y], self.matmul_scales, self.matmul_zero_points):
                a = self._q(x, self.matmul_scales[0], self.matmul_zero_points[0])
                b = self._q(y, self.matmul_scales[1], self.matmul_zero_points[1])
                return torch.ops.quantized.matmul(a, b, float(self.scale), int(self.zero_point)).dequantize()
            return self._out(torch.matmul(x, y))
        return self._eager_binary("matmul", x, y)

    def cat(self, x: List[Tensor], dim: int = 0) -> Tensor:
        if torch.jit.is_scripting():
            known = self.cat_kernel and len(x) == len(self.cat_scales)
            if known and self._on_grids(x, self.cat_scales, self.cat_zero_points):
                qs: List[Tensor] = []
                for i in range(len(x)):
                    qs.append(self._q(x[i], self.cat_scales[i], self.cat_zero_points[i]))
                return torch.ops.quantized.cat(qs, dim, float(self.scale), int(self.zero_point)).dequantize()
            return self._out(torch.cat(x, dim=dim))
        return self._eager_cat(x, dim)
