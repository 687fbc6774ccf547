"""PrepareCustomConfig, ConvertCustomConfig, FuseCustomConfig: torch.ao's FX custom configs, objects or dicts.

Like :class:`~qcore.QConfigMapping` these are mutable builders (``c =
PrepareCustomConfig(); c.set_non_traceable_module_names([...])`` must keep
working), and each accepts torch.ao's dict form through ``from_dict``, which
the flows call for a plain dict such as the reference doc's
``{"float_to_observed_custom_module_class": {"static": {Float: Observed}}}``.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Union

import attrs

from qcore.errors import ConfigError

__all__ = [
    "QUANT_TYPES",
    "StandaloneModuleConfigEntry",
    "PrepareCustomConfig",
    "ConvertCustomConfig",
    "FuseCustomConfig",
    "as_prepare_custom_config",
    "as_convert_custom_config",
    "as_fuse_custom_config",
]

#: The quantization types a custom-module swap is registered for.
QUANT_TYPES = ("static", "dynamic", "weight_only")

STANDALONE_MODULE_NAME = "standalone_module_name"
STANDALONE_MODULE_CLASS = "standalone_module_class"
FLOAT_TO_OBSERVED = "float_to_observed_custom_module_class"
OBSERVED_TO_QUANTIZED = "observed_to_quantized_custom_module_class"
NON_TRACEABLE_MODULE_NAME = "non_traceable_module_name"
NON_TRACEABLE_MODULE_CLASS = "non_traceable_module_class"
INPUT_QUANTIZED_INDEXES = "input_quantized_idxs"
OUTPUT_QUANTIZED_INDEXES = "output_quantized_idxs"
PRESERVED_ATTRIBUTES = "preserved_attributes"


def quant_type_name(value: Any, where: str) -> str:
    """``"static"`` from ``"static"``, ``"STATIC"`` or torch.ao's ``QuantType.STATIC``."""
    name = getattr(value, "name", value)
    if isinstance(name, str) and name.lower() in QUANT_TYPES:
        return name.lower()
    raise ConfigError(f"{where}: unknown quantization type {value!r}; use one of {list(QUANT_TYPES)}")


def _class(value: Any, where: str) -> type:
    if not isinstance(value, type):
        raise ConfigError(f"{where}: expected a module class, got {value!r}")
    return value


def _names(values: Any, where: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ConfigError(f"{where}: expected a list of module names, got {values!r}")
    names = list(values)
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"{where}: module names are strings, got {name!r}")
    return names


def _classes(values: Any, where: str) -> list[type]:
    if not isinstance(values, Iterable):
        raise ConfigError(f"{where}: expected a list of module classes, got {values!r}")
    return [_class(v, where) for v in values]


def _indexes(values: Any, where: str) -> list[int]:
    if not isinstance(values, Iterable):
        raise ConfigError(f"{where}: expected a list of integer indexes, got {values!r}")
    indexes = list(values)
    for index in indexes:
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ConfigError(f"{where}: indexes are non-negative integers, got {index!r}")
    return indexes


def _check_keys(data: Any, known: tuple[str, ...], cls: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls}.from_dict expects a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{cls}: unknown keys {unknown}; expected some of {sorted(known)}")
    return data


def _class_mapping(data: Any, key: str, cls: str) -> dict[str, dict[type, type]]:
    """``{"static": {A: B}}`` (or the flat ``{A: B}``, meaning static) as ``{quant_type: {A: B}}``."""
    where = f"{cls}[{key!r}]"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a dict like {{'static': {{FloatModule: ObservedModule}}}}, got {data!r}")
    if data and all(isinstance(k, type) for k in data):
        data = {"static": data}
    result: dict[str, dict[type, type]] = {}
    for quant_type, entries in data.items():
        name = quant_type_name(quant_type, where)
        if not isinstance(entries, dict):
            raise ConfigError(f"{where}[{name!r}] must be a dict of module classes, got {entries!r}")
        result[name] = {_class(a, where): _class(b, where) for a, b in entries.items()}
    return result


@attrs.frozen
class StandaloneModuleConfigEntry:
    """How a standalone module is prepared: its own qconfig mapping, example inputs, custom config, backend."""

    qconfig_mapping: Any = None
    example_inputs: Any = None
    prepare_custom_config: Any = None
    backend_config: Any = None


class PrepareCustomConfig:
    """Tracing and custom-module options of prepare_fx (torch.ao's PrepareCustomConfig)."""

    def __init__(self) -> None:
        self.standalone_module_names: dict[str, StandaloneModuleConfigEntry] = {}
        self.standalone_module_classes: dict[type, StandaloneModuleConfigEntry] = {}
        self.float_to_observed_mapping: dict[str, dict[type, type]] = {}
        self.non_traceable_module_names: list[str] = []
        self.non_traceable_module_classes: list[type] = []
        self.input_quantized_indexes: list[int] = []
        self.output_quantized_indexes: list[int] = []
        self.preserved_attributes: list[str] = []

    def set_standalone_module_name(
        self, module_name: str, qconfig_mapping: Any, example_inputs: Any,
        prepare_custom_config: Any = None, backend_config: Any = None,
    ) -> "PrepareCustomConfig":
        """Trace and quantize the submodule ``module_name`` on its own, with its own configuration."""
        if not isinstance(module_name, str):
            raise ConfigError(f"set_standalone_module_name: expected a module name, got {module_name!r}")
        self.standalone_module_names[module_name] = StandaloneModuleConfigEntry(
            qconfig_mapping, example_inputs, prepare_custom_config, backend_config)
        return self

    def set_standalone_module_class(
        self, module_class: type, qconfig_mapping: Any, example_inputs: Any,
        prepare_custom_config: Any = None, backend_config: Any = None,
    ) -> "PrepareCustomConfig":
        """Like :meth:`set_standalone_module_name`, for every submodule of ``module_class``."""
        self.standalone_module_classes[_class(module_class, "set_standalone_module_class")] = (
            StandaloneModuleConfigEntry(qconfig_mapping, example_inputs, prepare_custom_config, backend_config))
        return self

    def set_float_to_observed_mapping(
        self, float_class: type, observed_class: type, quant_type: Any = "static"
    ) -> "PrepareCustomConfig":
        """Swap ``float_class`` for ``observed_class.from_float(module)`` when its qconfig is of ``quant_type``."""
        where = "set_float_to_observed_mapping"
        name = quant_type_name(quant_type, where)
        self.float_to_observed_mapping.setdefault(name, {})[_class(float_class, where)] = _class(observed_class, where)
        return self

    def set_non_traceable_module_names(self, module_names: list[str]) -> "PrepareCustomConfig":
        """Modules kept whole while tracing and run in float."""
        self.non_traceable_module_names = _names(module_names, "set_non_traceable_module_names")
        return self

    def set_non_traceable_module_classes(self, module_classes: list[type]) -> "PrepareCustomConfig":
        """Module classes kept whole while tracing and run in float."""
        self.non_traceable_module_classes = _classes(module_classes, "set_non_traceable_module_classes")
        return self

    def set_input_quantized_indexes(self, indexes: list[int]) -> "PrepareCustomConfig":
        """Positional inputs the caller passes already quantized (QTensors)."""
        self.input_quantized_indexes = _indexes(indexes, "set_input_quantized_indexes")
        return self

    def set_output_quantized_indexes(self, indexes: list[int]) -> "PrepareCustomConfig":
        """Outputs returned quantized (QTensors) instead of dequantized."""
        self.output_quantized_indexes = _indexes(indexes, "set_output_quantized_indexes")
        return self

    def set_preserved_attributes(self, attributes: list[str]) -> "PrepareCustomConfig":
        """Attributes of the model copied onto the traced GraphModule (which drops what forward does not use)."""
        self.preserved_attributes = _names(attributes, "set_preserved_attributes")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PrepareCustomConfig":
        """torch.ao's dict form (``prepare_custom_config_dict``)."""
        name = cls.__name__
        data = _check_keys(data, (STANDALONE_MODULE_NAME, STANDALONE_MODULE_CLASS, FLOAT_TO_OBSERVED,
                                  NON_TRACEABLE_MODULE_NAME, NON_TRACEABLE_MODULE_CLASS, INPUT_QUANTIZED_INDEXES,
                                  OUTPUT_QUANTIZED_INDEXES, PRESERVED_ATTRIBUTES), name)
        config = cls()
        for key, setter in ((STANDALONE_MODULE_NAME, config.set_standalone_module_name),
                            (STANDALONE_MODULE_CLASS, config.set_standalone_module_class)):
            for entry in data.get(key, []):
                if not isinstance(entry, (tuple, list)) or not 3 <= len(entry) <= 5:
                    raise ConfigError(f"{name}[{key!r}] entries are (name or class, qconfig_mapping, example_inputs"
                                      f"[, prepare_custom_config[, backend_config]]), got {entry!r}")
                setter(*entry)
        for quant_type, entries in _class_mapping(data.get(FLOAT_TO_OBSERVED, {}), FLOAT_TO_OBSERVED, name).items():
            for float_class, observed_class in entries.items():
                config.set_float_to_observed_mapping(float_class, observed_class, quant_type)
        if NON_TRACEABLE_MODULE_NAME in data:
            config.set_non_traceable_module_names(data[NON_TRACEABLE_MODULE_NAME])
        if NON_TRACEABLE_MODULE_CLASS in data:
            config.set_non_traceable_module_classes(data[NON_TRACEABLE_MODULE_CLASS])
        if INPUT_QUANTIZED_INDEXES in data:
            config.set_input_quantized_indexes(data[INPUT_QUANTIZED_INDEXES])
        if OUTPUT_QUANTIZED_INDEXES in data:
            config.set_output_quantized_indexes(data[OUTPUT_QUANTIZED_INDEXES])
        if PRESERVED_ATTRIBUTES in data:
            config.set_preserved_attributes(data[PRESERVED_ATTRIBUTES])
        return config

    def to_dict(self) -> dict[str, Any]:
        def entries(table: dict) -> list[tuple]:
            return [(key, e.qconfig_mapping, e.example_inputs, e.prepare_custom_config, e.backend_config)
                    for key, e in table.items()]

        data: dict[str, Any] = {}
        for key, value in (
            (STANDALONE_MODULE_NAME, entries(self.standalone_module_names)),
            (STANDALONE_MODULE_CLASS, entries(self.standalone_module_classes)),
            (FLOAT_TO_OBSERVED, {k: dict(v) for k, v in self.float_to_observed_mapping.items()}),
            (NON_TRACEABLE_MODULE_NAME, list(self.non_traceable_module_names)),
            (NON_TRACEABLE_MODULE_CLASS, list(self.non_traceable_module_classes)),
            (INPUT_QUANTIZED_INDEXES, list(self.input_quantized_indexes)),
            (OUTPUT_QUANTIZED_INDEXES, list(self.output_quantized_indexes)),
            (PRESERVED_ATTRIBUTES, list(self.preserved_attributes)),
        ):
            if value:
                data[key] = value
        return data

    def standalone_entry(self, name: str, module_type: type) -> Optional[StandaloneModuleConfigEntry]:
        """The standalone configuration for the module ``name`` of ``module_type``, if it is one."""
        entry = self.standalone_module_names.get(name)
        return entry if entry is not None else self.standalone_module_classes.get(module_type)

    def __repr__(self) -> str:
        return f"PrepareCustomConfig({self.to_dict()!r})"


class ConvertCustomConfig:
    """Custom-module swaps and preserved attributes of convert_fx (torch.ao's ConvertCustomConfig)."""

    def __init__(self) -> None:
        self.observed_to_quantized_mapping: dict[str, dict[type, type]] = {}
        self.preserved_attributes: list[str] = []

    def set_observed_to_quantized_mapping(
        self, observed_class: type, quantized_class: type, quant_type: Any = "static"
    ) -> "ConvertCustomConfig":
        """Swap ``observed_class`` for ``quantized_class.from_observed(module)``."""
        where = "set_observed_to_quantized_mapping"
        name = quant_type_name(quant_type, where)
        self.observed_to_quantized_mapping.setdefault(name, {})[_class(observed_class, where)] = _class(
            quantized_class, where)
        return self

    def set_preserved_attributes(self, attributes: list[str]) -> "ConvertCustomConfig":
        self.preserved_attributes = _names(attributes, "set_preserved_attributes")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConvertCustomConfig":
        """torch.ao's dict form (``convert_custom_config_dict``)."""
        name = cls.__name__
        data = _check_keys(data, (OBSERVED_TO_QUANTIZED, PRESERVED_ATTRIBUTES), name)
        config = cls()
        for quant_type, entries in _class_mapping(data.get(OBSERVED_TO_QUANTIZED, {}), OBSERVED_TO_QUANTIZED,
                                                  name).items():
            for observed_class, quantized_class in entries.items():
                config.set_observed_to_quantized_mapping(observed_class, quantized_class, quant_type)
        if PRESERVED_ATTRIBUTES in data:
            config.set_preserved_attributes(data[PRESERVED_ATTRIBUTES])
        return config

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.observed_to_quantized_mapping:
            data[OBSERVED_TO_QUANTIZED] = {k: dict(v) for k, v in self.observed_to_quantized_mapping.items()}
        if self.preserved_attributes:
            data[PRESERVED_ATTRIBUTES] = list(self.preserved_attributes)
        return data

    def __repr__(self) -> str:
        return f"ConvertCustomConfig({self.to_dict()!r})"


class FuseCustomConfig:
    """Options of fuse_fx: the attributes to keep on the traced model (torch.ao's FuseCustomConfig)."""

    def __init__(self) -> None:
        self.preserved_attributes: list[str] = []

    def set_preserved_attributes(self, attributes: list[str]) -> "FuseCustomConfig":
        self.preserved_attributes = _names(attributes, "set_preserved_attributes")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FuseCustomConfig":
        data = _check_keys(data, (PRESERVED_ATTRIBUTES,), cls.__name__)
        config = cls()
        if PRESERVED_ATTRIBUTES in data:
            config.set_preserved_attributes(data[PRESERVED_ATTRIBUTES])
        return config

    def to_dict(self) -> dict[str, Any]:
        return {PRESERVED_ATTRIBUTES: list(self.preserved_attributes)} if self.preserved_attributes else {}

    def __repr__(self) -> str:
        return f"FuseCustomConfig({self.to_dict()!r})"


def _as(value: Any, cls: type, argument: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls.from_dict(value)
    raise ConfigError(f"{argument} must be a {cls.__name__} or torch.ao's dict form, got {type(value).__name__}")


def as_prepare_custom_config(value: Union[PrepareCustomConfig, dict, None]) -> PrepareCustomConfig:
    return _as(value, PrepareCustomConfig, "prepare_custom_config")


def as_convert_custom_config(value: Union[ConvertCustomConfig, dict, None]) -> ConvertCustomConfig:
    return _as(value, ConvertCustomConfig, "convert_custom_config")


def as_fuse_custom_config(value: Union[FuseCustomConfig, dict, None]) -> FuseCustomConfig:
    return _as(value, FuseCustomConfig, "fuse_custom_config")
