"""Statically quantized modules (torch.ao.nn.quantized): integer weights, QTensor activations."""

from qcore._lazy import lazy_exports

_EXPORTS = {
    "QuantizedModule": "base",
    "Linear": "linear",
    "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
    "ConvTranspose1d": "conv", "ConvTranspose2d": "conv", "ConvTranspose3d": "conv",
    "Quantize": "quant_dequant", "DeQuantize": "quant_dequant",
    "ReLU6": "activation", "Hardswish": "activation", "ELU": "activation", "LeakyReLU": "activation",
    "Sigmoid": "activation", "Tanh": "activation", "Hardsigmoid": "activation", "Softmax": "activation",
    "Dropout": "dropout",
    "LayerNorm": "normalization", "GroupNorm": "normalization",
    "InstanceNorm1d": "normalization", "InstanceNorm2d": "normalization", "InstanceNorm3d": "normalization",
    "BatchNorm2d": "batchnorm", "BatchNorm3d": "batchnorm",
    "FloatFunctional": "functional_modules", "FXFloatFunctional": "functional_modules",
    "QFunctional": "functional_modules",
    "Embedding": "embedding", "EmbeddingBag": "embedding",
    "LSTM": "rnn", "MultiheadAttention": "multihead_attention",
}
__all__ = sorted(_EXPORTS) + ["dynamic", "weight_only"]
_getattr, __dir__ = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str):
    if name in ("dynamic", "weight_only"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    return _getattr(name)
