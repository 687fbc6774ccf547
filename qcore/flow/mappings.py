"""Which module becomes which: the default float -> quantized / dynamic / weight-only / QAT swaps.

The swaps live in the registry's quantized-module table, so a plugin that
registers ``registry.add(MyFloat, MyQuantized, "static")`` is used by
``convert`` without the caller passing ``mapping``. :func:`core_module_swaps`
is the core's own table (registered by the core plugin); the
``get_default_*`` functions read the registry, as torch.ao's
``quantization_mappings`` functions read its module-level dicts.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from torch import nn

from qcore.errors import ConfigError

__all__ = [
    "QUANT_TYPES",
    "QTENSOR_PASSTHROUGH_MODULES",
    "FIXED_QPARAMS_RANGES",
    "core_module_swaps",
    "core_custom_modules",
    "get_default_static_quant_module_mappings",
    "get_default_static_quant_reference_module_mappings",
    "get_embedding_static_quant_module_mappings",
    "get_default_dynamic_quant_module_mappings",
    "get_default_weight_only_quant_module_mappings",
    "get_default_qat_module_mappings",
    "get_embedding_qat_module_mappings",
    "get_default_qconfig_propagation_list",
    "get_static_quant_module_class",
    "get_dynamic_quant_module_class",
    "no_observer_set",
]

QUANT_TYPES = ("static", "dynamic", "weight_only", "qat")

#: Float modules that take a QTensor and return one exactly (QTensor implements their op),
#: so they need no quantized counterpart and no observer.
QTENSOR_PASSTHROUGH_MODULES: frozenset[type] = frozenset({
    nn.ReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    # average pooling keeps the input's qparams and rounds as torch's quantized kernels do (qcore/qtensor.py)
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
})

#: Modules whose output range is fixed, so their output qparams are too (torch.ao's
#: DEFAULT_MODULE_TO_ACT_POST_PROCESS): type -> (lowest, highest) output value.
FIXED_QPARAMS_RANGES: dict[type, tuple[float, float]] = {
    nn.Sigmoid: (0.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
    nn.Softmax: (0.0, 1.0),
    nn.Tanh: (-1.0, 1.0),
}

# The core's swaps as (source, target) paths: "torch.nn:X" or "qcore.<pkg>:X" where <pkg> is a
# qcore.nn package with lazy exports. Written as paths so that the table reads as one list.
_N = "torch.nn:"
_Q = "qcore.nn.quantized:"
_NI = "qcore.nn.intrinsic:"
_NIQ = "qcore.nn.intrinsic.quantized:"
_NIQAT = "qcore.nn.intrinsic.qat:"
_NQAT = "qcore.nn.qat:"

_STATIC_SWAPS: tuple[tuple[str, str], ...] = (
    ("qcore.stubs:QuantStub", _Q + "Quantize"),
    ("qcore.stubs:DeQuantStub", _Q + "DeQuantize"),
    (_N + "Linear", _Q + "Linear"),
    ("torch.nn.modules.linear:NonDynamicallyQuantizableLinear", _Q + "Linear"),
    *((_N + f"Conv{n}d", _Q + f"Conv{n}d") for n in (1, 2, 3)),
    *((_N + f"ConvTranspose{n}d", _Q + f"ConvTranspose{n}d") for n in (1, 2, 3)),
    (_N + "BatchNorm2d", _Q + "BatchNorm2d"),
    (_N + "BatchNorm3d", _Q + "BatchNorm3d"),
    (_N + "Dropout", _Q + "Dropout"),
    *((_N + name, _Q + name) for name in (
        "ELU", "Hardswish", "LeakyReLU", "ReLU6", "Sigmoid", "Tanh", "Hardsigmoid", "Softmax",
        "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
        "Embedding", "EmbeddingBag",
    )),
    (_Q + "FloatFunctional", _Q + "QFunctional"),
    # fused float modules (what fuse_modules produces in eval mode)
    (_NI + "BNReLU2d", _NIQ + "BNReLU2d"),
    (_NI + "BNReLU3d", _NIQ + "BNReLU3d"),
    *((_NI + f"ConvReLU{n}d", _NIQ + f"ConvReLU{n}d") for n in (1, 2, 3)),
    (_NI + "LinearReLU", _NIQ + "LinearReLU"),
    *((_NI + name, _NIQ + name) for name in ("ConvAdd1d", "ConvAddReLU1d", "ConvAdd2d", "ConvAddReLU2d")),
    # QAT modules, after training (BatchNorm folded by from_float)
    *((_NIQAT + f"ConvBn{n}d", _Q + f"Conv{n}d") for n in (1, 2, 3)),
    *((_NIQAT + f"ConvBnReLU{n}d", _NIQ + f"ConvReLU{n}d") for n in (1, 2, 3)),
    *((_NIQAT + f"ConvReLU{n}d", _NIQ + f"ConvReLU{n}d") for n in (1, 2, 3)),
    (_NIQAT + "LinearReLU", _NIQ + "LinearReLU"),
    (_NIQAT + "LinearBn1d", _Q + "Linear"),
    (_NQAT + "Linear", _Q + "Linear"),
    *((_NQAT + f"Conv{n}d", _Q + f"Conv{n}d") for n in (1, 2, 3)),
    (_NQAT + "Embedding", _Q + "Embedding"),
    (_NQAT + "EmbeddingBag", _Q + "EmbeddingBag"),
)

_QAT_SWAPS: tuple[tuple[str, str], ...] = (
    (_N + "Linear", _NQAT + "Linear"),
    ("torch.nn.modules.linear:NonDynamicallyQuantizableLinear", _NQAT + "Linear"),
    *((_N + f"Conv{n}d", _NQAT + f"Conv{n}d") for n in (1, 2, 3)),
    (_N + "Embedding", _NQAT + "Embedding"),
    (_N + "EmbeddingBag", _NQAT + "EmbeddingBag"),
    *((_NI + name, _NIQAT + name) for name in (
        "ConvBn1d", "ConvBn2d", "ConvBn3d", "ConvBnReLU1d", "ConvBnReLU2d", "ConvBnReLU3d",
        "ConvReLU1d", "ConvReLU2d", "ConvReLU3d", "LinearReLU", "LinearBn1d",
    )),
)

# The module helpers export these dicts {float class: quantized class} from their packages.
_EXPORTED_SWAPS = {
    "dynamic": ("qcore.nn.quantized.dynamic", "DYNAMIC_MAPPINGS"),
    "weight_only": ("qcore.nn.quantized.weight_only", "WEIGHT_ONLY_MAPPINGS"),
}


def _resolve(path: str) -> Any:
    """The object at ``"package.module:Name"``; None only while the file defining it does not exist yet."""
    module_name, _, attr = path.partition(":")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except ModuleNotFoundError as exc:
        # A lazy export whose module file is missing (a module set still being written).
        if exc.name is not None and exc.name.startswith(module_name + "."):
            return None
        raise


def _table(pairs: tuple[tuple[str, str], ...], missing: Optional[list[str]]) -> dict[type, type]:
    table: dict[type, type] = {}
    for source_path, target_path in pairs:
        source, target = _resolve(source_path), _resolve(target_path)
        if source is None or target is None:
            if missing is not None:
                missing.append(source_path if source is None else target_path)
            continue
        table[source] = target
    return table


def core_module_swaps(missing: Optional[list[str]] = None) -> dict[str, dict[type, type]]:
    """The core's own swaps, ``{quant_type: {source class: target class}}``, as the core plugin registers them.

    Entries whose class is not written yet are left out and, when ``missing``
    is a list, named in it (the tests check it stays empty).
    """
    swaps = {"static": _table(_STATIC_SWAPS, missing), "qat": _table(_QAT_SWAPS, missing)}
    for quant_type, (package, name) in _EXPORTED_SWAPS.items():
        exported = getattr(importlib.import_module(package), name, None)
        if exported is None:
            if missing is not None:
                missing.append(f"{package}:{name}")
            exported = {}
        swaps[quant_type] = dict(exported)
    return swaps


def core_custom_modules() -> list[tuple[type, type, type]]:
    """The core's (float, observed, quantized) custom-module triples (static LSTM / MultiheadAttention).

    Registered only once qcore ships both the observed and the quantized class.
    """
    triples = []
    for float_name, observed_path, quantized_path in (
        ("LSTM", "qcore.nn.quantizable:LSTM", "qcore.nn.quantized:LSTM"),
        ("MultiheadAttention", "qcore.nn.quantizable:MultiheadAttention", "qcore.nn.quantized:MultiheadAttention"),
    ):
        observed = _resolve(observed_path)
        quantized = _optional_export(quantized_path)
        if observed is not None and quantized is not None:
            triples.append((getattr(nn, float_name), observed, quantized))
    return triples


def _optional_export(path: str) -> Any:
    """Like :func:`_resolve`, also None when the package does not export the name at all."""
    try:
        return _resolve(path)
    except AttributeError:
        return None


# --- what the flow reads: the registry's tables -------------------------------------------


def _registered(quant_type: str) -> dict[type, type]:
    from qcore.registry import get_registry

    return get_registry().quantized_modules.mapping(quant_type)


def get_default_static_quant_module_mappings() -> dict[type, type]:
    """Float (and fused, and QAT) module -> statically quantized module, for ``convert``."""
    return _registered("static")


def get_default_static_quant_reference_module_mappings() -> dict[type, type]:
    """The same as the static mappings: qcore's quantized modules *are* the reference modules."""
    return _registered("static")


def get_embedding_static_quant_module_mappings() -> dict[type, type]:
    """The static mappings; they already include the QAT embeddings (torch.ao adds them only here)."""
    return _registered("static")


def get_default_dynamic_quant_module_mappings() -> dict[type, type]:
    """Float module -> dynamically quantized module (int8 / float16 weights), for ``quantize_dynamic``."""
    return _registered("dynamic")


def get_default_weight_only_quant_module_mappings() -> dict[type, type]:
    """Float module -> weight-only quantized module (int8 / int4 weights, float activations)."""
    return _registered("weight_only")


def get_default_qat_module_mappings() -> dict[type, type]:
    """Float (and fused) module -> QAT module, for ``prepare_qat``."""
    return _registered("qat")


def get_embedding_qat_module_mappings() -> dict[type, type]:
    """The QAT mappings; they already include Embedding / EmbeddingBag (torch.ao adds them only here)."""
    return _registered("qat")


def get_default_qconfig_propagation_list() -> set[type]:
    """Module types ``prepare`` attaches output observers to: those static quantization or QAT can swap.

    Unlike torch.ao, dynamic-only types (GRU, RNN cells) are left out: static
    quantization has nothing to swap them for, so observing them is pointless.
    """
    return set(_registered("static")) | set(_registered("qat")) | {nn.Sequential}


def no_observer_set() -> set[type]:
    """Observed custom modules that place their own observers, so prepare adds none on their output."""
    found = set()
    for path in ("qcore.nn.quantizable:LSTM", "qcore.nn.quantizable:MultiheadAttention"):
        cls = _resolve(path)
        if cls is not None:
            found.add(cls)
    return found


def _lookup(float_cls: type, table: dict[type, type], additional: Optional[dict[type, type]], what: str) -> type:
    combined = {**table, **(additional or {})}
    target = combined.get(float_cls)
    if target is None:
        known = ", ".join(sorted(t.__name__ for t in combined)) or "(none)"
        raise ConfigError(f"{getattr(float_cls, '__name__', float_cls)} has no {what} counterpart; known: {known}")
    return target


def get_static_quant_module_class(
    float_module_class: type, additional_static_quant_mapping: Optional[dict[type, type]] = None,
    is_reference: bool = False,
) -> type:
    """The statically quantized class for ``float_module_class``; ConfigError when there is none."""
    return _lookup(float_module_class, _registered("static"), additional_static_quant_mapping, "statically quantized")


def get_dynamic_quant_module_class(
    float_module_class: type, additional_dynamic_quant_mapping: Optional[dict[type, type]] = None
) -> type:
    """The dynamically quantized class for ``float_module_class``; ConfigError when there is none."""
    return _lookup(float_module_class, _registered("dynamic"), additional_dynamic_quant_mapping, "dynamically quantized")
