"""Plugin discovery, selection and the registries plugins fill.

Importing this package is cheap and discovers nothing: entry points in the
``qcore.plugins`` group are found and loaded on the first call that needs
them (:func:`get_registry`, :func:`list_plugins`, :func:`get_plugin`).
"""

from __future__ import annotations

from qcore.registry.plugins import PluginInfo, QcorePluginWarning
from qcore.registry.registry import Registry
from qcore.registry.state import (
    configure_plugins,
    get_plugin,
    get_registry,
    list_plugins,
    register_plugin,
    reset,
    unregister_plugin,
)
from qcore.registry.tables import (
    BackendRegistry,
    ClassRegistry,
    CustomModuleRegistry,
    CustomModuleSwap,
    Entry,
    FusionPatternRegistry,
    QuantizedModuleRegistry,
)

__all__ = [
    "BackendRegistry",
    "ClassRegistry",
    "CustomModuleRegistry",
    "CustomModuleSwap",
    "Entry",
    "FusionPatternRegistry",
    "PluginInfo",
    "QcorePluginWarning",
    "QuantizedModuleRegistry",
    "Registry",
    "configure_plugins",
    "get_plugin",
    "get_registry",
    "list_plugins",
    "register_plugin",
    "reset",
    "unregister_plugin",
]
