"""Weight-only quantized modules: integer weights (int8, int4 packed two per byte, groupwise int4), float activations.

Only the weights are quantized; activations stay float, so no QuantStub is
needed. ``Linear`` is qcore's own (torch.ao has none); ``Embedding`` and
``EmbeddingBag`` are ``qcore.nn.quantized``'s per-row quantized tables,
exported here too. :data:`WEIGHT_ONLY_MAPPINGS` ({float class: weight-only
class}) is what the weight-only flow swaps by default. See
:mod:`qcore.nn.quantized.weight_only.storage` for the memory/speed trade-off
of ``cache_dequantized``.
"""

from __future__ import annotations

from qcore._lazy import lazy_exports

_EXPORTS = {
    "Linear": "linear",
    "Embedding": "_tables",
    "EmbeddingBag": "_tables",
    "GroupwiseMinMaxObserver": "observer",
    "QuantizedWeightStorage": "storage",
    "quantize_weight": "storage",
    "weight_only_qconfig": "qconfig",
    "weight_only_int8_qconfig": "qconfig",
    "weight_only_int4_qconfig": "qconfig",
}
__all__ = sorted(_EXPORTS) + ["WEIGHT_ONLY_MAPPINGS"]
_getattr, _dir = lazy_exports(__name__, _EXPORTS)


def _weight_only_mappings() -> dict[type, type]:
    from torch import nn

    from qcore.nn.quantized.embedding import Embedding, EmbeddingBag
    from qcore.nn.quantized.weight_only.linear import Linear

    return {nn.Linear: Linear, nn.Embedding: Embedding, nn.EmbeddingBag: EmbeddingBag}


def __getattr__(name: str) -> object:
    if name == "WEIGHT_ONLY_MAPPINGS":
        value = _weight_only_mappings()
        globals()[name] = value
        return value
    return _getattr(name)


def __dir__() -> list[str]:
    return sorted(set(_dir()) | {"WEIGHT_ONLY_MAPPINGS"})
