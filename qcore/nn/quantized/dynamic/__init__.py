"""Dynamically quantized modules (torch.ao.nn.quantized.dynamic): int8 or float16 weights, float activations.

Activations are quantized on the fly from each input's own min/max; inputs and
outputs are float tensors, so these modules need no QuantStub/DeQuantStub and
script directly with ``torch.jit.script``.

:data:`DYNAMIC_MAPPINGS` ({float class: dynamic class}, torch.ao's
``DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS``) is what ``quantize_dynamic`` swaps by default.
"""

from __future__ import annotations

from qcore._lazy import lazy_exports

_EXPORTS = {
    "Linear": "linear",
    "LinearReLU": "linear",
    "RNNCellBase": "rnn",
    "RNNCell": "rnn",
    "LSTMCell": "rnn",
    "GRUCell": "rnn",
    "RNNBase": "rnn",
    "LSTM": "rnn",
    "GRU": "rnn",
    "DynamicQuantSettings": "settings",
}
__all__ = sorted(_EXPORTS) + ["DYNAMIC_MAPPINGS"]
_getattr, _dir = lazy_exports(__name__, _EXPORTS)


def _dynamic_mappings() -> dict[type, type]:
    from torch import nn

    from qcore.nn.quantized import embedding
    from qcore.nn.quantized.dynamic import linear, rnn

    table: dict[type, type] = {
        nn.Linear: linear.Linear,
        nn.modules.linear.NonDynamicallyQuantizableLinear: linear.Linear,
        nn.LSTM: rnn.LSTM,
        nn.GRU: rnn.GRU,
        nn.RNNCell: rnn.RNNCell,
        nn.LSTMCell: rnn.LSTMCell,
        nn.GRUCell: rnn.GRUCell,
        nn.Embedding: embedding.Embedding,
        nn.EmbeddingBag: embedding.EmbeddingBag,
    }
    try:
        from qcore.nn.intrinsic.modules import LinearReLU as FusedLinearReLU
    except ImportError:  # the fused float modules are not there (yet)
        pass
    else:
        table[FusedLinearReLU] = linear.LinearReLU
    return table


def __getattr__(name: str) -> object:
    if name == "DYNAMIC_MAPPINGS":
        value = _dynamic_mappings()
        globals()[name] = value
        return value
    return _getattr(name)


def __dir__() -> list[str]:
    return sorted(set(_dir()) | {"DYNAMIC_MAPPINGS"})
