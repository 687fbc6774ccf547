"""Pooling and flatten modules that call torch's quantized op directly on a kernel's output.

These float modules already run on a QTensor (its ``__torch_function__``
computes them: exactly, or for average pooling with torch's rounding), so
convert keeps them; on fbgemm it lowers
them to these subclasses, which skip that dispatch (about 5 us a call, as
much as the kernel at small batches) when the input is a tensor a kernel
produced. Any other input runs the float module's own forward.
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from qcore.nn.quantized.scripting import PassThroughTwin

from qcore_fbgemm.torch_quantized import KernelQTensor, from_torch, torch_avg_pool_agrees

__all__ = [
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Flatten", "PASSTHROUGH_LOWERINGS",
]


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
        """TorchScript runs the float module: scripted quantized models pass dequantized values between twins.

        The twin keeps this module as its source (eager calls still run here). It must: torch.jit.script
        remembers prepared modules by ``id()``, so a replaced module that is freed during scripting could
        lend its id to a module made later and have that one replaced by the wrong twin.
        """
        return PassThroughTwin(self.to_reference(), source=self)


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


class _AvgPool(_Passthrough):
    """Average pooling: torch's quantized kernel where it gives the QTensor handler's integers, else the float forward."""

    _SPATIAL: int
    _ADAPTIVE = False

    def forward(self, x: Any) -> Any:
        tq = _kernel_input(x)
        if tq is None or not torch_avg_pool_agrees(self._ADAPTIVE, self._SPATIAL, tq):
            return super().forward(x)  # type: ignore[misc]
        return from_torch(self._pool(tq), x._qparams)

    def _pool(self, tq: torch.Tensor) -> torch.Tensor:
        if self._SPATIAL == 1:
            return torch.avg_pool1d(tq, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)
        pool = F.avg_pool2d if self._SPATIAL == 2 else F.avg_pool3d
        return pool(tq, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                    self.divisor_override)


class AvgPool1d(_AvgPool, nn.AvgPool1d):
    """nn.AvgPool1d running torch's quantized ``avg_pool1d`` on a kernel's quantized output."""

    _SPATIAL = 1


class AvgPool2d(_AvgPool, nn.AvgPool2d):
    """nn.AvgPool2d running torch's quantized ``avg_pool2d`` on a kernel's quantized output."""

    _SPATIAL = 2


class AvgPool3d(_AvgPool, nn.AvgPool3d):
    """nn.AvgPool3d running torch's quantized ``avg_pool3d`` on a kernel's quantized output."""

    _SPATIAL = 3


class _AdaptiveAvgPool(_AvgPool):
    _ADAPTIVE = True
    _TORCH_POOL: Any

    def _pool(self, tq: torch.Tensor) -> torch.Tensor:
        return type(self)._TORCH_POOL(tq, self.output_size)


class AdaptiveAvgPool1d(_AdaptiveAvgPool, nn.AdaptiveAvgPool1d):
    """nn.AdaptiveAvgPool1d running torch's quantized ``adaptive_avg_pool1d`` on a kernel's quantized output."""

    _SPATIAL = 1
    _TORCH_POOL = staticmethod(F.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptiveAvgPool, nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d running torch's quantized ``adaptive_avg_pool2d`` on a kernel's quantized output."""

    _SPATIAL = 2
    _TORCH_POOL = staticmethod(F.adaptive_avg_pool2d)


class AdaptiveAvgPool3d(_AdaptiveAvgPool, nn.AdaptiveAvgPool3d):
    """nn.AdaptiveAvgPool3d running torch's quantized ``adaptive_avg_pool3d`` on a kernel's quantized output."""

    _SPATIAL = 3
    _TORCH_POOL = staticmethod(F.adaptive_avg_pool3d)


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
    nn.AvgPool1d: AvgPool1d.from_reference,
    nn.AvgPool2d: AvgPool2d.from_reference,
    nn.AvgPool3d: AvgPool3d.from_reference,
    nn.AdaptiveAvgPool1d: AdaptiveAvgPool1d.from_reference,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d.from_reference,
    nn.AdaptiveAvgPool3d: AdaptiveAvgPool3d.from_reference,
    nn.Flatten: Flatten.from_reference,
}
