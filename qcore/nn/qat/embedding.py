"""QAT Embedding / EmbeddingBag: lookups in the fake-quantized table (torch.ao.nn.qat.Embedding*).

The table is fake-quantized row by row with float scale and zero point
(``per_channel_affine_float_qparams``, as ``qcore.default_embedding_qat_qconfig``);
the looked-up values are not quantized (the activation stays float).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from qcore import dtypes
from qcore.dtypes import QScheme
from qcore.errors import ConfigError
from qcore.nn.qat._common import detached_parameter, float_module_qconfig, public_name, require_qconfig

__all__ = ["Embedding", "EmbeddingBag"]


def _row_wise_weight_fake_quant(cls: type, qconfig: Any, device: Optional[torch.device]) -> nn.Module:
    """``qconfig.weight()``, checked to quantize rows with float qparams."""
    require_qconfig(cls, qconfig, "qcore.default_embedding_qat_qconfig")
    weight_fake_quant = qconfig.weight()
    found = getattr(weight_fake_quant, "qscheme", None)
    scheme = dtypes.qscheme(found) if found is not None else None
    if scheme is not QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS:
        raise ConfigError(
            f"{public_name(cls)} quantizes its table per row with float qparams: qconfig.weight must have "
            f"qscheme per_channel_affine_float_qparams, got {scheme if scheme is not None else type(weight_fake_quant).__name__}. "
            "Use qcore.default_embedding_qat_qconfig (or default_embedding_qat_qconfig_4bit)"
        )
    if device is not None:
        weight_fake_quant.to(device)
    return weight_fake_quant


def _with_table_of(qat: nn.Module, float_module: nn.Module) -> Any:
    """``float_module`` holding ``qat``'s current table (detached), in ``qat``'s training mode."""
    float_module.weight = detached_parameter(qat.weight)
    float_module.train(qat.training)
    return float_module


class Embedding(nn.Embedding):
    """``F.embedding`` into ``weight_fake_quant(weight)``: training sees the table as the quantized model will."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.Embedding

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Optional[torch.Tensor] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        qconfig: Any = None,
    ) -> None:
        super().__init__(
            num_embeddings,
            embedding_dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            _weight,
            device=device,
            dtype=dtype,
        )
        self.weight_fake_quant = _row_wise_weight_fake_quant(type(self), qconfig, device)
        self.qconfig = qconfig

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.embedding(
            input,
            self.weight_fake_quant(self.weight),
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    @staticmethod
    def _float_args(mod: nn.Embedding) -> tuple[Any, ...]:
        """``mod``'s table layout, as ``nn.Embedding`` takes it positionally (before ``_weight``)."""
        return (mod.num_embeddings, mod.embedding_dim, mod.padding_idx, mod.max_norm, mod.norm_type,
                mod.scale_grad_by_freq, mod.sparse)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Embedding":
        """The QAT module over ``mod``'s table (the same storage)."""
        qconfig = float_module_qconfig(cls, mod, "qcore.default_embedding_qat_qconfig")
        return cls(*cls._float_args(mod), mod.weight, device=mod.weight.device, qconfig=qconfig)

    def to_float(self) -> nn.Embedding:
        """A plain ``nn.Embedding`` with the current table."""
        return _with_table_of(self, nn.Embedding(*self._float_args(self)))


class EmbeddingBag(nn.EmbeddingBag):
    """``F.embedding_bag`` over ``weight_fake_quant(weight)`` (sum / mean / max of fake-quantized rows)."""

    _FLOAT_MODULE: ClassVar[type[nn.Module]] = nn.EmbeddingBag

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: Optional[torch.Tensor] = None,
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
        qconfig: Any = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(
            num_embeddings,
            embedding_dim,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            mode,
            sparse,
            _weight,
            include_last_offset,
            padding_idx,
            device=device,
            dtype=dtype,
        )
        self.weight_fake_quant = _row_wise_weight_fake_quant(type(self), qconfig, device)
        self.qconfig = qconfig

    def forward(
        self,
        input: torch.Tensor,
        offsets: Optional[torch.Tensor] = None,
        per_sample_weights: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        return F.embedding_bag(
            input,
            self.weight_fake_quant(self.weight),
            offsets,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.mode,
            self.sparse,
            per_sample_weights,
            self.include_last_offset,
            self.padding_idx,
        )

    @staticmethod
    def _float_args(mod: nn.EmbeddingBag, weight: Optional[torch.Tensor] = None) -> tuple[Any, ...]:
        """``mod``'s table layout, as ``nn.EmbeddingBag`` takes it positionally, with ``weight`` as ``_weight``."""
        return (mod.num_embeddings, mod.embedding_dim, mod.max_norm, mod.norm_type, mod.scale_grad_by_freq,
                mod.mode, mod.sparse, weight, mod.include_last_offset, mod.padding_idx)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "EmbeddingBag":
        """The QAT module over ``mod``'s table (the same storage)."""
        qconfig = float_module_qconfig(cls, mod, "qcore.default_embedding_qat_qconfig")
        return cls(*cls._float_args(mod, mod.weight), qconfig=qconfig, device=mod.weight.device)

    def to_float(self) -> nn.EmbeddingBag:
        """A plain ``nn.EmbeddingBag`` with the current table."""
        return _with_table_of(self, nn.EmbeddingBag(*self._float_args(self)))
