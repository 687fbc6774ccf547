"""Activations on torch's quantized kernels: ReLU6, Hardswish, ELU, LeakyReLU, Sigmoid, Softmax, Tanh, Hardsigmoid.

Each takes the module's output qparams, except tanh and hardsigmoid, whose
torch kernels fix them; those lower only when the module's qparams are the
fixed ones (the default), and softmax only with an explicit ``dim``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from qcore.nn.quantized import activation as _ref
from qcore.nn.quantized.scripting import PassThroughTwin

from qcore_fbgemm.static import ops
from qcore_fbgemm.static.kernel import KernelModule
from qcore_fbgemm.torch_quantized import from_torch, to_torch

__all__ = ["ReLU6", "Hardswish", "ELU", "LeakyReLU", "Sigmoid", "Softmax", "Tanh", "Hardsigmoid"]


class _ActivationKernel(KernelModule):
    _KIND: int = -1

    def _param(self) -> float:
        return 0.0

    def _make_op(self) -> nn.Module:
        return ops.QActivationOp(self._KIND, float(self.scale), int(self.zero_point), self._param())


class ReLU6(_ActivationKernel, _ref.ReLU6):
    """qcore's quantized ReLU6: ``quantized::relu6`` when it keeps the input's qparams, else relu6 requantized."""

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        return ref.keep_input_qparams or super().supports(ref)

    def _make_op(self) -> nn.Module:
        kind = ops.RELU6_KEEP if self.keep_input_qparams else ops.RELU6
        return ops.QActivationOp(kind, float(self.scale), int(self.zero_point))

    def _fallback_twin(self) -> nn.Module:
        if self.keep_input_qparams:
            # off the recorded grid the output grid is unknown too: relu6 in float, within one step
            return PassThroughTwin(nn.ReLU6())
        return super()._fallback_twin()

    def forward(self, x: Any) -> Any:
        if not self.keep_input_qparams:
            return super().forward(x)
        # the output keeps the input's qparams: relu6 clamps the integers, exactly
        if self._kernel_stale:
            self._refresh()
        tq = to_torch(x)
        if tq is None or self._kernel_run is None:
            return _ref.ReLU6.forward(self, x)
        qp = x._qparams
        if qp is not self._kernel_seen:
            self._note_input(qp)
        return from_torch(self._kernel_run(tq), qp)


class Hardswish(_ActivationKernel, _ref.Hardswish):
    """qcore's quantized Hardswish on ``quantized::hardswish``."""

    _KIND = ops.HARDSWISH


class ELU(_ActivationKernel, _ref.ELU):
    """qcore's quantized ELU on ``quantized::elu``."""

    _KIND = ops.ELU

    def _param(self) -> float:
        return self.alpha


class LeakyReLU(_ActivationKernel, _ref.LeakyReLU):
    """qcore's quantized LeakyReLU on ``quantized::leaky_relu``."""

    _KIND = ops.LEAKY_RELU

    def _param(self) -> float:
        return self.negative_slope


class Sigmoid(_ActivationKernel, _ref.Sigmoid):
    """qcore's quantized Sigmoid on ``quantized::sigmoid``."""

    _KIND = ops.SIGMOID


class Softmax(_ActivationKernel, _ref.Softmax):
    """qcore's quantized Softmax on ``quantized::softmax`` (an explicit ``dim`` only)."""

    _KIND = ops.SOFTMAX

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        return super().supports(ref) and ref.dim is not None

    def _make_op(self) -> nn.Module:
        return ops.QActivationOp(self._KIND, float(self.scale), int(self.zero_point), dim=int(self.dim))

    def _accepts(self, tq: Tensor) -> bool:
        return -tq.dim() <= self.dim < tq.dim()


class _FixedKernel(KernelModule):
    """tanh / hardsigmoid: torch's kernel decides the output qparams, which must be the module's."""

    _KIND: int = -1
    _FIXED: tuple[float, int] = (0.0, 0)

    @classmethod
    def supports(cls, ref: nn.Module) -> bool:
        return super().supports(ref) and (float(ref.scale), int(ref.zero_point)) == cls._FIXED

    def _make_op(self) -> nn.Module:
        return ops.QFixedActivationOp(self._KIND)

    def _accepts(self, tq: Tensor) -> bool:
        # the kernel's output grid is fixed; a module reloaded with other qparams runs the reference
        return (self._kernel_out_qp.scale, self._kernel_out_qp.zero_point) == self._FIXED


class Tanh(_FixedKernel, _ref.Tanh):
    """qcore's quantized Tanh on torch's quantized tanh (output scale 2/256, zero point 128)."""

    _KIND = ops.TANH
    _FIXED = (2.0 / 256.0, 128)


class Hardsigmoid(_FixedKernel, _ref.Hardsigmoid):
    """qcore's quantized Hardsigmoid on torch's quantized hardsigmoid (output scale 1/256, zero point 0)."""

    _KIND = ops.HARDSIGMOID
    _FIXED = (1.0 / 256.0, 0)
