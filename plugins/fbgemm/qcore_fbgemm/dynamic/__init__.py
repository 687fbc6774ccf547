"""fbgemm kernels for qcore's dynamic and weight-only modules, and the dynamic configuration qcore recommends.

:data:`DYNAMIC_LOWERINGS` maps each reference class
(``qcore.nn.quantized.dynamic.Linear``, ``LinearReLU``, ``LSTM``, ``GRU``,
``RNNCell``, ``LSTMCell``, ``GRUCell``, ``qcore.nn.quantized.Embedding``,
``EmbeddingBag``) to a function returning its kernel module, or None when the
kernel cannot compute that configuration (the reference module stays;
:func:`unsupported_reason` says why). The plugin's lowering merges it.

Per-token dynamic Linears sum their integers on fbgemm or ``torch._int_mm``
(:mod:`qcore_fbgemm.dynamic.per_token`), bit-exact with the reference.

Kernel modules subclass their reference module: same state dict, ``weight()``,
repr (plus ``kernel=fbgemm``) and TorchScript support; weights are packed
once, when they are set or loaded.
"""

from __future__ import annotations

from qcore_fbgemm.dynamic.embedding import FbgemmEmbedding, FbgemmEmbeddingBag
from qcore_fbgemm.dynamic.linear import FbgemmDynamicLinear, FbgemmDynamicLinearReLU
from qcore_fbgemm.dynamic.lowerings import DYNAMIC_LOWERINGS, KERNEL_MODULES, unsupported_reason
from qcore_fbgemm.dynamic.recommended import (
    quantize_dynamic_recommended,
    recommended_dynamic_qconfig,
    recommended_dynamic_qconfig_spec,
    recommended_embedding_qconfig,
    recommended_recurrent_qconfig,
)
from qcore_fbgemm.dynamic.rnn import (
    FbgemmDynamicGRU,
    FbgemmDynamicGRUCell,
    FbgemmDynamicLSTM,
    FbgemmDynamicLSTMCell,
    FbgemmDynamicRNNCell,
)

__all__ = [
    "DYNAMIC_LOWERINGS",
    "KERNEL_MODULES",
    "unsupported_reason",
    "FbgemmDynamicLinear",
    "FbgemmDynamicLinearReLU",
    "FbgemmDynamicRNNCell",
    "FbgemmDynamicLSTMCell",
    "FbgemmDynamicGRUCell",
    "FbgemmDynamicLSTM",
    "FbgemmDynamicGRU",
    "FbgemmEmbedding",
    "FbgemmEmbeddingBag",
    "recommended_dynamic_qconfig",
    "recommended_recurrent_qconfig",
    "recommended_embedding_qconfig",
    "recommended_dynamic_qconfig_spec",
    "quantize_dynamic_recommended",
]
