"""Fused float modules (torch.ao.nn.intrinsic): the containers fusion produces.

Each is an ``nn.Sequential`` of its float parts, so it computes exactly what the
parts computed one after the other; prepare/convert then swap the whole
container for one QAT or quantized module. The parts' types are checked
exactly (subclasses are not accepted), as torch.ao does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError

__all__ = [
    "BNReLU2d",
    "BNReLU3d",
    "ConvAdd1d",
    "ConvAdd2d",
    "ConvAddReLU1d",
    "ConvAddReLU2d",
    "ConvBn1d",
    "ConvBn2d",
    "ConvBn3d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvBnReLU3d",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvReLU3d",
    "ConvTransposeBn1d",
    "ConvTransposeBn2d",
    "ConvTransposeBn3d",
    "FusedModule",
    "LinearBn1d",
    "LinearLeakyReLU",
    "LinearReLU",
    "LinearTanh",
]


class FusedModule(nn.Sequential):
    """Marker base of every fused float module: prepare/convert treat it as one unit, not a container."""

    #: The exact part types, in order, that the subclass accepts.
    _part_types: tuple[type, ...] = ()

    def __init__(self, *parts: nn.Module) -> None:
        _check_parts(type(self), parts, self._part_types)
        super().__init__(*parts)


#: torch.ao's spelling of the marker base.
_FusedModule = FusedModule


def _check_parts(cls: type, parts: tuple[Any, ...], expected: tuple[type, ...]) -> None:
    got = tuple(type_before_parametrizations(p) if isinstance(p, nn.Module) else type(p) for p in parts)
    if got != expected:
        raise ConfigError(
            f"{cls.__name__} fuses ({', '.join(t.__name__ for t in expected)}); got "
            f"({', '.join(t.__name__ for t in got)}). Pass modules of exactly these types, in this order "
            f"(subclasses are not accepted)"
        )


class ConvReLU1d(FusedModule):
    """Conv1d then ReLU; replaced by the QAT / quantized ConvReLU1d."""

    _part_types = (nn.Conv1d, nn.ReLU)

    def __init__(self, conv: nn.Conv1d, relu: nn.ReLU) -> None:
        super().__init__(conv, relu)


class ConvReLU2d(FusedModule):
    """Conv2d then ReLU; replaced by the QAT / quantized ConvReLU2d."""

    _part_types = (nn.Conv2d, nn.ReLU)

    def __init__(self, conv: nn.Conv2d, relu: nn.ReLU) -> None:
        super().__init__(conv, relu)


class ConvReLU3d(FusedModule):
    """Conv3d then ReLU; replaced by the QAT / quantized ConvReLU3d."""

    _part_types = (nn.Conv3d, nn.ReLU)

    def __init__(self, conv: nn.Conv3d, relu: nn.ReLU) -> None:
        super().__init__(conv, relu)


class LinearReLU(FusedModule):
    """Linear then ReLU; replaced by the QAT / quantized LinearReLU."""

    _part_types = (nn.Linear, nn.ReLU)

    def __init__(self, linear: nn.Linear, relu: nn.ReLU) -> None:
        super().__init__(linear, relu)


class ConvBn1d(FusedModule):
    """Conv1d then BatchNorm1d (QAT fusion); replaced by the QAT ConvBn1d."""

    _part_types = (nn.Conv1d, nn.BatchNorm1d)

    def __init__(self, conv: nn.Conv1d, bn: nn.BatchNorm1d) -> None:
        super().__init__(conv, bn)


class ConvBn2d(FusedModule):
    """Conv2d then BatchNorm2d (QAT fusion); replaced by the QAT ConvBn2d."""

    _part_types = (nn.Conv2d, nn.BatchNorm2d)

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__(conv, bn)


class ConvBn3d(FusedModule):
    """Conv3d then BatchNorm3d (QAT fusion); replaced by the QAT ConvBn3d."""

    _part_types = (nn.Conv3d, nn.BatchNorm3d)

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d) -> None:
        super().__init__(conv, bn)


class ConvBnReLU1d(FusedModule):
    """Conv1d, BatchNorm1d, ReLU (QAT fusion); replaced by the QAT ConvBnReLU1d."""

    _part_types = (nn.Conv1d, nn.BatchNorm1d, nn.ReLU)

    def __init__(self, conv: nn.Conv1d, bn: nn.BatchNorm1d, relu: nn.ReLU) -> None:
        super().__init__(conv, bn, relu)


class ConvBnReLU2d(FusedModule):
    """Conv2d, BatchNorm2d, ReLU (QAT fusion); replaced by the QAT ConvBnReLU2d."""

    _part_types = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, relu: nn.ReLU) -> None:
        super().__init__(conv, bn, relu)


class ConvBnReLU3d(FusedModule):
    """Conv3d, BatchNorm3d, ReLU (QAT fusion); replaced by the QAT ConvBnReLU3d."""

    _part_types = (nn.Conv3d, nn.BatchNorm3d, nn.ReLU)

    def __init__(self, conv: nn.Conv3d, bn: nn.BatchNorm3d, relu: nn.ReLU) -> None:
        super().__init__(conv, bn, relu)


class BNReLU2d(FusedModule):
    """BatchNorm2d then ReLU; replaced by the quantized BNReLU2d."""

    _part_types = (nn.BatchNorm2d, nn.ReLU)

    def __init__(self, batch_norm: nn.BatchNorm2d, relu: nn.ReLU) -> None:
        super().__init__(batch_norm, relu)


class BNReLU3d(FusedModule):
    """BatchNorm3d then ReLU; replaced by the quantized BNReLU3d."""

    _part_types = (nn.BatchNorm3d, nn.ReLU)

    def __init__(self, batch_norm: nn.BatchNorm3d, relu: nn.ReLU) -> None:
        super().__init__(batch_norm, relu)


class LinearBn1d(FusedModule):
    """Linear then BatchNorm1d (QAT fusion); replaced by the QAT LinearBn1d."""

    _part_types = (nn.Linear, nn.BatchNorm1d)

    def __init__(self, linear: nn.Linear, bn: nn.BatchNorm1d) -> None:
        super().__init__(linear, bn)


class LinearLeakyReLU(FusedModule):
    """Linear then LeakyReLU (a backend's fused kernel, e.g. onednn)."""

    _part_types = (nn.Linear, nn.LeakyReLU)

    def __init__(self, linear: nn.Linear, leaky_relu: nn.LeakyReLU) -> None:
        super().__init__(linear, leaky_relu)


class LinearTanh(FusedModule):
    """Linear then Tanh (a backend's fused kernel, e.g. onednn)."""

    _part_types = (nn.Linear, nn.Tanh)

    def __init__(self, linear: nn.Linear, tanh: nn.Tanh) -> None:
        super().__init__(linear, tanh)


class ConvTransposeBn1d(FusedModule):
    """ConvTranspose1d then BatchNorm1d (QAT fusion; eval-mode fusion folds the BN into the ConvTranspose1d)."""

    _part_types = (nn.ConvTranspose1d, nn.BatchNorm1d)

    def __init__(self, convt: nn.ConvTranspose1d, bn: nn.BatchNorm1d) -> None:
        super().__init__(convt, bn)


class ConvTransposeBn2d(FusedModule):
    """ConvTranspose2d then BatchNorm2d (QAT fusion; eval-mode fusion folds the BN into the ConvTranspose2d)."""

    _part_types = (nn.ConvTranspose2d, nn.BatchNorm2d)

    def __init__(self, convt: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
        super().__init__(convt, bn)


class ConvTransposeBn3d(FusedModule):
    """ConvTranspose3d then BatchNorm3d (QAT fusion; eval-mode fusion folds the BN into the ConvTranspose3d)."""

    _part_types = (nn.ConvTranspose3d, nn.BatchNorm3d)

    def __init__(self, convt: nn.ConvTranspose3d, bn: nn.BatchNorm3d) -> None:
        super().__init__(convt, bn)


class _ConvAdd(FusedModule):
    """A convolution applied to ``x1``, then ``add(conv(x1), x2)`` (then ReLU where ``relu`` is given)."""

    _conv_type: type = nn.Conv2d

    def __init__(self, conv: nn.Module, add: Any, relu: Any = None) -> None:
        _check_parts(type(self), (conv,), (self._conv_type,))
        nn.Sequential.__init__(self, conv)
        self.add = add
        if relu is not None:
            self.relu = relu

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = self.add(self[0](x1), x2)
        relu = self._modules.get("relu")
        return relu(y) if relu is not None else y


class ConvAdd1d(_ConvAdd):
    """Conv1d applied to ``x1``, then ``add(conv(x1), x2)`` (FX-mode fusion of conv + add)."""

    _conv_type = nn.Conv1d

    def __init__(self, conv: nn.Conv1d, add: Any) -> None:
        super().__init__(conv, add)


class ConvAddReLU1d(_ConvAdd):
    """Conv1d applied to ``x1``, then ``relu(add(conv(x1), x2))`` (FX-mode fusion of conv + add + relu)."""

    _conv_type = nn.Conv1d

    def __init__(self, conv: nn.Conv1d, add: Any, relu: nn.Module) -> None:
        super().__init__(conv, add, relu)


class ConvAdd2d(_ConvAdd):
    """Conv2d applied to ``x1``, then ``add(conv(x1), x2)`` (FX-mode fusion of conv + add)."""

    def __init__(self, conv: nn.Conv2d, add: Any) -> None:
        super().__init__(conv, add)


class ConvAddReLU2d(_ConvAdd):
    """Conv2d applied to ``x1``, then ``relu(add(conv(x1), x2))`` (FX-mode fusion of conv + add + relu)."""

    def __init__(self, conv: nn.Conv2d, add: Any, relu: nn.Module) -> None:
        super().__init__(conv, add, relu)
