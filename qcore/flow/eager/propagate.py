"""propagate_qconfig_: give every module a ``qconfig``, inherited from its parent unless set for it.

Precedence for one module, lowest first (torch.ao's): the parent's qconfig,
an entry for its type, an entry for its qualified name, the module's own
``qconfig`` attribute. ``None`` excludes the module and, by inheritance, its
whole subtree. A :class:`~qcore.QConfigMapping` is accepted too (its global,
object-type, module-name and regex entries; order-based entries need FX).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Union

from torch import nn
from torch.nn.utils.parametrize import type_before_parametrizations

from qcore.errors import ConfigError
from qcore.qconfig import QConfig
from qcore.qconfig_mapping import QConfigMapping

__all__ = ["propagate_qconfig_"]

QConfigSpec = Union[Mapping[Any, Any], QConfigMapping, None]

_NOT_FOUND = object()


def _check_qconfig(value: Any, where: str) -> None:
    if value is None or isinstance(value, QConfig):
        return
    hint = ""
    if type(value).__module__.startswith("torch.ao"):
        hint = " (this is torch.ao's QConfig; build it with qcore.QConfig or take qcore.get_default_qconfig())"
    raise ConfigError(f"{where}: expected a qcore QConfig or None, got {type(value).__name__}{hint}")


class _Lookup:
    """The qconfigs given for names and types, from a dict or a QConfigMapping."""

    def __init__(self, spec: QConfigSpec) -> None:
        self.by_name: dict[str, Any] = {}
        self.by_type: dict[type, Any] = {}
        self.by_regex: dict[str, Any] = {}
        if spec is None:
            return
        if isinstance(spec, QConfigMapping):
            if spec.module_name_object_type_order_qconfigs:
                raise ConfigError("qconfig_dict: QConfigMapping.set_module_name_object_type_order needs FX graph "
                                  "mode (eager mode sees modules, not call order); use set_module_name")
            self.by_name[""] = spec.global_qconfig
            self.by_name.update(spec.module_name_qconfigs)
            self.by_regex.update(spec.module_name_regex_qconfigs)
            for key, qconfig in spec.object_type_qconfigs.items():
                if isinstance(key, type):
                    self.by_type[key] = qconfig
            values = [*self.by_name.items(), *self.by_regex.items(), *self.by_type.items()]
        elif isinstance(spec, Mapping):
            for key, qconfig in spec.items():
                if isinstance(key, str):
                    self.by_name[key] = qconfig
                elif isinstance(key, type):
                    self.by_type[key] = qconfig
                else:
                    raise ConfigError(f"qconfig_dict keys are module names (str) or module types, got {key!r}")
            values = list(spec.items())
        else:
            raise ConfigError(f"qconfig_dict must be a dict of module names/types to QConfigs or a QConfigMapping, "
                              f"got {type(spec).__name__}")
        for key, qconfig in values:
            _check_qconfig(qconfig, f"qconfig_dict[{getattr(key, '__name__', key)!r}]")

    def find(self, name: str, module: nn.Module) -> Any:
        """The qconfig given for this module itself (name beats regex beats type), or _NOT_FOUND."""
        if name in self.by_name:
            return self.by_name[name]
        for regex, qconfig in self.by_regex.items():
            if re.match(regex, name):
                return qconfig
        return self.by_type.get(type_before_parametrizations(module), _NOT_FOUND)


def _not_traced(name: str, child: nn.Module, custom: Mapping[str, Any]) -> bool:
    return name in custom.get("non_traceable_module_name", []) or type(child) in custom.get(
        "non_traceable_module_class", []
    )


def _propagate(
    module: nn.Module, lookup: _Lookup, parent_qconfig: Any, prefix: str, custom: Mapping[str, Any],
    matched: list[tuple[str, nn.Module]],
) -> None:
    qconfig = parent_qconfig
    found = lookup.find(prefix, module)
    if found is not _NOT_FOUND:
        qconfig = found
        matched.append((prefix, module))
    if hasattr(module, "qconfig"):
        qconfig = module.qconfig
        _check_qconfig(qconfig, f"the qconfig attribute of {prefix or 'the model'!r} ({type(module).__name__})")
    module.qconfig = qconfig
    for name, child in module.named_children():
        if custom and _not_traced(name, child, custom):
            continue
        _propagate(child, lookup, qconfig, f"{prefix}.{name}" if prefix else name, custom, matched)


def propagate_qconfig_(
    module: nn.Module, qconfig_dict: QConfigSpec = None, prepare_custom_config_dict: Optional[Mapping[str, Any]] = None
) -> None:
    """Attach a ``qconfig`` attribute to ``module`` and every submodule, in place (torch.ao's semantics).

    ``qconfig_dict`` maps module names (``""`` is the model itself) or module
    types to QConfigs (None excludes), or is a QConfigMapping. Children listed
    as ``non_traceable_module_name`` / ``non_traceable_module_class`` in
    ``prepare_custom_config_dict`` are left alone.
    """
    propagate_and_match(module, qconfig_dict, prepare_custom_config_dict)


def propagate_and_match(
    module: nn.Module, qconfig_dict: QConfigSpec = None, prepare_custom_config_dict: Optional[Mapping[str, Any]] = None
) -> list[tuple[str, nn.Module]]:
    """:func:`propagate_qconfig_`, returning the (name, module) pairs a ``qconfig_dict`` entry named directly."""
    if not isinstance(module, nn.Module):
        raise ConfigError(f"propagate_qconfig_ expects an nn.Module, got {type(module).__name__}")
    matched: list[tuple[str, nn.Module]] = []
    _propagate(module, _Lookup(qconfig_dict), None, "", prepare_custom_config_dict or {}, matched)
    return matched
