"""The dynamic configuration qcore recommends on fbgemm: accurate on transformers, safe on every x86 CPU.

torch.ao's dynamic default (per-tensor int8 weights, activations in 7 bits)
stays ``qcore.default_dynamic_qconfig`` for drop-in users. Recommended instead:

- Linear: activations quantized per token on the fly (one scale and zero
  point per row of the input, asymmetric uint8 over the full [0, 255]);
  weights per output channel, symmetric, in 7 bits ([-63, 63]). One
  sentence's outlier tokens no longer set the step for every other token:
  on MiniLM-L6 (64 sentences, two padded batches of 32) per-tensor 8-bit
  activations gave mean cosine 0.9925 and top-1 nearest-neighbour agreement
  0.812; per token gives cosine mean 0.9977 (min 0.9960) and top-1 0.922
  (symmetric int8 per token: 0.9962 / 0.891). The integer sums run on
  fbgemm (``torch._int_mm`` for large inputs;
  :mod:`qcore_fbgemm.dynamic.per_token`), bit-exact with the reference. The
  7-bit weights keep them exact on AVX2 CPUs without VNNI, whose int8
  multiply adds pairs of uint8 x int8 products in int16: ``2 * 255 * 63``
  fits, ``2 * 255 * 127`` does not.
- LSTM / GRU / cells: the same weights, activations per tensor in the full
  8 bits (``reduce_range=False``): fbgemm's recurrent kernels quantize per
  tensor. qconfigs cannot say ``reduce_range=False`` for per-tensor dynamic
  modules, so :func:`quantize_dynamic_recommended` sets it on the recurrent
  modules it made.
- Embedding / EmbeddingBag: weight-only, uint8 per row with float qparams
  (``qcore.float_qparams_weight_only_qconfig``): 1/4 of the float size.

Speed (1 thread, 2-core AVX512-VNNI machine, and the same limited to AVX2;
benchmarks/RESULTS.md): a per-token layer takes 1.0-1.4x the time of fbgemm's
per-tensor ``linear_dynamic`` at 640 tokens (MiniLM's batch of 32) and
1.7-3.8x at 14 tokens, where the ~20 small ATen calls of per-token
quantization and the epilogue (~2-3 us each) dominate. The whole MiniLM-L6
runs at 0.40 of fp32's time at batch 32 (torch.ao's default: 0.36; AVX2
0.65 vs 0.60) and 0.70 at batch 1 (torch.ao: 0.40; AVX2 0.74 vs 0.46): the
accuracy costs time at batch 1. ``quantize_dynamic_recommended(model)``
applies it in one call.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import qcore
from qcore.nn.quantized.dynamic.rnn import RNNBase, RNNCellBase
from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings

__all__ = [
    "RECOMMENDED_WEIGHT_RANGE",
    "recommended_dynamic_qconfig",
    "recommended_recurrent_qconfig",
    "recommended_embedding_qconfig",
    "recommended_dynamic_qconfig_spec",
    "quantize_dynamic_recommended",
]

#: Weight integers of the recommended configuration: 7 bits, so that AVX2's int16 pair sums cannot overflow.
#: (Symmetric: with [-64, 63] the largest weight would round to 64, outside the range; weights are clamped
#: to the dtype's range, not the observer's, as in torch.ao.)
RECOMMENDED_WEIGHT_RANGE = (-63, 63)

_RECOMMENDED_WEIGHTS = qcore.PerChannelMinMaxObserver.with_args(
    dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
    quant_min=RECOMMENDED_WEIGHT_RANGE[0], quant_max=RECOMMENDED_WEIGHT_RANGE[1],
)

#: Linear: per-token dynamic uint8 activations, per-channel symmetric 7-bit weights.
recommended_dynamic_qconfig = qcore.QConfig(activation=qcore.per_token_dynamic_quant_observer, weight=_RECOMMENDED_WEIGHTS)

#: LSTM / GRU / cells: per-tensor dynamic uint8 activations (used in full 8 bits), the same weights.
recommended_recurrent_qconfig = qcore.QConfig(activation=qcore.default_dynamic_quant_observer, weight=_RECOMMENDED_WEIGHTS)

#: Weight-only embedding tables: uint8 per row, float scale and offset.
recommended_embedding_qconfig = qcore.float_qparams_weight_only_qconfig

_RECURRENT_TYPES = (nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)
_TABLE_TYPES = (nn.Embedding, nn.EmbeddingBag)


def recommended_dynamic_qconfig_spec() -> dict[type, qcore.QConfig]:
    """``qconfig_spec`` for ``qcore.quantize_dynamic``: the recommended qconfig of every supported type.

    On its own it leaves the recurrent modules' activations in 7 bits;
    :func:`quantize_dynamic_recommended` also turns their ``reduce_range`` off.
    """
    spec: dict[type, qcore.QConfig] = {nn.Linear: recommended_dynamic_qconfig}
    spec.update({t: recommended_recurrent_qconfig for t in _RECURRENT_TYPES})
    spec.update({t: recommended_embedding_qconfig for t in _TABLE_TYPES})
    return spec


def _recurrent_modules(model: nn.Module) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, (RNNCellBase, RNNBase))]


def quantize_dynamic_recommended(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``qcore.quantize_dynamic`` with the recommended configuration (lowered for the active backend).

    Linear gets per-token 8-bit activations, LSTM/GRU/cells per-tensor 8-bit
    activations, both 7-bit per-channel weights; embeddings uint8 per-row
    weight-only tables. Modules that were already dynamically quantized in
    ``model`` are left as they are.
    """
    if not inplace:
        model = copy.deepcopy(model)
    before = {id(m) for m in _recurrent_modules(model)}
    quantized = qcore.quantize_dynamic(model, recommended_dynamic_qconfig_spec(), inplace=True)
    for module in _recurrent_modules(quantized):
        if id(module) not in before:
            module.apply_settings(DynamicQuantSettings(module.weight_dtype, reduce_range=False))
    return quantized
