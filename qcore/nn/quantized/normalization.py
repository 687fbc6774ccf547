"""Statically quantized LayerNorm, GroupNorm and InstanceNorm1d/2d/3d (torch.ao.nn.quantized's).

QTensor in, QTensor out: the input is dequantized, normalized in float32 with
the float affine ``weight``/``bias`` (buffers, None without affine), and
quantized with the module's output qparams.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.base import QuantizedModule, module_label, output_qparams_from
from qcore.nn.quantized.scripting import FloatModuleTwin
from qcore.qtensor import QTensor

__all__ = ["LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


def _float_buffer(value: Optional[Tensor]) -> Optional[Tensor]:
    return None if value is None else value.detach().to(torch.float32).clone()


def _observed(cls: type, mod: Any, float_type: type) -> Any:
    """The output qparams of an observed float module of exactly ``float_type``."""
    if type(mod) is not float_type:
        raise ConfigError(f"{cls.__name__}.from_float expects an observed torch.nn.{float_type.__name__}, got {type(mod).__name__}")
    post = getattr(mod, "activation_post_process", None)
    if isinstance(post, nn.Identity):
        post = None
    return output_qparams_from(post, cls.__name__)


def instance_norm(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], eps: float, batched_dim: int) -> Tensor:
    """Instance normalization with the input's own statistics; one dimension fewer means unbatched (TorchScript-able)."""
    if x.dim() == batched_dim - 1:
        return F.instance_norm(x.unsqueeze(0), None, None, weight, bias, True, 0.0, eps).squeeze(0)
    return F.instance_norm(x, None, None, weight, bias, True, 0.0, eps)


class _LayerNormOp(nn.Module):
    """``F.layer_norm`` with fixed parameters: what LayerNorm runs, scriptable for its TorchScript twin."""

    def __init__(self, normalized_shape: Sequence[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> None:
        super().__init__()
        self.normalized_shape = [int(s) for s in normalized_shape]
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class _GroupNormOp(nn.Module):
    """``F.group_norm`` with fixed parameters: what GroupNorm runs, scriptable for its TorchScript twin."""

    def __init__(self, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> None:
        super().__init__()
        self.num_groups = int(num_groups)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class _InstanceNormOp(nn.Module):
    """:func:`instance_norm` with fixed parameters: what InstanceNorm*d runs, scriptable for its TorchScript twin."""

    def __init__(self, batched_dim: int, weight: Optional[Tensor], bias: Optional[Tensor], eps: float) -> None:
        super().__init__()
        self.batched_dim = int(batched_dim)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        return instance_norm(x, self.weight, self.bias, self.eps, self.batched_dim)


class _QuantizedNorm(QuantizedModule):
    """Shared parts: float weight/bias buffers, forward through the float op module, the twin."""

    weight: Optional[Tensor]
    bias: Optional[Tensor]

    def __init__(
        self, weight: Optional[Tensor], bias: Optional[Tensor], scale: float, zero_point: int, eps: float, output_dtype: DTypeLike
    ) -> None:
        QuantizedModule.__init__(self, output_dtype)
        self.register_buffer("weight", _float_buffer(weight))
        self.register_buffer("bias", _float_buffer(bias))
        self.eps = float(eps)
        self.set_output_qparams(scale, zero_point)

    def _get_name(self) -> str:
        return "Quantized" + type(self).__name__

    def _op(self, weight: Optional[Tensor], bias: Optional[Tensor]) -> nn.Module:
        raise NotImplementedError

    def _check_input(self, x: QTensor) -> None:
        """Raise QuantizationError, naming the module, for an input of the wrong shape."""

    def forward(self, x: QTensor) -> QTensor:
        q = self._as_qtensor_input(x)
        self._check_input(q)
        return self._quantize_output(self._op(self.weight, self.bias)(q.dequantize()))

    def __prepare_scriptable__(self) -> nn.Module:
        op = self._op(_float_buffer(self.weight), _float_buffer(self.bias))
        return FloatModuleTwin(op, self.scale, self.zero_point, self.quant_min, self.quant_max, source=self)


class LayerNorm(_QuantizedNorm):
    """Quantized LayerNorm over the trailing ``normalized_shape`` dimensions."""

    def __init__(
        self,
        normalized_shape: Union[int, Sequence[int]],
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        scale: float,
        zero_point: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        super().__init__(weight, bias, scale, zero_point, eps, output_dtype)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape = tuple(int(s) for s in shape)
        self.elementwise_affine = bool(elementwise_affine)

    def _op(self, weight: Optional[Tensor], bias: Optional[Tensor]) -> nn.Module:
        return _LayerNormOp(self.normalized_shape, weight, bias, self.eps)

    def _check_input(self, x: QTensor) -> None:
        n = len(self.normalized_shape)
        if tuple(x.shape[x.dim() - n :]) != self.normalized_shape or x.dim() < n:
            raise QuantizationError(
                f"{module_label(self)}: input of shape {tuple(x.shape)} does not end in normalized_shape {self.normalized_shape}"
            )

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, {self._output_repr()}"

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "LayerNorm":
        qp = _observed(cls, mod, nn.LayerNorm)
        new = cls(
            mod.normalized_shape, mod.weight, mod.bias, qp.scale, qp.zero_point, mod.eps, mod.elementwise_affine, output_dtype=qp.dtype
        )
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new


class GroupNorm(_QuantizedNorm):
    """Quantized GroupNorm: ``num_channels`` split into ``num_groups`` groups, each normalized."""

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        scale: float,
        zero_point: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        if num_groups <= 0 or num_channels % num_groups:
            raise ConfigError(f"GroupNorm: num_channels ({num_channels}) must be a positive multiple of num_groups ({num_groups})")
        super().__init__(weight, bias, scale, zero_point, eps, output_dtype)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.affine = bool(affine)

    def _op(self, weight: Optional[Tensor], bias: Optional[Tensor]) -> nn.Module:
        return _GroupNormOp(self.num_groups, weight, bias, self.eps)

    def _check_input(self, x: QTensor) -> None:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise QuantizationError(
                f"{module_label(self)}: expected an input (N, {self.num_channels}, *), got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, {self._output_repr()}"

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "GroupNorm":
        qp = _observed(cls, mod, nn.GroupNorm)
        new = cls(
            mod.num_groups, mod.num_channels, mod.weight, mod.bias, qp.scale, qp.zero_point, mod.eps, mod.affine,
            output_dtype=qp.dtype,
        )
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new


class _InstanceNorm(_QuantizedNorm):
    """Quantized InstanceNorm: each channel of each sample normalized with its own statistics.

    Running statistics are never used (``track_running_stats`` is kept for the
    repr only), as in torch.ao's quantized kernels.
    """

    _FLOAT_MODULE: type = nn.Module
    _BATCHED_DIM = 0

    def __init__(
        self,
        num_features: int,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        scale: float,
        zero_point: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        output_dtype: DTypeLike = dtypes.uint8,
    ) -> None:
        super().__init__(weight, bias, scale, zero_point, eps, output_dtype)
        self.num_features = int(num_features)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)

    def _op(self, weight: Optional[Tensor], bias: Optional[Tensor]) -> nn.Module:
        return _InstanceNormOp(self._BATCHED_DIM, weight, bias, self.eps)

    def _check_input(self, x: QTensor) -> None:
        d = self._BATCHED_DIM
        if x.dim() not in (d - 1, d) or x.shape[x.dim() - d + 1] != self.num_features:
            raise QuantizationError(
                f"{module_label(self)}: expected a {d}-d input (N, {self.num_features}, ...) or a {d - 1}-d unbatched one, "
                f"got shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}, {self._output_repr()}"
        )

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        qp = _observed(cls, mod, cls._FLOAT_MODULE)
        new = cls(
            mod.num_features, mod.weight, mod.bias, qp.scale, qp.zero_point, mod.eps, mod.momentum, mod.affine,
            mod.track_running_stats, output_dtype=qp.dtype,
        )
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new


class InstanceNorm1d(_InstanceNorm):
    """Quantized InstanceNorm1d: input (N, C, L) or (C, L)."""

    _FLOAT_MODULE = nn.InstanceNorm1d
    _BATCHED_DIM = 3


class InstanceNorm2d(_InstanceNorm):
    """Quantized InstanceNorm2d: input (N, C, H, W) or (C, H, W)."""

    _FLOAT_MODULE = nn.InstanceNorm2d
    _BATCHED_DIM = 4


class InstanceNorm3d(_InstanceNorm):
    """Quantized InstanceNorm3d: input (N, C, D, H, W) or (C, D, H, W)."""

    _FLOAT_MODULE = nn.InstanceNorm3d
    _BATCHED_DIM = 5


#: {float module: quantized module} for the static mapping table.
STATIC_MAPPINGS: dict[type, type] = {
    nn.LayerNorm: LayerNorm,
    nn.GroupNorm: GroupNorm,
    nn.InstanceNorm1d: InstanceNorm1d,
    nn.InstanceNorm2d: InstanceNorm2d,
    nn.InstanceNorm3d: InstanceNorm3d,
}
