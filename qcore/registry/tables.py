"""The registry objects plugins fill through the ``qcore_register_*`` hooks.

Each table maps a key to a value and remembers which plugin added it. Adding
a key another plugin (or the same plugin) already added raises
:class:`~qcore.errors.PluginConflictError` naming both, because silently
letting one win would make behaviour depend on installation order.

A table is filled while qcore builds the registry: ``add`` is only accepted
inside a ``qcore_register_*`` hook call (qcore opens the table for the plugin
it is calling). To add entries from your own code, register a plugin object
with :func:`qcore.registry.register_plugin`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Generic, Hashable, Iterator, Optional, TypeVar

import attrs

from qcore.errors import ConfigError, PluginConflictError, PluginError

V = TypeVar("V")

#: The quantization flavours a module swap can be registered for.
QUANT_TYPES = ("static", "dynamic", "weight_only", "qat")


@attrs.frozen
class Entry(Generic[V]):
    """One registered value and the plugin that added it."""

    key: Hashable
    value: V
    plugin: str


class Table(Generic[V]):
    """A mapping from keys to values that records the adding plugin and rejects clashes."""

    #: What one entry is, for error messages ("observer", "backend", ...).
    kind = "entry"

    def __init__(self) -> None:
        self._entries: dict[Hashable, Entry[V]] = {}
        self._plugin: Optional[str] = None

    # -- filling ---------------------------------------------------------------
    @contextlib.contextmanager
    def open_for(self, plugin: str) -> Iterator["Table[V]"]:
        """Accept ``add`` calls on behalf of ``plugin`` inside the block (used by the registry builder)."""
        previous, self._plugin = self._plugin, plugin
        try:
            yield self
        finally:
            self._plugin = previous

    def _put(self, key: Hashable, value: V, label: str) -> None:
        plugin = self._plugin
        if plugin is None:
            raise PluginError(
                f"{self.kind} registries are filled by the qcore_register_* hooks; to add {label} "
                f"from your own code, put the hookimpl in an object and call qcore.registry.register_plugin(obj, name)"
            )
        existing = self._entries.get(key)
        if existing is not None:
            raise _conflict(self.kind, label, existing.plugin, plugin)
        self._entries[key] = Entry(key, value, plugin)

    def _discard_plugin(self, plugin: str) -> None:
        """Forget every entry ``plugin`` added (when its hook failed half-way)."""
        self._entries = {k: e for k, e in self._entries.items() if e.plugin != plugin}

    # -- reading ---------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._entries)

    def get(self, key: Hashable, default: Any = None) -> Any:
        entry = self._entries.get(key)
        return default if entry is None else entry.value

    def entry(self, key: Hashable) -> Entry[V]:
        """The entry under ``key``, with the plugin that added it; KeyError if absent."""
        return self._entries[key]

    def entries(self) -> list[Entry[V]]:
        return list(self._entries.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} {self.kind}s)"


def _conflict(kind: str, label: str, first: str, second: str) -> PluginConflictError:
    if first == second:
        return PluginConflictError(f"plugin {first!r} registers the {kind} {label} twice")
    culprit = second if first == "core" else first
    return PluginConflictError(
        f"the {kind} {label} is registered by both plugins {first!r} and {second!r}; disable one of them, "
        f"e.g. QCORE_DISABLED_PLUGINS={culprit} (or disabled_plugins in [tool.qcore] of pyproject.toml)"
    )


def _check_class(value: Any, what: str) -> type:
    if not isinstance(value, type):
        raise ConfigError(f"{what} must be a class, got {value!r} of type {type(value).__name__}")
    return value


def _check_quant_type(quant_type: str) -> str:
    if quant_type not in QUANT_TYPES:
        raise ConfigError(f"quant_type must be one of {', '.join(QUANT_TYPES)}; got {quant_type!r}")
    return quant_type


class ClassRegistry(Table[type]):
    """Classes by name (observers, fake-quantizers): ``add(name, cls)``."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._names: dict[type, str] = {}

    def add(self, name: str, cls: type) -> None:
        """Register ``cls`` under ``name``; the name must be a non-empty string without ':'."""
        if not isinstance(name, str) or not name or ":" in name:
            raise ConfigError(f"{self.kind} name must be a non-empty string without ':', got {name!r}")
        _check_class(cls, f"the {self.kind} registered as {name!r}")
        self._put(name, cls, repr(name))
        self._names.setdefault(cls, name)

    def _discard_plugin(self, plugin: str) -> None:
        super()._discard_plugin(plugin)
        self._names = {}
        for entry in self._entries.values():
            self._names.setdefault(entry.value, str(entry.key))

    def names(self) -> list[str]:
        return [str(k) for k in self._entries]

    def name_of(self, cls: type) -> Optional[str]:
        """The first name ``cls`` was registered under, or None."""
        return self._names.get(cls)


class BackendRegistry(Table[Any]):
    """Backend descriptions by name and alias: ``add(description)``."""

    kind = "backend"

    def add(self, description: Any) -> None:
        """Register a :class:`~qcore.backend_config.BackendDescription` under its name and aliases."""
        from qcore.backend_config import BackendDescription

        if not isinstance(description, BackendDescription):
            raise ConfigError(f"backends are registered as BackendDescription objects, got {description!r}")
        for name in description.names:
            existing = self._entries.get(name)
            if existing is not None and self._plugin is not None:
                raise _conflict(self.kind, f"name {name!r}", existing.plugin, self._plugin)
        for name in description.names:
            self._put(name, description, repr(name))

    def descriptions(self) -> list[Any]:
        """Each registered description once, in registration order."""
        seen: dict[str, Any] = {}
        for entry in self._entries.values():
            seen.setdefault(entry.value.name, entry.value)
        return list(seen.values())

    def names(self) -> list[str]:
        """Canonical backend names (aliases left out)."""
        return [d.name for d in self.descriptions()]


class FusionPatternRegistry(Table[Callable[..., Any]]):
    """Fusers by (pattern, qat): ``add(pattern, fuser, qat=False)``."""

    kind = "fusion pattern"

    def add(self, pattern: tuple[type, ...], fuser: Callable[..., Any], qat: bool = False) -> None:
        """Register ``fuser(is_qat, *modules)`` for the module chain ``pattern``."""
        if not isinstance(pattern, tuple) or len(pattern) < 2:
            raise ConfigError(f"a fusion pattern is a tuple of at least two module types, got {pattern!r}")
        for item in pattern:
            _check_class(item, f"each element of the fusion pattern {pattern!r}")
        if not callable(fuser):
            raise ConfigError(f"the fuser for {pattern!r} must be callable, got {fuser!r}")
        label = "(" + ", ".join(t.__name__ for t in pattern) + ")" + (" for QAT" if qat else "")
        self._put((pattern, bool(qat)), fuser, label)

    def get(self, pattern: Hashable, default: Any = None, qat: bool = False) -> Any:  # type: ignore[override]
        return super().get((pattern, bool(qat)), default)

    def patterns(self, qat: bool = False) -> list[tuple[type, ...]]:
        return [k[0] for k in self._entries if k[1] == bool(qat)]  # type: ignore[index]


@attrs.frozen
class CustomModuleSwap:
    """How prepare and convert replace one custom float module."""

    float_cls: type
    observed_cls: type
    quantized_cls: type
    quant_type: str = "static"


class CustomModuleRegistry(Table[CustomModuleSwap]):
    """Custom-module swaps by (float class, quant type): ``add(float_cls, observed_cls, quantized_cls, quant_type)``."""

    kind = "custom module"

    def add(self, float_cls: type, observed_cls: type, quantized_cls: type, quant_type: str = "static") -> None:
        for value, what in ((float_cls, "float_cls"), (observed_cls, "observed_cls"), (quantized_cls, "quantized_cls")):
            _check_class(value, what)
        _check_quant_type(quant_type)
        swap = CustomModuleSwap(float_cls, observed_cls, quantized_cls, quant_type)
        self._put((float_cls, quant_type), swap, f"{float_cls.__name__} ({quant_type})")

    def get(self, float_cls: Hashable, default: Any = None, quant_type: str = "static") -> Any:  # type: ignore[override]
        return super().get((float_cls, quant_type), default)


class QuantizedModuleRegistry(Table[type]):
    """Module swaps by (source class, quant type): ``add(source_cls, quantized_cls, quant_type)``."""

    kind = "quantized module"

    def add(self, source_cls: type, quantized_cls: type, quant_type: str) -> None:
        _check_class(source_cls, "source_cls")
        _check_class(quantized_cls, "quantized_cls")
        _check_quant_type(quant_type)
        self._put((source_cls, quant_type), quantized_cls, f"{source_cls.__name__} ({quant_type})")

    def get(self, source_cls: Hashable, default: Any = None, quant_type: str = "static") -> Any:  # type: ignore[override]
        return super().get((source_cls, quant_type), default)

    def mapping(self, quant_type: str) -> dict[type, type]:
        """``{source class: quantized class}`` for one quant type, like torch.ao's default mappings."""
        _check_quant_type(quant_type)
        return {k[0]: e.value for k, e in self._entries.items() if k[1] == quant_type}  # type: ignore[index]
