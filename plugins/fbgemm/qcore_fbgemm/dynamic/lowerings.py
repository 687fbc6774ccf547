"""The lowering table: qcore's reference dynamic and weight-only modules -> their fbgemm kernel modules.

Each entry takes the reference module and returns the kernel module, or None
when the kernel cannot compute that configuration exactly (the reference
module then stays; :func:`unsupported_reason` says why). Keys are exact
classes: a kernel module (a subclass of its reference) is never lowered twice.
"""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from qcore.nn.quantized import embedding as tables
from qcore.nn.quantized.dynamic import linear as dynamic_linear
from qcore.nn.quantized.dynamic import rnn as dynamic_rnn

from qcore_fbgemm.dynamic.embedding import FbgemmEmbedding, FbgemmEmbeddingBag
from qcore_fbgemm.dynamic.linear import FbgemmDynamicLinear, FbgemmDynamicLinearReLU
from qcore_fbgemm.dynamic.rnn import (
    FbgemmDynamicGRU,
    FbgemmDynamicGRUCell,
    FbgemmDynamicLSTM,
    FbgemmDynamicLSTMCell,
    FbgemmDynamicRNNCell,
)

__all__ = ["KERNEL_MODULES", "DYNAMIC_LOWERINGS", "unsupported_reason"]

#: reference class -> kernel class.
KERNEL_MODULES: dict[type, type] = {
    dynamic_linear.Linear: FbgemmDynamicLinear,
    dynamic_linear.LinearReLU: FbgemmDynamicLinearReLU,
    dynamic_rnn.RNNCell: FbgemmDynamicRNNCell,
    dynamic_rnn.LSTMCell: FbgemmDynamicLSTMCell,
    dynamic_rnn.GRUCell: FbgemmDynamicGRUCell,
    dynamic_rnn.LSTM: FbgemmDynamicLSTM,
    dynamic_rnn.GRU: FbgemmDynamicGRU,
    tables.Embedding: FbgemmEmbedding,
    tables.EmbeddingBag: FbgemmEmbeddingBag,
}

#: reference class -> function building the kernel module (None: keep the reference module).
DYNAMIC_LOWERINGS: dict[type, Callable[[nn.Module], Optional[nn.Module]]] = {
    ref: kernel.lower for ref, kernel in KERNEL_MODULES.items()
}


def unsupported_reason(module: nn.Module) -> Optional[str]:
    """Why ``module`` stays a reference module on fbgemm (None when it is lowered to a kernel)."""
    kernel = KERNEL_MODULES.get(type(module))
    if kernel is None:
        return f"fbgemm has no dynamic or weight-only kernel for {type(module).__name__}"
    return kernel.unsupported_reason(module)
