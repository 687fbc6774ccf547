"""Quantized Embedding / EmbeddingBag on fbgemm's row-wise kernels (8-bit and 4-bit tables).

``quantized::embedding_bag_byte_rowwise_offsets`` / ``_4bit_`` sum the
selected rows of a table packed as plain bytes (see
:func:`~qcore_fbgemm.dynamic.packing.pack_rowwise_table`), dequantizing each
row as ``q * scale + bias``. The table is packed once; the reference's integer
table stays as the state dict holds it.

Numerics against the reference (exact per-row dequantization in float32):
8-bit rows differ by float32 rounding (scale and bias rounded to float32),
about 1e-7 of the row's magnitude. 4-bit rows keep scale and bias in float16,
as torch.ao's tables do: each value moves by at most
``2**-11 * (15 * scale + |bias|)``, below one quantization step (``scale``)
whenever ``|bias| < 2033 * scale``; torch.ao's 4-bit tables give the same
values. Sums and means add float32 rounding per row.

fbgemm's kernel only sums; ``mode="mean"`` divides by the bag sizes here.
Bags reduced by ``max``, ``padding_idx`` (EmbeddingBag), ``max_norm`` and
pruned tables keep the reference module.
"""

from __future__ import annotations

from typing import Any, List, Optional

import torch
from torch import Tensor

from qcore.errors import QuantizationError
from qcore.nn.quantized import embedding as reference
from qcore.nn.quantized.embedding import _check_indices

from qcore_fbgemm.dynamic.base import KernelModule, cpu_only_reason
from qcore_fbgemm.dynamic.packing import pack_rowwise_table, unpack_stored_table

__all__ = ["FbgemmEmbedding", "FbgemmEmbeddingBag"]


def _bag_sizes(flat: Tensor, offsets: Tensor, include_last: bool, bags: int) -> Tensor:
    """Rows per bag, at least 1 (an empty bag's mean is zero, as in torch.nn.EmbeddingBag)."""
    ends = offsets[1:] if include_last else torch.cat([offsets[1:], offsets.new_full((1,), flat.numel())])
    sizes = (ends[:bags] - offsets[:bags]).clamp(min=1)
    return sizes.to(torch.float32)


class _KernelTable(KernelModule):
    """Packs the reference's table into fbgemm's row-wise format whenever the table changes."""

    def _refresh(self) -> None:
        self.cache_dequantized = False
        super()._refresh()  # type: ignore[misc]
        rows = self.num_embeddings
        q = unpack_stored_table(self._qweight, self.embedding_dim, self.weight_dtype)
        scale, zero_point = self.weight_scale.reshape(-1), self.weight_zero_point.reshape(-1)
        if scale.numel() == 1:  # a table quantized per tensor (the constructor's placeholder)
            scale, zero_point = scale.expand(rows), zero_point.expand(rows)
        packed = pack_rowwise_table(q, scale, zero_point, self.weight_dtype)
        if "_packed" in self._buffers:
            self._packed = packed
        else:
            self.register_buffer("_packed", packed, persistent=False)
        self._four_bit = self.weight_dtype.bits == 4

    def _bag_sums(self, indices: Tensor, offsets: Tensor, per_sample_weights: Optional[Tensor],
                  include_last_offset: bool) -> Tensor:
        """Row sums per bag from fbgemm (columns beyond ``embedding_dim``, from an odd 4-bit row, dropped)."""
        if self._four_bit:
            out = torch.ops.quantized.embedding_bag_4bit_rowwise_offsets(
                self._packed, indices, offsets, False, 0, False, per_sample_weights, None, include_last_offset
            )
            return out[:, : self.embedding_dim] if out.size(1) != self.embedding_dim else out
        return torch.ops.quantized.embedding_bag_byte_rowwise_offsets(
            self._packed, indices, offsets, False, 0, False, per_sample_weights, None, include_last_offset
        )

    @classmethod
    def unsupported_reason(cls, ref: Any) -> Optional[str]:
        reason = cpu_only_reason(ref)
        if reason is None and ref.max_norm is not None:
            reason = "fbgemm's embedding kernels do not renormalize rows (max_norm)"
        if reason is None and ref.weight_dtype.bits not in (4, 8):
            reason = f"fbgemm's row-wise tables are 8-bit or 4-bit, not {ref.weight_dtype.name}"
        return reason

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel=fbgemm"  # type: ignore[misc]


class FbgemmEmbedding(_KernelTable, reference.Embedding):
    """qcore's quantized Embedding as one-row bags on fbgemm's row-wise kernel (``padding_idx`` only matters for training)."""

    def forward(self, indices: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            _check_indices(self, indices)
        flat = indices.reshape(-1)
        offsets = torch.arange(flat.numel(), dtype=flat.dtype, device=flat.device)
        rows = self._bag_sums(flat, offsets, None, False)
        shape: List[int] = list(indices.shape)
        shape.append(self.embedding_dim)
        return rows.reshape(shape)

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.num_embeddings, m.embedding_dim, m.padding_idx, m.max_norm, m.norm_type, m.scale_grad_by_freq,
                m.sparse), {"dtype": m.weight_dtype}


class FbgemmEmbeddingBag(_KernelTable, reference.EmbeddingBag):
    """qcore's quantized EmbeddingBag (``sum`` or ``mean``) on fbgemm's row-wise kernel."""

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
        if per_sample_weights is not None and self.mode != "sum":
            raise QuantizationError(
                "EmbeddingBag: per_sample_weights need mode='sum' (as torch.nn.EmbeddingBag), this bag uses " + self.mode
            )
        include_last = self.include_last_offset
        if indices.dim() == 2:
            if offsets is not None:
                raise QuantizationError("EmbeddingBag: offsets must be None when the indices are 2-d (one bag per row)")
            bags, size = indices.size(0), indices.size(1)
            flat = indices.reshape(-1)
            bag_offsets = torch.arange(0, bags * size, size, dtype=flat.dtype, device=flat.device)
            include_last = False
            if per_sample_weights is not None:
                per_sample_weights = per_sample_weights.reshape(-1)
        elif indices.dim() == 1:
            if offsets is None:
                raise QuantizationError("EmbeddingBag: 1-d indices need offsets (the start of each bag)")
            flat = indices
            bag_offsets = offsets.to(flat.dtype)
        else:
            raise QuantizationError("EmbeddingBag: indices must be 1-d (with offsets) or 2-d, got " + str(indices.dim()) + "-d")
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.to(torch.float32)
        out = self._bag_sums(flat, bag_offsets, per_sample_weights, include_last)
        if self.mode == "mean":
            out = out / _bag_sizes(flat, bag_offsets, include_last, out.size(0)).unsqueeze(1)
        return out

    @classmethod
    def unsupported_reason(cls, ref: Any) -> Optional[str]:
        reason = super().unsupported_reason(ref)
        if reason is None and ref.mode not in ("sum", "mean"):
            reason = f"fbgemm's bag kernel sums rows; mode={ref.mode!r} is not a sum or a mean"
        if reason is None and ref.padding_idx is not None:
            reason = "fbgemm's bag kernel cannot leave padding_idx rows out of a bag"
        return reason

    @staticmethod
    def _constructor_args(m: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (m.num_embeddings, m.embedding_dim, m.max_norm, m.norm_type, m.scale_grad_by_freq, m.mode, m.sparse), {
            "include_last_offset": m.include_last_offset, "dtype": m.weight_dtype, "padding_idx": m.padding_idx}
