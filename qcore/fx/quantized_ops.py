"""Call-site modules for graph-level tensor ops: ``x + y`` in the converted graph calls ``QuantizedAdd``.

Each holds a :class:`~qcore.nn.quantized.QFunctional` (its output qparams
come from the op's observer) and calls one of its methods, so the numerics
are eager mode's ``FloatFunctional`` -> ``QFunctional`` ones, a backend can
lower the QFunctional through ``qcore_lower_module``, and
``torch.jit.script`` turns the QFunctional into its TorchScript twin.
"""

from __future__ import annotations

from typing import List

from torch import Tensor, nn

__all__ = [
    "QuantizedAdd",
    "QuantizedMul",
    "QuantizedMatmul",
    "QuantizedAddReLU",
    "QuantizedCat",
    "QuantizedAddScalar",
    "QuantizedMulScalar",
    "BINARY_MODULES",
    "SCALAR_MODULES",
]


class _Binary(nn.Module):
    def __init__(self, functional: nn.Module) -> None:
        super().__init__()
        self.functional = functional


class QuantizedAdd(_Binary):
    """``functional.add(x, y)``."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.functional.add(x, y)


class QuantizedMul(_Binary):
    """``functional.mul(x, y)``."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.functional.mul(x, y)


class QuantizedMatmul(_Binary):
    """``functional.matmul(x, y)``."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.functional.matmul(x, y)


class QuantizedAddReLU(_Binary):
    """``functional.add_relu(x, y)``: the fused (add, relu) pattern."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.functional.add_relu(x, y)


class QuantizedCat(nn.Module):
    """``functional.cat(tensors, dim)``."""

    def __init__(self, functional: nn.Module, dim: int = 0) -> None:
        super().__init__()
        self.functional = functional
        self.dim = int(dim)

    def forward(self, tensors: List[Tensor]) -> Tensor:
        return self.functional.cat(tensors, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class _Scalar(nn.Module):
    def __init__(self, functional: nn.Module, scalar: float) -> None:
        super().__init__()
        self.functional = functional
        self.scalar = float(scalar)

    def extra_repr(self) -> str:
        return f"scalar={self.scalar}"


class QuantizedAddScalar(_Scalar):
    """``functional.add_scalar(x, scalar)``: output qparams derived from the input's."""

    def forward(self, x: Tensor) -> Tensor:
        return self.functional.add_scalar(x, self.scalar)


class QuantizedMulScalar(_Scalar):
    """``functional.mul_scalar(x, scalar)``: output qparams derived from the input's."""

    def forward(self, x: Tensor) -> Tensor:
        return self.functional.mul_scalar(x, self.scalar)


#: QFunctional method -> call-site module, for two tensor inputs.
BINARY_MODULES = {"add": QuantizedAdd, "mul": QuantizedMul, "matmul": QuantizedMatmul, "add_relu": QuantizedAddReLU}
#: QFunctional method -> call-site module, for a tensor and a number.
SCALAR_MODULES = {"add": QuantizedAddScalar, "mul": QuantizedMulScalar}
