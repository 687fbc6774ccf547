"""Statically quantized MultiheadAttention (torch.ao.nn.quantized.MultiheadAttention).

``qcore.convert`` makes it from a calibrated
:class:`qcore.nn.quantizable.MultiheadAttention` (the custom-module path):
the four projections become quantized Linears, the QuantStubs ``Quantize``
and the DeQuantStubs ``DeQuantize``. As with torch.ao, query, key and value
are QTensors and so are the output and the attention weights; the attention
(dot products, masks, softmax) runs in float between them. ``bias_k`` and
``bias_v`` stay float and are quantized onto the key's / value's grid when
appended. :meth:`dequantize` gives back a float ``nn.MultiheadAttention``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor, nn

from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantizable.activation import MultiheadAttention as ObservedMultiheadAttention
from qcore.nn.quantizable.activation import attend, merge_masks
from qcore.nn.quantized.base import module_label
from qcore.nn.quantized.functional_modules import _dequantize_float, _grid_integers, mul_scalar_int
from qcore.nn.quantized.rnn import _grid
from qcore.nn.quantized.scripting import ScriptableTwin, fake_quantize_output
from qcore.qtensor import QTensor

__all__ = ["MultiheadAttention", "MultiheadAttentionTwin"]

_CONVERTED = ("linear_Q", "linear_K", "linear_V", "out_proj", "quant_attn_output", "quant_attn_output_weights",
              "dequant_q", "dequant_k", "dequant_v")


class MultiheadAttention(ObservedMultiheadAttention):
    """A statically quantized multi-head attention: QTensor query/key/value in, QTensor output and weights out.

    Build it with :meth:`from_observed` (``qcore.convert`` does). ``bias_k`` /
    ``bias_v`` are float buffers; everything else is quantized inner modules,
    all in ``state_dict``.
    """

    _FLOAT_MODULE = ObservedMultiheadAttention

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("bias_k", "bias_v"):
            value = getattr(self, name)
            if value is not None:
                delattr(self, name)
                self.register_buffer(name, value.detach().clone())

    def _get_name(self) -> str:
        return "QuantizedMultiheadAttention"

    def forward(
        self,
        query: QTensor,
        key: QTensor,
        value: QTensor,
        key_padding_mask: Optional[Tensor] = None,
        need_weights: bool = True,
        attn_mask: Optional[Tensor] = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[QTensor, Optional[QTensor]]:
        for label, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, QTensor):
                got = "a float tensor" if isinstance(t, Tensor) and t.is_floating_point() else type(t).__name__
                raise QuantizationError(
                    f"{module_label(self)}: expected a quantized {label} (QTensor) but got {got}; put a QuantStub "
                    "(or qcore.quantize_per_tensor) before this module"
                )
        return super().forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)

    def __prepare_scriptable__(self) -> nn.Module:
        return MultiheadAttentionTwin(self)

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        raise ConfigError(
            f"{cls.__name__}.from_float: the static MultiheadAttention is made from the observed one (float -> observed "
            "-> quantized): qcore.prepare swaps nn.MultiheadAttention for qcore.nn.quantizable.MultiheadAttention, "
            "calibrate, then qcore.convert calls qcore.nn.quantized.MultiheadAttention.from_observed"
        )

    @classmethod
    def from_observed(cls, other: nn.Module) -> "MultiheadAttention":
        """Convert the inner modules of a prepared and calibrated :class:`qcore.nn.quantizable.MultiheadAttention`."""
        from qcore.flow.eager.convert import convert
        from qcore.flow.eager.prepare import is_activation_post_process

        if not isinstance(other, ObservedMultiheadAttention) or isinstance(other, cls):
            raise ConfigError(
                f"{cls.__name__}.from_observed expects a prepared qcore.nn.quantizable.MultiheadAttention, got "
                f"{type(other).__name__}"
            )
        if not any(is_activation_post_process(m) for m in other.modules()):
            raise ConfigError(
                f"{cls.__name__}.from_observed: the observed MultiheadAttention has no observers; make it with "
                "qcore.nn.quantizable.MultiheadAttention.from_float(float_mha) (qcore.prepare does) and calibrate it first"
            )
        converted = convert(other, inplace=False, remove_qconfig=True)
        device = converted.out_proj.scale.device if hasattr(converted.out_proj, "scale") else None
        with torch.device("meta"):
            quantized = cls(
                other.embed_dim, other.num_heads, other.dropout, other.linear_Q.bias is not None, other.bias_k is not None,
                other.add_zero_attn, other.kdim, other.vdim, other.batch_first,
            )
        for name in _CONVERTED:
            setattr(quantized, name, getattr(converted, name))
        for name in ("bias_k", "bias_v"):
            value = getattr(other, name)
            if value is not None:
                quantized.register_buffer(name, value.detach().clone().to(device=device))
        return quantized.eval()


class MultiheadAttentionTwin(ScriptableTwin):
    """TorchScript twin of the quantized attention: float query/key/value on their input grids, outputs equal to
    the eager ones dequantized (the query scaling, appended rows and averaged weights rounded as in eager mode)."""

    def __init__(self, source: MultiheadAttention) -> None:
        super().__init__(source)
        for name in ("linear_Q", "linear_K", "linear_V", "out_proj", "quant_attn_output", "quant_attn_output_weights"):
            setattr(self, name, getattr(source, name))
        self.embed_dim = int(source.embed_dim)
        self.num_heads = int(source.num_heads)
        self.head_dim = int(source.head_dim)
        self.batch_first = bool(source.batch_first)
        self.add_zero_attn = bool(source.add_zero_attn)
        self.dropout = float(source.dropout)
        self.extra_keys = int(source._extra_keys())
        self.scaling = float(source.head_dim) ** -0.5
        self.has_bias_kv = source.bias_k is not None
        zeros = torch.zeros(1, 1, self.embed_dim, device=source.linear_Q.scale.device)
        self.register_buffer("bias_k", zeros if source.bias_k is None else source.bias_k.detach().clone())
        self.register_buffer("bias_v", zeros.clone() if source.bias_v is None else source.bias_v.detach().clone())
        self.q_scale = float(source.linear_Q.scale)
        self.q_zero_point = int(source.linear_Q.zero_point)
        self.q_qmin, self.q_qmax = int(source.linear_Q.dtype.quant_min), int(source.linear_Q.dtype.quant_max)
        _grid(self, "k", source.linear_K)
        _grid(self, "v", source.linear_V)
        _grid(self, "w", source.quant_attn_output_weights)

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
    ) -> Tuple[Tensor, Optional[Tensor]]:
        if torch.jit.is_scripting():
            if is_causal and attn_mask is None:
                raise RuntimeError("MultiheadAttention: is_causal=True needs attn_mask (the causal mask itself)")
            return self.reference_mha(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights)
        return self._eager_mha(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)

    @torch.jit.unused
    def _eager_mha(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor], need_weights: bool,
        attn_mask: Optional[Tensor], average_attn_weights: bool, is_causal: bool,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        return self.source(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)

    def reference_mha(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor], need_weights: bool,
        attn_mask: Optional[Tensor], average_attn_weights: bool,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt_len, batch = query.size(0), query.size(1)
        heads, head_dim = self.num_heads, self.head_dim
        mask = merge_masks(attn_mask, key_padding_mask, batch, heads, self.extra_keys)

        # The query scaling relabels the integers' scale (torch's quantized mul_scalar), exactly as in eager mode.
        q_int = _grid_integers(self.linear_Q(query), self.q_scale, self.q_zero_point)
        q_int, q_scale, q_zero_point = mul_scalar_int(q_int, self.q_scale, self.q_zero_point, self.scaling, self.q_qmin, self.q_qmax)
        q = _dequantize_float(q_int, q_scale, q_zero_point)
        k = self.linear_K(key)
        v = self.linear_V(value)
        if self.has_bias_kv:
            k = torch.cat([k, fake_quantize_output(self.bias_k.repeat(1, batch, 1), self.k_scale, self.k_zero_point, self.k_qmin, self.k_qmax)])
            v = torch.cat([v, fake_quantize_output(self.bias_v.repeat(1, batch, 1), self.v_scale, self.v_zero_point, self.v_qmin, self.v_qmax)])
        q = q.contiguous().view(tgt_len, batch * heads, head_dim).transpose(0, 1)
        k = k.contiguous().view(-1, batch * heads, head_dim).transpose(0, 1)
        v = v.contiguous().view(-1, batch * heads, head_dim).transpose(0, 1)
        if self.add_zero_attn:
            zeros = torch.zeros(batch * heads, 1, head_dim, device=query.device)
            k = torch.cat([k, zeros], 1)
            v = torch.cat([v, zeros], 1)
        out, weights = attend(q, k, v, mask, self.dropout, False, tgt_len, batch, self.embed_dim)
        out = self.out_proj(self.quant_attn_output(out))
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = self.quant_attn_output_weights(weights)
        weights = weights.view(batch, heads, tgt_len, weights.size(-1))
        if average_attn_weights:
            weights = fake_quantize_output(weights.mean(1), self.w_scale, self.w_zero_point, self.w_qmin, self.w_qmax)
        if not batched:
            weights = weights.squeeze(0)
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"
