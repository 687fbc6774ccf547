"""Quantized Embedding and EmbeddingBag (torch.ao.nn.quantized): per-row quantized tables, float outputs.

Each row of the table has its own scale and (float) offset, torch.ao's
``per_channel_affine_float_qparams`` scheme from ``float_qparams_weight_only_qconfig``
(8-bit) or ``float_qparams_weight_only_qconfig_4bit`` (4-bit values packed two
per byte). The indices select rows; only the selected rows are dequantized
(exactly, as ``QTensor.dequantize()`` would) and the float op runs on them, so
a large table stays quantized in memory. ``cache_dequantized=True`` keeps the
whole dequantized table instead (faster lookups, float32 memory).

torch.ao differences, by design: torch.ao's EmbeddingBag always sums (it
ignores ``mode``) and ignores ``padding_idx``; here ``mode`` "sum", "mean" and
"max", ``padding_idx`` and ``max_norm`` behave as in ``torch.nn.EmbeddingBag``
on the dequantized table (``max_norm`` renormalizes a copy of the selected
rows, never the stored table). torch.ao's fbgemm kernels keep 4-bit row
scales and offsets in float16; the reference keeps them in float32, which is
what ``weight().dequantize()`` gives in both.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore import dtypes
from qcore.dtypes import DTypeLike, QScheme
from qcore.errors import ConfigError, QuantizationError
from qcore.qtensor import QTensor
from qcore.nn.quantized.base import module_label
from qcore.nn.quantized.weight_only.functional import dequantize_weight
from qcore.nn.quantized.weight_only.storage import QuantizedWeightStorage, quantize_weight, weight_dtype_of

__all__ = ["Embedding", "EmbeddingBag"]

_TABLE_DTYPES = (dtypes.uint8, dtypes.int8, dtypes.uint4, dtypes.int4)
_MODES = ("sum", "mean", "max")


def _check_indices(module: nn.Module, indices: Any) -> None:
    if isinstance(indices, QTensor) or not isinstance(indices, Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
        got = f"a {indices.dtype} tensor" if isinstance(indices, Tensor) else type(indices).__name__
        raise QuantizationError(f"{module_label(module)} expects integer indices (torch.long or torch.int), got {got}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= module.num_embeddings):
        raise QuantizationError(
            f"{module_label(module)}: indices span [{int(indices.min())}, {int(indices.max())}], outside the table's "
            f"[0, {module.num_embeddings - 1}]"
        )


class Embedding(QuantizedWeightStorage):
    """torch.ao.nn.quantized.Embedding on the reference backend: integer indices in, float rows out.

    ``dtype``: ``torch.quint8`` / ``"uint8"`` (default) or ``torch.quint4x2`` /
    ``"uint4"`` (signed int8/int4 tables work too). The table is quantized per row.
    """

    _FLOAT_MODULE = nn.Embedding

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Optional[QTensor] = None,
        dtype: DTypeLike = dtypes.uint8,
        *,
        cache_dequantized: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        d = dtypes.qdtype(dtype)
        if d not in _TABLE_DTYPES:
            raise ConfigError(f"{owner}: tables are stored as uint8 or uint4 (torch.quint8 / torch.quint4x2), not {d.name}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            padding_idx = int(padding_idx)
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ConfigError(f"{owner}: padding_idx {padding_idx} must be within the table's {self.num_embeddings} rows")
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.max_norm = None if max_norm is None else float(max_norm)
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = bool(sparse)
        self._init_weight((self.num_embeddings, self.embedding_dim), d, bias=False, cache_dequantized=cache_dequantized)
        # torch.ao's initial table: per row, scale 1, offset 0.
        self._store(
            self._int_weight(), torch.ones(self.num_embeddings), torch.zeros(self.num_embeddings), 0, 0, d,
            QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS,
        )
        self._refresh()
        if _weight is not None:
            self.set_weight(_weight)

    @property
    def dtype(self) -> dtypes.QDType:
        """The table's dtype (torch.ao's ``dtype`` attribute)."""
        return self.weight_dtype

    __jit_unused_properties__ = ["dtype"]

    def set_weight(self, w: QTensor) -> None:
        """Store a table quantized per row (a QTensor, per channel along axis 0)."""
        owner = type(self).__name__
        if not isinstance(w, QTensor):
            raise QuantizationError(f"{owner}.set_weight: the table must be a QTensor quantized per row, got {type(w).__name__}")
        if not w.qscheme().is_per_channel or w.q_per_channel_axis() != 0:
            raise QuantizationError(
                f"{owner}.set_weight: the table must be quantized per row (per channel along axis 0), got {w.qscheme().value}; "
                "use qcore.float_qparams_weight_only_qconfig"
            )
        self.set_weight_bias(w, None)

    # --- forward -------------------------------------------------------------------------------

    def _rows(self, indices: Tensor) -> Tuple[Tensor, Tensor, Optional[int]]:
        """(float rows, indices into them, padding row among them): the selected rows only, unless cached."""
        if self._cached:
            table = self._weight_float.clone() if self.max_norm is not None else self._weight_float
            return table, indices, self.padding_idx
        unique, inverse = torch.unique(indices, sorted=True, return_inverse=True)
        table = dequantize_weight(
            self._qweight.index_select(0, unique),
            self.weight_scale.index_select(0, unique),
            self.weight_zero_point.index_select(0, unique),
            0, 0, self._bits, self._signed, self._length,
        )
        padding: Optional[int] = None
        pad = self.padding_idx
        if pad is not None:
            hit = (unique == pad).nonzero()
            if hit.numel() > 0:
                padding = int(hit[0, 0])
        return table, inverse, padding

    def forward(self, indices: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            _check_indices(self, indices)
        table, index, padding = self._rows(indices)
        return F.embedding(index, table, padding, self.max_norm, self.norm_type)

    # --- repr, conversion -------------------------------------------------------------------------

    def _get_name(self) -> str:
        return "QuantizedEmbedding"

    def _table_repr(self) -> str:
        text = f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, dtype={self.weight_dtype.name}, qscheme={self.weight_qscheme.value}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        return text

    def extra_repr(self) -> str:
        return self._table_repr()

    @classmethod
    def _weight_observer(cls, mod: nn.Module) -> Any:
        """The observer or fake-quant giving the table's qparams: ``weight_fake_quant`` (QAT) or ``qconfig.weight()``."""
        owner = f"quantized.{cls.__name__}"
        fake_quant = getattr(mod, "weight_fake_quant", None)
        if fake_quant is not None:
            observer = fake_quant
        else:
            if not hasattr(mod, "qconfig"):
                raise ConfigError(
                    f"{owner}.from_float: the {type(mod).__name__} has no qconfig; set mod.qconfig = "
                    "qcore.float_qparams_weight_only_qconfig (or float_qparams_weight_only_qconfig_4bit)"
                )
            from qcore.qconfig import float_qparams_weight_only_qconfig

            qconfig = mod.qconfig if mod.qconfig is not None else float_qparams_weight_only_qconfig
            observer = qconfig.weight()
            observer(mod.weight.detach())
        d = weight_dtype_of(observer, owner)
        qscheme = dtypes.qscheme(observer.qscheme)
        if d not in _TABLE_DTYPES or not qscheme.is_per_channel or int(getattr(observer, "ch_axis", 0)) != 0:
            raise ConfigError(
                f"{owner}.from_float: embedding tables are quantized per row to uint8 or uint4; the weight observer gives "
                f"{d.name} {qscheme.value}. Use qcore.float_qparams_weight_only_qconfig (8-bit) or "
                "float_qparams_weight_only_qconfig_4bit (4-bit)"
            )
        return observer

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> "Embedding":
        """Quantize a float (or QAT) ``nn.Embedding`` per row with ``mod.qconfig``'s weight observer."""
        if not isinstance(mod, cls._FLOAT_MODULE):
            raise ConfigError(f"quantized.{cls.__name__}.from_float expects an nn.{cls._FLOAT_MODULE.__name__}, got {type(mod).__name__}")
        observer = cls._weight_observer(mod)
        qweight = quantize_weight(mod.weight, observer, f"quantized.{cls.__name__}")
        module = cls._new_like(mod, weight_dtype_of(observer, cls.__name__))
        module.set_weight(qweight)
        return module

    @classmethod
    def _new_like(cls, mod: nn.Module, d: dtypes.QDType) -> "Embedding":
        return cls(mod.num_embeddings, mod.embedding_dim, mod.padding_idx, mod.max_norm, mod.norm_type, mod.scale_grad_by_freq, mod.sparse, dtype=d)


class EmbeddingBag(Embedding):
    """torch.ao.nn.quantized.EmbeddingBag on the reference backend: bags of rows reduced by sum, mean or max.

    ``forward(indices, offsets, per_sample_weights)`` follows ``torch.nn.EmbeddingBag``
    (``include_last_offset``, ``padding_idx``, per-sample weights with "sum").
    """

    _FLOAT_MODULE = nn.EmbeddingBag

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: Optional[float] = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "sum",
        sparse: bool = False,
        _weight: Optional[QTensor] = None,
        include_last_offset: bool = False,
        dtype: DTypeLike = dtypes.uint8,
        *,
        padding_idx: Optional[int] = None,
        cache_dequantized: bool = False,
    ) -> None:
        if mode not in _MODES:
            raise ConfigError(f"EmbeddingBag: mode must be one of {', '.join(_MODES)}, got {mode!r}")
        super().__init__(
            num_embeddings, embedding_dim, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse, _weight, dtype,
            cache_dequantized=cache_dequantized,
        )
        self.mode = mode
        self.include_last_offset = bool(include_last_offset)
        self.pruned_weights = False

    def forward(  # type: ignore[override]
        self,
        indices: Tensor,
        offsets: Optional[Tensor] = None,
        per_sample_weights: Optional[Tensor] = None,
        compressed_indices_mapping: Optional[Tensor] = None,
    ) -> Tensor:
        if not torch.jit.is_scripting():
            _check_indices(self, indices)
        if compressed_indices_mapping is not None:
            raise QuantizationError("EmbeddingBag: pruned tables (compressed_indices_mapping) are not supported")
        table, index, padding = self._rows(indices)
        return F.embedding_bag(
            index, table, offsets, self.max_norm, self.norm_type, False, self.mode, False, per_sample_weights,
            self.include_last_offset, padding,
        )

    def _get_name(self) -> str:
        return "QuantizedEmbeddingBag"

    def extra_repr(self) -> str:
        text = f"{self._table_repr()}, mode={self.mode}"
        if self.include_last_offset:
            text += ", include_last_offset=True"
        return text

    @classmethod
    def _new_like(cls, mod: nn.Module, d: dtypes.QDType) -> "EmbeddingBag":
        return cls(
            mod.num_embeddings, mod.embedding_dim, mod.max_norm, mod.norm_type, mod.scale_grad_by_freq, mod.mode, mod.sparse,
            include_last_offset=mod.include_last_offset, dtype=d, padding_idx=mod.padding_idx,
        )
