"""Observed modules for the custom-module path (torch.ao.nn.quantizable): LSTM, MultiheadAttention."""

from qcore._lazy import lazy_exports

_EXPORTS = {"LSTM": "lstm", "LSTMCell": "lstm", "MultiheadAttention": "activation"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
