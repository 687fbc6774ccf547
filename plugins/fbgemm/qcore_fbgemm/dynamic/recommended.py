"""The dynamic configuration qcore recommends on fbgemm: accurate on transformers, safe on every x86 CPU.

torch.ao's dynamic default (per-tensor int8 weights, activations in 7 bits)
stays ``qcore.default_dynamic_qconfig`` for drop-in users. Recommended instead:

- Linear / LSTM / GRU / cells: weights per output channel, symmetric, in 7
  bits ([-63, 63]); activations quantized per tensor on the fly in the full
  8 bits (``reduce_range=False``). Dynamic activation ranges are per tensor,
  so activation bits matter most (on MiniLM-L6 the 8th activation bit lifts
  mean cosine from 0.976 to 0.993, the 8th weight bit adds <0.001). The 7-bit
  weights keep fbgemm exact on AVX2 CPUs without VNNI, whose kernel adds
  pairs of uint8 x int8 products in int16: ``2 * 255 * 63`` fits,
  ``2 * 255 * 128`` does not.
- Embedding / EmbeddingBag: weight-only, uint8 per row with float qparams
  (``qcore.float_qparams_weight_only_qconfig``): 1/4 of the float size.

``quantize_dynamic_recommended(model)`` applies it in one call. (qcore's
qconfigs cannot yet say ``reduce_range=False`` for dynamic modules, so the
function sets it on the modules it made; see :func:`recommended_dynamic_qconfig_spec`.)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

import qcore
from qcore.nn.quantized.dynamic.linear import Linear as DynamicLinear
from qcore.nn.quantized.dynamic.rnn import RNNBase, RNNCellBase
from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings

__all__ = [
    "RECOMMENDED_WEIGHT_RANGE",
    "recommended_dynamic_qconfig",
    "recommended_embedding_qconfig",
    "recommended_dynamic_qconfig_spec",
    "quantize_dynamic_recommended",
]

#: Weight integers of the recommended configuration: 7 bits, so that AVX2's int16 pair sums cannot overflow.
#: (Symmetric: with [-64, 63] the largest weight would round to 64, outside the range; weights are clamped
#: to the dtype's range, not the observer's, as in torch.ao.)
RECOMMENDED_WEIGHT_RANGE = (-63, 63)

#: Per-channel symmetric 7-bit weights, dynamic uint8 activations (used in full 8 bits).
recommended_dynamic_qconfig = qcore.QConfig(
    activation=qcore.default_dynamic_quant_observer,
    weight=qcore.PerChannelMinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
        quant_min=RECOMMENDED_WEIGHT_RANGE[0], quant_max=RECOMMENDED_WEIGHT_RANGE[1],
    ),
)

#: Weight-only embedding tables: uint8 per row, float scale and offset.
recommended_embedding_qconfig = qcore.float_qparams_weight_only_qconfig

_DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)
_TABLE_TYPES = (nn.Embedding, nn.EmbeddingBag)


def recommended_dynamic_qconfig_spec() -> dict[type, qcore.QConfig]:
    """``qconfig_spec`` for ``qcore.quantize_dynamic``: the recommended weights for every supported type.

    On its own it gives the recommended weights with activations still in
    7 bits; :func:`quantize_dynamic_recommended` also turns ``reduce_range`` off.
    """
    spec: dict[type, qcore.QConfig] = {t: recommended_dynamic_qconfig for t in _DYNAMIC_TYPES}
    spec.update({t: recommended_embedding_qconfig for t in _TABLE_TYPES})
    return spec


def _dynamic_modules(model: nn.Module) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, (DynamicLinear, RNNCellBase, RNNBase))]


def quantize_dynamic_recommended(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``qcore.quantize_dynamic`` with the recommended configuration (lowered for the active backend).

    Linear/LSTM/GRU/cells get 7-bit per-channel weights and 8-bit dynamic
    activations, embeddings uint8 per-row weight-only tables. Modules that
    were already dynamically quantized in ``model`` are left as they are.
    """
    if not inplace:
        model = copy.deepcopy(model)
    before = {id(m) for m in _dynamic_modules(model)}
    quantized = qcore.quantize_dynamic(model, recommended_dynamic_qconfig_spec(), inplace=True)
    for module in _dynamic_modules(quantized):
        if id(module) not in before:
            module.apply_settings(DynamicQuantSettings(module.weight_dtype, reduce_range=False))
    return quantized
