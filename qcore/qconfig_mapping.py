"""QConfigMapping: which QConfig applies to which module, by name, type, regex or call order.

Unlike the other configuration types this one is a mutable builder, as in
torch.ao: code written as ``m = QConfigMapping(); m.set_global(q)`` must keep
working, and a frozen value would silently drop that call.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, Union

import torch

from qcore.errors import ConfigError
from qcore.qconfig import QConfig, QConfigAny

ObjectType = Union[type, Callable[..., Any], str]

GLOBAL_KEY = ""
OBJECT_TYPE_KEY = "object_type"
MODULE_NAME_REGEX_KEY = "module_name_regex"
MODULE_NAME_KEY = "module_name"
MODULE_NAME_OBJECT_TYPE_ORDER_KEY = "module_name_object_type_order"


def _check_qconfig(value: Any, where: str) -> QConfigAny:
    if value is None or isinstance(value, QConfig):
        return value
    raise ConfigError(f"{where}: expected a QConfig or None, got {type(value).__name__}")


class QConfigMapping:
    """Maps modules to qconfigs; later, more specific entries win.

    Precedence, lowest first: global, object type, module-name regex, module
    name (a parent's name covers its children), module name + object type +
    call index. ``None`` as a qconfig excludes what it matches.
    """

    def __init__(self) -> None:
        self.global_qconfig: QConfigAny = None
        self.object_type_qconfigs: dict[ObjectType, QConfigAny] = {}
        self.module_name_regex_qconfigs: dict[str, QConfigAny] = {}
        self.module_name_qconfigs: dict[str, QConfigAny] = {}
        self.module_name_object_type_order_qconfigs: dict[tuple[str, ObjectType, int], QConfigAny] = {}

    def set_global(self, global_qconfig: QConfigAny) -> "QConfigMapping":
        self.global_qconfig = _check_qconfig(global_qconfig, "set_global")
        return self

    def set_object_type(self, object_type: ObjectType, qconfig: QConfigAny) -> "QConfigMapping":
        self.object_type_qconfigs[object_type] = _check_qconfig(qconfig, f"set_object_type({object_type!r})")
        return self

    def set_module_name_regex(self, module_name_regex: str, qconfig: QConfigAny) -> "QConfigMapping":
        try:
            re.compile(module_name_regex)
        except re.error as exc:
            raise ConfigError(f"set_module_name_regex: {module_name_regex!r} is not a valid regex: {exc}") from None
        self.module_name_regex_qconfigs[module_name_regex] = _check_qconfig(qconfig, f"set_module_name_regex({module_name_regex!r})")
        return self

    def set_module_name(self, module_name: str, qconfig: QConfigAny) -> "QConfigMapping":
        self.module_name_qconfigs[module_name] = _check_qconfig(qconfig, f"set_module_name({module_name!r})")
        return self

    def set_module_name_object_type_order(
        self, module_name: str, object_type: ObjectType, index: int, qconfig: QConfigAny
    ) -> "QConfigMapping":
        key = (module_name, object_type, int(index))
        self.module_name_object_type_order_qconfigs[key] = _check_qconfig(qconfig, f"set_module_name_object_type_order{key!r}")
        return self

    def lookup(self, module_name: str, object_type: Optional[ObjectType] = None, index: Optional[int] = None) -> tuple[QConfigAny, str]:
        """The qconfig for a module (or op) and a description of the entry that matched."""
        if object_type is not None and index is not None:
            parent = module_name.rpartition(".")[0] if "." in module_name else ""
            for name in (module_name, parent):
                key = (name, object_type, index)
                if key in self.module_name_object_type_order_qconfigs:
                    return self.module_name_object_type_order_qconfigs[key], f"module_name_object_type_order{key!r}"
        name = module_name
        while name:
            if name in self.module_name_qconfigs:
                return self.module_name_qconfigs[name], f"module_name({name!r})"
            name = name.rpartition(".")[0]
        for regex, qconfig in self.module_name_regex_qconfigs.items():
            if re.match(regex, module_name):
                return qconfig, f"module_name_regex({regex!r})"
        if object_type is not None and object_type in self.object_type_qconfigs:
            return self.object_type_qconfigs[object_type], f"object_type({getattr(object_type, '__name__', object_type)})"
        return self.global_qconfig, "global"

    def qconfig_for(self, module_name: str, object_type: Optional[ObjectType] = None, index: Optional[int] = None) -> QConfigAny:
        return self.lookup(module_name, object_type, index)[0]

    def to_dict(self) -> dict[str, Any]:
        """torch.ao's dict form: ``{"": global, "object_type": [(type, qconfig)], ...}``."""
        return {
            GLOBAL_KEY: self.global_qconfig,
            OBJECT_TYPE_KEY: list(self.object_type_qconfigs.items()),
            MODULE_NAME_REGEX_KEY: list(self.module_name_regex_qconfigs.items()),
            MODULE_NAME_KEY: list(self.module_name_qconfigs.items()),
            MODULE_NAME_OBJECT_TYPE_ORDER_KEY: [
                (*key, qconfig) for key, qconfig in self.module_name_object_type_order_qconfigs.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QConfigMapping":
        """Build from torch.ao's dict form, e.g. ``{"": default_qconfig}``."""
        known = {GLOBAL_KEY, OBJECT_TYPE_KEY, MODULE_NAME_REGEX_KEY, MODULE_NAME_KEY, MODULE_NAME_OBJECT_TYPE_ORDER_KEY}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown qconfig_mapping keys {sorted(unknown)!r}; expected some of {sorted(known)!r}")
        mapping = cls()
        if GLOBAL_KEY in data:
            mapping.set_global(data[GLOBAL_KEY])
        for object_type, qconfig in data.get(OBJECT_TYPE_KEY, []):
            mapping.set_object_type(object_type, qconfig)
        for regex, qconfig in data.get(MODULE_NAME_REGEX_KEY, []):
            mapping.set_module_name_regex(regex, qconfig)
        for name, qconfig in data.get(MODULE_NAME_KEY, []):
            mapping.set_module_name(name, qconfig)
        for name, object_type, index, qconfig in data.get(MODULE_NAME_OBJECT_TYPE_ORDER_KEY, []):
            mapping.set_module_name_object_type_order(name, object_type, index, qconfig)
        return mapping

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QConfigMapping) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        parts = [f"global={self.global_qconfig!r}"]
        for key, value in self.to_dict().items():
            if key and value:
                parts.append(f"{key}={value!r}")
        return f"QConfigMapping({', '.join(parts)})"


def as_qconfig_mapping(value: Union[QConfigMapping, dict[str, Any], None]) -> QConfigMapping:
    """Accept a QConfigMapping or torch.ao's dict form (``{'': qconfig}``)."""
    if isinstance(value, QConfigMapping):
        return value
    if isinstance(value, dict):
        return QConfigMapping.from_dict(value)
    raise ConfigError(f"expected a QConfigMapping or a dict like {{'': qconfig}}, got {type(value).__name__}")


_FIXED_0TO1 = (torch.nn.Hardsigmoid, torch.nn.functional.hardsigmoid, "hardsigmoid", "hardsigmoid_",
               torch.nn.Sigmoid, torch.sigmoid, "sigmoid", "sigmoid_", torch.nn.Softmax)
_FIXED_NEG1TO1 = (torch.nn.Tanh, torch.tanh, "tanh", "tanh_")
_TRANSPOSED_CONVS = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d,
                     torch.nn.functional.conv_transpose1d, torch.nn.functional.conv_transpose2d,
                     torch.nn.functional.conv_transpose3d)


def _default_mapping(is_qat: bool, backend: Optional[str]) -> QConfigMapping:
    from qcore import qconfig as q
    from qcore.backend_selection import get_backend_description
    from qcore import observers as obs
    from qcore.observers import defaults as obs_defaults

    description = get_backend_description(backend)
    if description.default_qconfig_mapping is not None:
        return description.default_qconfig_mapping(is_qat)
    qconfig = description.default_qat_qconfig if is_qat else description.default_qconfig
    mapping = QConfigMapping().set_global(qconfig).set_object_type("reshape", q.default_reuse_input_qconfig)
    # Transposed convolutions have no per-channel kernels: keep their weights per tensor.
    transposed = QConfig(activation=qconfig.activation, weight=obs_defaults.default_weight_observer)
    for object_type in _TRANSPOSED_CONVS:
        mapping.set_object_type(object_type, transposed)
    # Layer norm keeps float weights; PReLU's slope is quantized as quint8, as in torch.ao.
    layer_norm = QConfig(activation=qconfig.activation, weight=obs_defaults.default_placeholder_observer)
    for object_type in (torch.nn.functional.layer_norm, torch.nn.LayerNorm):
        mapping.set_object_type(object_type, layer_norm)
    mapping.set_object_type(torch.nn.PReLU, QConfig(activation=obs.HistogramObserver, weight=obs.MinMaxObserver))
    fixed = q.default_fixed_qparams_range_0to1_qat_qconfig if is_qat else q.default_fixed_qparams_range_0to1_qconfig
    zero_to_one = QConfig(activation=fixed.activation, weight=obs_defaults.default_weight_observer)
    fixed = q.default_fixed_qparams_range_neg1to1_qat_qconfig if is_qat else q.default_fixed_qparams_range_neg1to1_qconfig
    neg1_to_1 = QConfig(activation=fixed.activation, weight=obs_defaults.default_weight_observer)
    for object_type in _FIXED_0TO1:
        mapping.set_object_type(object_type, zero_to_one)
    for object_type in _FIXED_NEG1TO1:
        mapping.set_object_type(object_type, neg1_to_1)
    return mapping


def get_default_qconfig_mapping(backend: Optional[str] = None, version: int = 0) -> QConfigMapping:
    """The post-training mapping the backend recommends: its qconfig globally, fixed qparams for sigmoid-like ops."""
    if version != 0:
        raise ConfigError("get_default_qconfig_mapping: qcore has one default per backend; drop the version argument")
    return _default_mapping(False, backend)


def get_default_qat_qconfig_mapping(backend: Optional[str] = None, version: int = 1) -> QConfigMapping:
    """The QAT mapping the backend recommends."""
    if version != 1:
        raise ConfigError("get_default_qat_qconfig_mapping: qcore has one default per backend; drop the version argument")
    return _default_mapping(True, backend)
