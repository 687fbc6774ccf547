"""Statically quantized BatchNorm2d / BatchNorm3d (torch.ao.nn.quantized's): inference with running statistics.

QTensor in, QTensor out: ``quantize(batch_norm(x.dequantize()))`` with the
float ``weight``, ``bias``, ``running_mean`` and ``running_var`` (buffers) and
the module's output qparams. The fused BNReLU2d/3d subclasses apply ReLU
before quantizing.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.base import QuantizedModule, module_label, output_qparams_from
from qcore.nn.quantized.scripting import FloatModuleTwin
from qcore.qtensor import QTensor

__all__ = ["BatchNorm2d", "BatchNorm3d"]


class _BatchNormOp(nn.Module):
    """Inference batch norm (running statistics, any training mode), optionally followed by ReLU; scriptable."""

    def __init__(self, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor, eps: float, relu: bool) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("running_mean", running_mean)
        self.register_buffer("running_var", running_var)
        self.eps = float(eps)
        self.relu = bool(relu)

    def forward(self, x: Tensor) -> Tensor:
        y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if self.relu:
            y = F.relu(y)
        return y


class _BatchNorm(QuantizedModule):
    """Shared parts of the quantized batch norms (and, with ``_WITH_RELU``, of BNReLU2d/3d)."""

    _FLOAT_MODULE: type = nn.Module
    _INPUT_DIM = 0
    _WITH_RELU = False

    weight: Tensor
    bias: Tensor
    running_mean: Tensor
    running_var: Tensor

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *, output_dtype: DTypeLike = dtypes.uint8) -> None:
        QuantizedModule.__init__(self, output_dtype)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.register_buffer("weight", torch.ones(self.num_features))
        self.register_buffer("bias", torch.zeros(self.num_features))
        self.register_buffer("running_mean", torch.zeros(self.num_features))
        self.register_buffer("running_var", torch.ones(self.num_features))

    def _get_name(self) -> str:
        return "Quantized" + type(self).__name__

    def _op(self, clone: bool = False) -> _BatchNormOp:
        tensors = [self.weight, self.bias, self.running_mean, self.running_var]
        if clone:
            tensors = [t.detach().clone() for t in tensors]
        return _BatchNormOp(*tensors, eps=self.eps, relu=self._WITH_RELU)

    def forward(self, x: QTensor) -> QTensor:
        q = self._as_qtensor_input(x)
        if q.dim() != self._INPUT_DIM or q.shape[1] != self.num_features:
            raise QuantizationError(
                f"{module_label(self)}: expected a {self._INPUT_DIM}-d input (N, {self.num_features}, ...), got shape {tuple(q.shape)}"
            )
        return self._quantize_output(self._op()(q.dequantize()))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, {self._output_repr()}"

    def __prepare_scriptable__(self) -> nn.Module:
        return FloatModuleTwin(self._op(clone=True), self.scale, self.zero_point, self.quant_min, self.quant_max, source=self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """From an observed float batch norm (or, for BNReLU2d/3d, the fused float BNReLU) in eval statistics."""
        if type(mod) is not cls._FLOAT_MODULE:
            hint = ""
            if not cls._WITH_RELU and isinstance(mod, nn.Sequential):
                hint = f"; a fused BatchNorm+ReLU converts to qcore.nn.intrinsic.quantized.BNReLU{cls._INPUT_DIM - 2}d"
            raise ConfigError(
                f"{cls.__name__}.from_float expects an observed {cls._FLOAT_MODULE.__module__}.{cls._FLOAT_MODULE.__name__}, "
                f"got {type(mod).__name__}{hint}"
            )
        post = getattr(mod, "activation_post_process", None)
        if isinstance(post, nn.Identity):
            post = None
        qp = output_qparams_from(post, cls.__name__)
        bn = mod[0] if cls._WITH_RELU else mod
        if bn.running_mean is None or bn.running_var is None:
            raise ConfigError(
                f"{cls.__name__}.from_float: the {type(bn).__name__} has no running statistics (track_running_stats=False); "
                "quantized batch norm needs them"
            )
        new = cls(bn.num_features, bn.eps, bn.momentum, output_dtype=qp.dtype)
        new.to(bn.running_mean.device)
        with torch.no_grad():
            if bn.weight is not None:
                new.weight.copy_(bn.weight)
            if bn.bias is not None:
                new.bias.copy_(bn.bias)
            new.running_mean.copy_(bn.running_mean)
            new.running_var.copy_(bn.running_var)
        new.set_output_qparams(qp.scale, qp.zero_point, qp.dtype, qp.quant_min, qp.quant_max)
        return new

    @classmethod
    def from_reference(cls, bn: Any, output_scale: float, output_zero_point: int, output_dtype: Optional[DTypeLike] = None) -> Any:
        """From a float batch norm (or fused BNReLU) and explicit output qparams."""
        if cls._WITH_RELU:
            bn = bn[0]
        new = cls(bn.num_features, bn.eps, bn.momentum, output_dtype=output_dtype or dtypes.uint8)
        with torch.no_grad():
            if bn.weight is not None:
                new.weight.copy_(bn.weight)
            if bn.bias is not None:
                new.bias.copy_(bn.bias)
            new.running_mean.copy_(bn.running_mean)
            new.running_var.copy_(bn.running_var)
        new.set_output_qparams(output_scale, output_zero_point)
        return new


class BatchNorm2d(_BatchNorm):
    """Quantized BatchNorm2d: input (N, C, H, W)."""

    _FLOAT_MODULE = nn.BatchNorm2d
    _INPUT_DIM = 4


class BatchNorm3d(_BatchNorm):
    """Quantized BatchNorm3d: input (N, C, D, H, W)."""

    _FLOAT_MODULE = nn.BatchNorm3d
    _INPUT_DIM = 5


#: {float module: quantized module} for the static mapping table.
STATIC_MAPPINGS: dict[type, type] = {nn.BatchNorm2d: BatchNorm2d, nn.BatchNorm3d: BatchNorm3d}
