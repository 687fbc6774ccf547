"""Re-export of the per-row quantized embedding tables, which are weight-only modules too."""

from qcore.nn.quantized.embedding import Embedding, EmbeddingBag

__all__ = ["Embedding", "EmbeddingBag"]
