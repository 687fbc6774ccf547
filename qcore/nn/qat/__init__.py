"""Quantization-aware-training modules (torch.ao.nn.qat): float modules with weight fake-quant."""

from qcore._lazy import lazy_exports

_EXPORTS = {
    "Linear": "linear",
    "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
    "Embedding": "embedding", "EmbeddingBag": "embedding",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
