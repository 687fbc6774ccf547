"""The one-call flows: quantize (static PTQ), quantize_dynamic, quantize_qat, with torch.ao's signatures."""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore import dtypes
from qcore.errors import ConfigError
from qcore.flow import mappings
from qcore.flow.eager.convert import MappingLookup, _convert_model, convert
from qcore.flow.eager.prepare import _check_module, _prepare, describe, is_leaf, prepare_qat
from qcore.flow.eager.propagate import propagate_and_match
from qcore.qconfig import QConfig, default_dynamic_qconfig, float16_dynamic_qconfig

__all__ = ["quantize", "quantize_dynamic", "quantize_qat"]


def quantize(
    model: nn.Module, run_fn: Callable[..., Any], run_args: Sequence[Any],
    mapping: Optional[Mapping[type, type]] = None, inplace: bool = False,
) -> nn.Module:
    """Post-training static quantization in one call: eval, prepare, ``run_fn(model, *run_args)``, convert."""
    _check_module(model, "quantize")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    _prepare(model, True, None, None, None, static=True)
    run_fn(model, *run_args)
    convert(model, mapping, inplace=True)
    return model


def quantize_qat(model: nn.Module, run_fn: Callable[..., Any], run_args: Sequence[Any], inplace: bool = False) -> nn.Module:
    """Quantization-aware training in one call: train mode, prepare_qat, ``run_fn(model, *run_args)``, convert."""
    _check_module(model, "quantize_qat")
    if not inplace:
        model = copy.deepcopy(model)
    model.train()
    prepare_qat(model, inplace=True)
    run_fn(model, *run_args)
    convert(model, inplace=True)
    return model


# Float modules the default qconfig_spec leaves out: embeddings need float-qparams weight qconfigs
# (qcore.float_qparams_weight_only_qconfig), and this subclass exists to stay float.
_NOT_BY_DEFAULT = (nn.Embedding, nn.EmbeddingBag, nn.modules.linear.NonDynamicallyQuantizableLinear)


def _dynamic_default_qconfig(dtype: Any) -> QConfig:
    """torch.qint8 -> int8 weights, torch.float16 -> float16 weights; anything else is refused."""
    try:
        d = dtypes.qdtype(dtype)
    except Exception:
        d = None
    if d == dtypes.int8:
        return default_dynamic_qconfig
    if d == dtypes.float16:
        return float16_dynamic_qconfig
    hint = ""
    if d in (dtypes.uint8, dtypes.uint4):
        hint = (" For uint8 / 4-bit embedding tables pass a qconfig instead, e.g. "
                "qconfig_spec={nn.Embedding: qcore.float_qparams_weight_only_qconfig}.")
    raise ConfigError(f"quantize_dynamic: dtype={dtype!r} is not supported; dynamic quantization quantizes weights "
                      f"to torch.qint8 (int8) or torch.float16.{hint}")


def _is_weight_only(qconfig: QConfig) -> bool:
    """Float activations that are not quantized at run time: a weight-only qconfig."""
    activation = qconfig.activation()
    if getattr(activation, "is_dynamic", False):
        return False
    dtype = getattr(activation, "dtype", None)
    return dtype is None or dtype == dtypes.float32


class _DynamicTargets:
    """Dynamic or weight-only target by the module's qconfig, falling back to the other table."""

    def __init__(self) -> None:
        self.dynamic = mappings.get_default_dynamic_quant_module_mappings()
        self.weight_only = mappings.get_default_weight_only_quant_module_mappings()

    def __call__(self, module: nn.Module) -> Optional[type]:
        module_type = type_before_parametrizations(module)
        qconfig = getattr(module, "qconfig", None)
        first, second = (self.weight_only, self.dynamic) if qconfig is not None and _is_weight_only(qconfig) else (
            self.dynamic, self.weight_only)
        return first.get(module_type) or second.get(module_type)


QConfigSpec = Union[set, frozenset, Mapping[Any, Any], None]


def quantize_dynamic(
    model: nn.Module,
    qconfig_spec: QConfigSpec = None,
    dtype: Any = torch.qint8,
    mapping: Optional[Mapping[type, type]] = None,
    inplace: bool = False,
) -> nn.Module:
    """A copy of ``model`` with weights quantized ahead of time and activations quantized on the fly.

    ``qconfig_spec`` is a set of module types and/or names (quantized with
    ``dtype``: torch.qint8 or torch.float16) or a dict of names/types to
    QConfigs; by default Linear, LSTM, GRU and the RNN cells. A type or name
    the spec asks for that has no dynamic (or weight-only) counterpart raises
    ConfigError. ``mapping`` replaces the default swaps.
    """
    _check_module(model, "quantize_dynamic")
    if qconfig_spec is None:
        qconfig = _dynamic_default_qconfig(dtype)
        qconfig_spec = {t: qconfig for t in mappings.get_default_dynamic_quant_module_mappings() if t not in _NOT_BY_DEFAULT}
    elif isinstance(qconfig_spec, (set, frozenset, list, tuple)):
        qconfig = _dynamic_default_qconfig(dtype)
        for key in qconfig_spec:
            if not isinstance(key, (str, type)):
                raise ConfigError(f"quantize_dynamic: qconfig_spec entries are module types or names, got {key!r}")
        qconfig_spec = {key: qconfig for key in qconfig_spec}
    elif not isinstance(qconfig_spec, Mapping):
        raise ConfigError("quantize_dynamic: qconfig_spec must be a set of module types/names or a dict of "
                          f"module types/names to QConfigs, got {type(qconfig_spec).__name__}")
    target_for = MappingLookup(mapping) if mapping is not None else _DynamicTargets()
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    matched = propagate_and_match(model, qconfig_spec)
    _check_requested(matched, target_for, qconfig_spec)
    return _convert_model(model, target_for, True, True, False, None, False)


def _check_requested(matched: list[tuple[str, nn.Module]], target_for: Any, spec: Mapping[Any, Any]) -> None:
    """The leaves a spec entry names directly must have a counterpart: say which do not."""
    missing = [
        (name, module) for name, module in matched
        if getattr(module, "qconfig", None) is not None and is_leaf(module) and target_for(module) is None
    ]
    if not missing:
        return
    shown = ", ".join(describe(name, m) for name, m in missing[:8])
    supported = sorted({t.__name__ for t in mappings.get_default_dynamic_quant_module_mappings()}
                       | {t.__name__ for t in mappings.get_default_weight_only_quant_module_mappings()})
    raise ConfigError(
        f"quantize_dynamic: qconfig_spec asks to quantize modules that have no dynamic or weight-only quantized "
        f"counterpart: {shown}. Supported types: {', '.join(supported) or '(none)'}; pass mapping= to add one, or remove "
        "them from qconfig_spec"
    )
