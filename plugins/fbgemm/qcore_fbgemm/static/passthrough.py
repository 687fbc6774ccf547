"""Max pooling and flatten modules that call torch's quantized op directly on a kernel's output.

These float modules already compute exactly on a QTensor (its
``__torch_function__`` runs them), so convert keeps them; on fbgemm it lowers
them to these subclasses, which skip that dispatch (about 5 us a call, as
much as the kernel at small batches) when the input is a tensor a kernel
produced. Any other input runs the float module's own forward.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import nn

from qcore_fbgemm.torch_quantized import KernelQTensor, from_torch

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "Flatten", "PASSTHROUGH_LOWERINGS"]


def _kernel_input(x: Any) -> Optional[torch.Tensor]:
    """The torch quantized tensor behind ``x`` when a kernel produced it and its qparams are unchanged."""
    if type(x) is KernelQTensor and x._torch_qparams is x._qparams:
        return x._torch
    return None


class _Passthrough:
    """Mixin (listed before the float class): lowering from and back to the float module."""

    @classmethod
    def from_reference(cls, module: nn.Module) -> Optional[nn.Module]:
        """A copy of the float ``module`` as this class (hooks and attributes kept), or None when it cannot run here."""
        if not cls._fits(module):
            return None
        new = copy.deepcopy(module)
        new.__class__ = cls
        return new

    @classmethod
    def _fits(cls, module: nn.Module) -> bool:
        return True

    def to_reference(self) -> nn.Module:
        """The float module this one lowers (what qcore.save stores)."""
        ref = copy.deepcopy(self)
        ref.__class__ = next(c for c in type(self).__mro__ if c.__module__.startswith("torch.nn."))
        return ref

    def __prepare_scriptable__(self) -> nn.Module:
        """TorchScript runs the float module: scripted quantized models pass dequantized values between twins."""
        return self.to_reference()


class _MaxPool(_Passthrough):
    _TORCH_POOL: Any

    @classmethod
    def _fits(cls, module: nn.Module) -> bool:
        return not module.return_indices

    def forward(self, x: Any) -> Any:
        tq = _kernel_input(x)
        if tq is None:
            return super().forward(x)  # type: ignore[misc]
        stride = self.stride if self.stride is not None else self.kernel_size
        out = type(self)._TORCH_POOL(tq, self.kernel_size, stride, self.padding, self.dilation, self.ceil_mode)
        return from_torch(out, x._qparams)


class MaxPool1d(_MaxPool, nn.MaxPool1d):
    """nn.MaxPool1d running ``torch.max_pool1d`` on a kernel's quantized output."""

    _TORCH_POOL = staticmethod(torch.max_pool1d)


class MaxPool2d(_MaxPool, nn.MaxPool2d):
    """nn.MaxPool2d running ``torch.max_pool2d`` on a kernel's quantized output."""

    _TORCH_POOL = staticmethod(torch.max_pool2d)


class MaxPool3d(_MaxPool, nn.MaxPool3d):
    """nn.MaxPool3d running ``torch.max_pool3d`` on a kernel's quantized output."""

    _TORCH_POOL = staticmethod(torch.max_pool3d)


class Flatten(_Passthrough, nn.Flatten):
    """nn.Flatten reshaping a kernel's quantized output directly."""

    def forward(self, x: Any) -> Any:
        tq = _kernel_input(x)
        if tq is None:
            return super().forward(x)
        return from_torch(torch.flatten(tq, self.start_dim, self.end_dim), x._qparams)


#: float module class -> factory of its lowered form.
PASSTHROUGH_LOWERINGS = {
    nn.MaxPool1d: MaxPool1d.from_reference,
    nn.MaxPool2d: MaxPool2d.from_reference,
    nn.MaxPool3d: MaxPool3d.from_reference,
    nn.Flatten: Flatten.from_reference,
}
