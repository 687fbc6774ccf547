"""Observed MultiheadAttention for static quantization (torch.ao.nn.quantizable.MultiheadAttention).

``nn.MultiheadAttention`` projects query, key and value with one packed
weight inside a fused function. This module splits the projections into
``linear_Q``/``linear_K``/``linear_V`` and ``out_proj`` (nn.Linear, each with
an output observer after ``prepare``) and brackets the float middle
(scaled dot products, masks, softmax) with DeQuantStubs and QuantStubs, as
torch.ao does. The same forward runs on float tensors (observed) and on
QTensors (:class:`qcore.nn.quantized.MultiheadAttention`): the projections,
the query scaling and the appended ``bias_k``/``bias_v``/zero rows are
quantized; the attention itself is computed in float; the output and the
attention weights are quantized again.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantizable.lstm import _cat, _parameter, _prepare_self, _quantize_like
from qcore.qtensor import QTensor

__all__ = ["MultiheadAttention"]


def _mul_scalar(x: Tensor, c: float) -> Tensor:
    """``x * c``; a QTensor keeps its integers and takes the scale ``c * scale`` (torch's quantized mul_scalar)."""
    if not isinstance(x, QTensor):
        return x * c
    from qcore.nn.quantized.functional_modules import mul_scalar_int

    d = x.qdtype
    q, scale, zero_point = mul_scalar_int(x.int_repr(), x.q_scale(), x.q_zero_point(), c, d.quant_min, d.quant_max)
    return QTensor.from_int(q.to(d.storage), scale, zero_point, d)


def _append(x: Tensor, rows: Tensor, dim: int) -> Tensor:
    """``cat([x, rows], dim)`` with float ``rows`` quantized onto a QTensor ``x``'s grid."""
    if isinstance(x, QTensor):
        return _cat([x, _quantize_like(rows.detach().to(torch.float32), x)], dim)
    return torch.cat([x, rows.to(x.dtype)], dim)


def _mean(x: Tensor, dim: int) -> Tensor:
    """``x.mean(dim)``; a QTensor's mean is re-quantized with its own qparams (torch's quantized mean)."""
    if isinstance(x, QTensor):
        return _quantize_like(x.dequantize().mean(dim), x)
    return x.mean(dim)


def _check_mask_dtype(mask: Tensor, name: str) -> None:
    if mask.dtype == torch.uint8:
        warnings.warn(f"a uint8 {name} is deprecated (as in nn.MultiheadAttention); use a bool tensor", UserWarning, stacklevel=4)
    elif mask.dtype != torch.bool and not mask.is_floating_point():
        raise QuantizationError(f"MultiheadAttention: {name} must be a bool or float tensor, got {mask.dtype}")


def additive_mask(mask: Tensor) -> Tensor:
    """A float mask to add to attention logits: bool (and deprecated uint8) masks become 0 / -inf. TorchScript-compatible."""
    if mask.dtype == torch.uint8:
        mask = mask.to(torch.bool)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(torch.float32)


def merge_masks(
    attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], batch: int, heads: int, pad: int
) -> Optional[Tensor]:
    """One additive mask ``(batch*heads or 1, tgt, src + pad)`` from nn.MultiheadAttention's two, or None.

    ``attn_mask`` is ``(tgt, src)`` or ``(batch*heads, tgt, src)``, ``key_padding_mask``
    ``(batch, src)``; ``pad`` zero columns follow for appended bias / zero keys.
    Shapes are the caller's to check. TorchScript-compatible.
    """
    mask: Optional[Tensor] = None
    if attn_mask is not None:
        mask = additive_mask(attn_mask)
        if mask.dim() == 2:
            mask = mask.unsqueeze(0)
    if key_padding_mask is not None:
        padding = additive_mask(key_padding_mask)
        src = padding.size(1)
        padding = padding.view(batch, 1, 1, src).expand(batch, heads, 1, src).reshape(batch * heads, 1, src)
        mask = padding if mask is None else mask + padding
    if mask is not None and pad > 0:
        mask = F.pad(mask, (0, pad))
    return mask


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout: float, training: bool, tgt_len: int, batch: int,
    embed_dim: int,
) -> Tuple[Tensor, Tensor]:
    """The float middle of attention: ``softmax(q k^T + mask) v`` per head, back to ``(tgt, batch, embed)``.

    ``q``, ``k``, ``v`` are ``(batch*heads, len, head_dim)`` (``q`` already scaled);
    returns the output and the ``(batch*heads, tgt, src)`` weights. TorchScript-compatible.
    """
    weights = torch.bmm(q, k.transpose(1, 2))
    if mask is not None:
        weights = weights + mask
    weights = F.dropout(F.softmax(weights, dim=-1), p=dropout, training=training)
    out = torch.bmm(weights, v).transpose(0, 1).contiguous().view(tgt_len, batch, embed_dim)
    return out, weights


class MultiheadAttention(nn.Module):
    """An observable ``nn.MultiheadAttention``: same arguments, inputs and outputs.

    Made by :meth:`from_float` (which ``qcore.prepare`` calls for every
    ``nn.MultiheadAttention`` with a qconfig), calibrated, then converted into
    :class:`qcore.nn.quantized.MultiheadAttention`; :meth:`dequantize` goes
    back to a float ``nn.MultiheadAttention``. Unlike torch.ao's version it
    handles ``batch_first=True``, unbatched inputs, float key-padding masks and
    the ``is_causal`` hint (with its ``attn_mask``) as nn.MultiheadAttention does.
    """

    _FLOAT_MODULE = nn.MultiheadAttention
    in_proj_weight: Optional[Tensor]
    in_proj_bias: Optional[Tensor]

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: Optional[int] = None,
        vdim: Optional[int] = None,
        batch_first: bool = False,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        from qcore.stubs import DeQuantStub, QuantStub

        super().__init__()
        embed_dim, num_heads = int(embed_dim), int(num_heads)
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ConfigError(
                f"{type(self).__name__}: embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})"
            )
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = int(kdim) if kdim is not None else embed_dim
        self.vdim = int(vdim) if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.head_dim = embed_dim // num_heads
        self.add_zero_attn = bool(add_zero_attn)
        self.linear_Q = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.linear_K = nn.Linear(self.kdim, embed_dim, bias=bias, **factory)
        self.linear_V = nn.Linear(self.vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, embed_dim, **factory))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, embed_dim, **factory))
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)
        else:
            self.bias_k = self.bias_v = None
        # No packed projection: None here also keeps nn.TransformerEncoderLayer off its fused fast path.
        self.register_parameter("in_proj_weight", None)
        self.register_parameter("in_proj_bias", None)
        self.quant_attn_output = QuantStub()
        self.quant_attn_output_weights = QuantStub()
        self.dequant_q = DeQuantStub()
        self.dequant_k = DeQuantStub()
        self.dequant_v = DeQuantStub()

    def _get_name(self) -> str:
        return "QuantizableMultiheadAttention"

    def extra_repr(self) -> str:
        text = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
        if not self._qkv_same_embed_dim:
            text += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bias_k is not None:
            text += ", add_bias_kv=True"
        if self.add_zero_attn:
            text += ", add_zero_attn=True"
        if self.batch_first:
            text += ", batch_first=True"
        return text

    # --- forward -------------------------------------------------------------------------------------

    def _check_inputs(self, query: Any, key: Any, value: Any) -> bool:
        """Whether the inputs are batched; a QuantizationError naming what is wrong otherwise."""
        name = type(self).__name__
        for label, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, Tensor):
                raise QuantizationError(f"{name}: {label} must be a tensor, got {type(t).__name__}")
        if query.dim() not in (2, 3) or key.dim() != query.dim() or value.dim() != query.dim():
            raise QuantizationError(
                f"{name}: query, key and value must all be 3-d (batched) or all 2-d (unbatched); got "
                f"{query.dim()}-d, {key.dim()}-d and {value.dim()}-d"
            )
        for label, t, size in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if t.shape[-1] != size:
                raise QuantizationError(f"{name}: {label} has {t.shape[-1]} features, expected {size}")
        if key.shape[:-1] != value.shape[:-1]:
            raise QuantizationError(f"{name}: key {tuple(key.shape)} and value {tuple(value.shape)} must agree but for features")
        return query.dim() == 3

    def _mask(
        self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], batch: int, tgt_len: int, src_len: int
    ) -> Optional[Tensor]:
        """The checked masks merged into one additive float mask (:func:`merge_masks`), or None."""
        name = type(self).__name__
        if attn_mask is not None:
            _check_mask_dtype(attn_mask, "attn_mask")
            expected = {2: (tgt_len, src_len), 3: (batch * self.num_heads, tgt_len, src_len)}.get(attn_mask.dim())
            if expected is None:
                raise QuantizationError(f"{name}: attn_mask must be 2-d or 3-d, got {attn_mask.dim()}-d")
            if tuple(attn_mask.shape) != expected:
                raise QuantizationError(
                    f"{name}: the {attn_mask.dim()}-d attn_mask must be {expected}, got {tuple(attn_mask.shape)}"
                )
        if key_padding_mask is not None:
            _check_mask_dtype(key_padding_mask, "key_padding_mask")
            if tuple(key_padding_mask.shape) != (batch, src_len):
                raise QuantizationError(
                    f"{name}: key_padding_mask must be {(batch, src_len)}, got {tuple(key_padding_mask.shape)}"
                )
        return merge_masks(attn_mask, key_padding_mask, batch, self.num_heads, self._extra_keys())

    def _extra_keys(self) -> int:
        """Key/value rows appended after the source: bias_k/bias_v, then a zero row."""
        return int(self.bias_k is not None) + int(self.add_zero_attn)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Optional[Tensor]]:
        """nn.MultiheadAttention's forward; ``is_causal`` is a hint that ``attn_mask`` is causal, which it needs."""
        if is_causal and attn_mask is None:
            raise QuantizationError(
                f"{type(self).__name__}: is_causal=True needs attn_mask (the causal mask itself), as in nn.MultiheadAttention"
            )
        batched = self._check_inputs(query, key, value)
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt_len, batch, _ = query.shape
        src_len = key.shape[0]
        heads, head_dim = self.num_heads, self.head_dim
        mask = self._mask(attn_mask, key_padding_mask, batch, tgt_len, src_len)

        q = _mul_scalar(self.linear_Q(query), float(head_dim) ** -0.5)
        k = self.linear_K(key)
        v = self.linear_V(value)
        if self.bias_k is not None and self.bias_v is not None:
            k = _append(k, self.bias_k.repeat(1, batch, 1), 0)
            v = _append(v, self.bias_v.repeat(1, batch, 1), 0)
        q = q.contiguous().view(tgt_len, batch * heads, head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, batch * heads, head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, batch * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros(batch * heads, 1, head_dim, device=query.device)
            k = _append(k, zeros, 1)
            v = _append(v, zeros, 1)

        # The float middle: scaled dot products, masks, softmax.
        q, k, v = self.dequant_q(q), self.dequant_k(k), self.dequant_v(v)
        out, weights = attend(q, k, v, mask, self.dropout, self.training, tgt_len, batch, self.embed_dim)

        out = self.out_proj(self.quant_attn_output(out))
        # Observed even when not returned, so calibration through need_weights=False callers sets its qparams.
        weights = self.quant_attn_output_weights(weights)
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = weights.view(batch, heads, tgt_len, weights.shape[-1])
        if average_attn_weights:
            weights = _mean(weights, 1)
        return out, (weights.squeeze(0) if not batched else weights)

    # --- conversions ---------------------------------------------------------------------------------

    @classmethod
    def from_float(cls, mod: nn.Module, qconfig: Any = None) -> "MultiheadAttention":
        """The observed attention of a float ``nn.MultiheadAttention``: projections split, observers attached."""
        if not isinstance(mod, nn.MultiheadAttention):
            raise ConfigError(f"{cls.__name__}.from_float expects a torch.nn.MultiheadAttention, got {type(mod).__name__}")
        qconfig = qconfig if qconfig is not None else getattr(mod, "qconfig", None)
        if qconfig is None:
            raise ConfigError(
                f"{cls.__name__}.from_float: the MultiheadAttention has no qconfig; set mod.qconfig (or run qcore.prepare "
                "with one) or pass qconfig="
            )
        has_bias = mod.in_proj_bias is not None
        weight = mod.out_proj.weight
        observed = cls(
            mod.embed_dim, mod.num_heads, mod.dropout, has_bias, mod.bias_k is not None, mod.add_zero_attn,
            mod.kdim, mod.vdim, mod.batch_first, device=weight.device, dtype=weight.dtype,
        )
        if mod._qkv_same_embed_dim:
            weights = mod.in_proj_weight.chunk(3, 0)
        else:
            weights = (mod.q_proj_weight, mod.k_proj_weight, mod.v_proj_weight)
        biases = mod.in_proj_bias.chunk(3, 0) if has_bias else (None, None, None)
        for linear, w, b in zip((observed.linear_Q, observed.linear_K, observed.linear_V), weights, biases):
            linear.weight = _parameter(w)
            if b is not None:
                linear.bias = _parameter(b)
        observed.out_proj.weight = _parameter(mod.out_proj.weight)
        observed.out_proj.bias = None if mod.out_proj.bias is None else _parameter(mod.out_proj.bias)
        if mod.bias_k is not None:
            observed.bias_k = _parameter(mod.bias_k)
            observed.bias_v = _parameter(mod.bias_v)
        observed.qconfig = qconfig
        prepared = _prepare_self(observed, training=False)
        return prepared.train(mod.training)

    @classmethod
    def from_observed(cls, mod: nn.Module) -> Any:
        raise ConfigError(
            f"{cls.__name__} is the observed attention (float -> observed); qcore.nn.quantized.MultiheadAttention."
            "from_observed makes the quantized one (qcore.convert calls it)"
        )

    @torch.jit.unused
    def dequantize(self) -> nn.MultiheadAttention:
        """A float ``nn.MultiheadAttention`` with this module's weights (dequantized when quantized)."""
        bias = _linear_weight_bias(self.linear_Q)[1] is not None
        first = _linear_weight_bias(self.out_proj)[0]
        fp = nn.MultiheadAttention(
            self.embed_dim, self.num_heads, self.dropout, bias, self.bias_k is not None, self.add_zero_attn,
            self.kdim, self.vdim, self.batch_first, device=first.device,
        )
        (wq, bq), (wk, bk), (wv, bv) = (_linear_weight_bias(m) for m in (self.linear_Q, self.linear_K, self.linear_V))
        wo, bo = _linear_weight_bias(self.out_proj)
        with torch.no_grad():
            if fp._qkv_same_embed_dim:
                fp.in_proj_weight.copy_(torch.cat([wq, wk, wv]))
            else:
                fp.q_proj_weight.copy_(wq)
                fp.k_proj_weight.copy_(wk)
                fp.v_proj_weight.copy_(wv)
            if bias:
                fp.in_proj_bias.copy_(torch.cat([bq, bk, bv]))
            fp.out_proj.weight.copy_(wo)
            if fp.out_proj.bias is not None:
                fp.out_proj.bias.copy_(bo if bo is not None else torch.zeros_like(fp.out_proj.bias))
            if self.bias_k is not None:
                fp.bias_k.copy_(self.bias_k)
                fp.bias_v.copy_(self.bias_v)
        return fp.train(self.training)


def _linear_weight_bias(linear: nn.Module) -> tuple[Tensor, Optional[Tensor]]:
    """Float weight and bias of a float, QAT or quantized Linear (quantized weights dequantized)."""
    weight = linear.weight
    if callable(weight) and not isinstance(weight, Tensor):
        w = weight()
        b = linear.bias()
        return (w.dequantize() if isinstance(w, QTensor) else w).detach(), None if b is None else b.detach()
    return weight.detach(), None if linear.bias is None else linear.bias.detach()

