"""Constructor configuration of a module: read from its attributes at save, replayed at load.

For each constructor parameter, the value is found by the first rule that applies:

1. the class's row in :data:`ALIASES` (qcore's quantized modules, where a
   parameter's name differs from the attribute holding it: ``bias_`` is
   whether there is a bias, ``dtype`` is the weight dtype, ...);
2. a parameter naming one of the module's parameters or buffers becomes
   whether it exists (``nn.Linear(bias=...)``);
3. an instance attribute of the same name (``in_features``, ``kernel_size``, ...).

Anything else keeps the constructor's default. A value without a JSON form
is listed as *unsaved*; qcore.load then refuses to build that module itself
and asks for a model that contains it.

A class can take over with two methods, the protocol future modules may
implement: ``_qcore_config(self) -> dict`` (JSON-able constructor arguments)
and the classmethod ``_qcore_from_config(cls, config) -> nn.Module`` (a module
of the right shapes; tensors are loaded into it afterwards).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Optional

import attrs
from torch import Tensor, nn

from qcore.checkpoint.codec import ModuleRef, TensorRef, is_encodable

__all__ = ["OMIT", "ALIASES", "ModuleConfig", "module_config", "constructor_parameters", "build_kwargs"]


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


#: An alias returning OMIT leaves the parameter at its default.
OMIT: Any = _Omit()

#: Never read from attributes: the qconfig travels separately, the others are factory arguments.
_SKIP = frozenset({"device", "factory_kwargs", "_weight", "_freeze", "qconfig"})


def _attr(name: str) -> Callable[[nn.Module], Any]:
    return lambda m: getattr(m, name)


def _has_bias(m: nn.Module) -> bool:
    return m._buffers.get("_bias") is not None


def _tensor_or_none(key: str) -> Callable[[nn.Module], Any]:
    return lambda m: None if getattr(m, key, None) is None else TensorRef(key)


def _omit(m: nn.Module) -> Any:
    return OMIT


def _output_scale(m: nn.Module) -> float:
    return float(m.scale)


def _output_zero_point(m: nn.Module) -> int:
    return int(m.zero_point)


def _relu6_qparam(read: Callable[[nn.Module], Any]) -> Callable[[nn.Module], Any]:
    return lambda m: None if getattr(m, "keep_input_qparams", False) else read(m)


#: {"module:qualname" of a class: {constructor parameter: how to read it}}; subclasses inherit rows.
ALIASES: dict[str, dict[str, Callable[[nn.Module], Any]]] = {
    "qcore.nn.quantized.base:QuantizedModule": {
        "output_dtype": _attr("dtype"),
        "dtype": _attr("dtype"),
        "scale": _output_scale,
        "zero_point": _output_zero_point,
        "output_scale": _output_scale,
        "output_zero_point": _output_zero_point,
    },
    "qcore.nn.quantized.base:QuantizedWeightMixin": {
        "bias_": _has_bias,
        "bias": _has_bias,
        "dtype": _attr("weight_dtype"),
        "weight_dtype": _attr("weight_dtype"),
    },
    "qcore.nn.quantized.conv:_ConvNd": {"dtype": _omit},  # the float factory dtype, not the weight's
    "qcore.nn.quantized.activation:ReLU6": {
        "scale": _relu6_qparam(_output_scale),
        "zero_point": _relu6_qparam(_output_zero_point),
    },
    "qcore.nn.quantized.normalization:_QuantizedNorm": {
        "weight": _tensor_or_none("weight"),
        "bias": _tensor_or_none("bias"),
    },
    "qcore.nn.quantized.weight_only.storage:QuantizedWeightStorage": {
        "bias_": _has_bias,
        "dtype": _attr("weight_dtype"),
        "group_size": lambda m: int(m.group_size) or None,
    },
    "qcore.nn.quantized.dynamic.rnn:RNNCellBase": {"dtype": _attr("weight_dtype")},
    "qcore.nn.quantized.dynamic.rnn:RNNBase": {"dtype": _attr("weight_dtype")},
    "torch.nn.modules.rnn:RNNBase": {"mode": _omit},
    "torch.nn.modules.rnn:RNN": {"nonlinearity": _attr("nonlinearity"), "proj_size": _omit},
    "torch.nn.modules.rnn:GRU": {"proj_size": _omit},
    "torch.nn.modules.activation:MultiheadAttention": {
        "bias": lambda m: m.out_proj.bias is not None,
        "add_bias_kv": lambda m: m.bias_k is not None,
    },
}


@attrs.frozen
class ModuleConfig:
    """Constructor keyword arguments (plain values, TensorRef, ModuleRef) and the ones that could not be saved."""

    kwargs: dict[str, Any]
    unsaved: tuple[str, ...] = ()


def _aliases(cls: type) -> dict[str, Callable[[nn.Module], Any]]:
    merged: dict[str, Callable[[nn.Module], Any]] = {}
    for base in reversed(cls.__mro__):
        merged.update(ALIASES.get(f"{base.__module__}:{base.__qualname__}", {}))
    return merged


def constructor_parameters(cls: type) -> list[inspect.Parameter]:
    """The named parameters of the first ``__init__`` in the MRO that has any (LSTM's are RNNBase's)."""
    for base in cls.__mro__:
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = list(inspect.signature(init).parameters.values())[1:]
        except (TypeError, ValueError):
            return []
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if named or base is nn.Module:
            return named
    return []


def module_config(module: nn.Module) -> ModuleConfig:
    """The constructor arguments that rebuild ``module`` (its tensors are loaded afterwards)."""
    own = getattr(module, "_qcore_config", None)
    if callable(own) and callable(getattr(type(module), "_qcore_from_config", None)):
        return ModuleConfig(dict(own()))
    aliases = _aliases(type(module))
    params = constructor_parameters(type(module))
    kwargs: dict[str, Any] = {}
    unsaved: list[str] = []
    names = [p.name for p in params]
    if _takes_any_keyword(type(module)):  # e.g. nn.RNN(*args, **kwargs) reads nonlinearity from kwargs
        names += [n for n in aliases if n not in names]
    required = {p.name for p in params if p.default is inspect.Parameter.empty}
    positional_children = _positional_children(module, params)
    for name in names:
        if name in aliases:
            value = aliases[name](module)
        elif name in positional_children:
            value = positional_children[name]
        elif name in _SKIP:
            continue
        elif name in module._parameters or name in module._buffers:
            value = module._parameters.get(name, module._buffers.get(name)) is not None
        elif name in module._modules:
            value = ModuleRef(name)
        elif name in vars(module):
            value = vars(module)[name]
        else:
            if name in required:
                unsaved.append(name)
            continue
        if value is OMIT:
            continue
        if isinstance(value, (Tensor, nn.Module)) or not is_encodable(value):
            unsaved.append(name)
            continue
        kwargs[name] = value
    return ModuleConfig(kwargs, tuple(unsaved))


def _takes_any_keyword(cls: type) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_KEYWORD for p in params)


def _positional_children(module: nn.Module, params: list[inspect.Parameter]) -> dict[str, ModuleRef]:
    """An nn.Sequential subclass built from its parts (qcore's fused modules): parameters bound to children in order."""
    if not isinstance(module, nn.Sequential):
        return {}
    required = [p for p in params if p.default is inspect.Parameter.empty and p.kind == p.POSITIONAL_OR_KEYWORD]
    missing = [p for p in required if p.name not in vars(module) and p.name not in module._modules]
    children = list(module._modules)
    if not missing or len(missing) != len(children):
        return {}
    return {p.name: ModuleRef(child) for p, child in zip(missing, children)}


def build_kwargs(
    config: Mapping[str, Any],
    tensor: Callable[[str], Optional[Tensor]],
    child: Callable[[str], nn.Module],
) -> dict[str, Any]:
    """Constructor keyword arguments with TensorRef/ModuleRef replaced by the loaded tensor / built child."""
    kwargs: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, TensorRef):
            value = tensor(value.key)
        elif isinstance(value, ModuleRef):
            value = child(value.name)
        kwargs[name] = value
    return kwargs
