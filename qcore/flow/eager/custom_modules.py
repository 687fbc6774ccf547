"""Custom-module swaps: the user's config dicts (torch.ao's form) merged over the registry's triples.

``prepare`` swaps a float module for ``Observed.from_float(module)`` and
``convert`` swaps that for ``Quantized.from_observed(observed)``. Plugins
register (float, observed, quantized) triples through
``qcore_register_custom_modules``; they apply without any config, and the
user's ``prepare_custom_config_dict`` / ``convert_custom_config_dict`` entries
win over them.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from qcore.errors import ConfigError

__all__ = [
    "FLOAT_TO_OBSERVED",
    "OBSERVED_TO_QUANTIZED",
    "get_default_custom_config_dict",
    "float_to_observed_mapping",
    "observed_to_quantized_mapping",
]

FLOAT_TO_OBSERVED = "float_to_observed_custom_module_class"
OBSERVED_TO_QUANTIZED = "observed_to_quantized_custom_module_class"
_QUANT_TYPES = ("static", "dynamic", "weight_only", "qat")


def _registered_swaps() -> list[Any]:
    from qcore.registry import get_registry

    return [e.value for e in get_registry().custom_modules.entries() if e.value.quant_type == "static"]


def get_default_custom_config_dict() -> dict[str, dict[type, type]]:
    """The registry's static custom-module swaps in torch.ao's config-dict form."""
    swaps = _registered_swaps()
    return {
        FLOAT_TO_OBSERVED: {s.float_cls: s.observed_cls for s in swaps},
        OBSERVED_TO_QUANTIZED: {s.observed_cls: s.quantized_cls for s in swaps},
    }


def _user_entries(config: Optional[Mapping[str, Any]], key: str, where: str) -> dict[type, type]:
    """``config[key]`` as {class: class}; FX's nested ``{"static": {...}}`` form is accepted too."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where} must be a dict like {{{key!r}: {{FloatModule: ObservedModule}}}}, "
                          f"got {type(config).__name__}")
    entries = config.get(key, {})
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{where}[{key!r}] must be a dict of module classes, got {type(entries).__name__}")
    if entries and all(isinstance(k, str) for k in entries):
        unknown = [k for k in entries if k not in _QUANT_TYPES]
        if unknown:
            raise ConfigError(f"{where}[{key!r}] has unknown quantization types {unknown}; use {list(_QUANT_TYPES)}")
        entries = entries.get("static", {})
    for source, target in entries.items():
        if not isinstance(source, type) or not isinstance(target, type):
            raise ConfigError(f"{where}[{key!r}] maps module classes to module classes; got {source!r}: {target!r}")
    return dict(entries)


def _check_method(cls: type, method: str, where: str) -> None:
    if not callable(getattr(cls, method, None)):
        raise ConfigError(f"{where}: the custom module class {cls.__name__} has no classmethod {method}(); "
                          f"the custom module API needs {cls.__name__}.{method}(module)")


def float_to_observed_mapping(prepare_custom_config_dict: Optional[Mapping[str, Any]]) -> dict[type, type]:
    """{float class: observed class} for prepare: the registry's, then the user's (which wins)."""
    mapping = {s.float_cls: s.observed_cls for s in _registered_swaps()}
    mapping.update(_user_entries(prepare_custom_config_dict, FLOAT_TO_OBSERVED, "prepare_custom_config_dict"))
    for observed in mapping.values():
        _check_method(observed, "from_float", "prepare_custom_config_dict")
    return mapping


def observed_to_quantized_mapping(convert_custom_config_dict: Optional[Mapping[str, Any]]) -> dict[type, type]:
    """{observed class: quantized class} for convert: the registry's, then the user's (which wins)."""
    mapping = {s.observed_cls: s.quantized_cls for s in _registered_swaps()}
    mapping.update(_user_entries(convert_custom_config_dict, OBSERVED_TO_QUANTIZED, "convert_custom_config_dict"))
    for quantized in mapping.values():
        _check_method(quantized, "from_observed", "convert_custom_config_dict")
    return mapping
