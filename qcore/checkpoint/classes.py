"""Which classes a checkpoint may name, and how it names them.

A manifest names each module class as ``"package:Name"``. qcore.load builds
only classes from this allow-list, and never imports a module path read from
the file:

* ``torch.nn:Name`` — the modules ``torch.nn`` exports;
* ``qcore.<package>:Name`` — a class one of qcore's own packages exports
  (:data:`QCORE_PACKAGES`; only these fixed packages are ever imported);
* classes registered through the plugin registry (quantized-module swaps,
  custom modules, observers, fake-quantizers), found among the registered
  class objects by their ``module:qualname``;
* classes the caller passes (``qcore.load(path, classes=[MyModel])``) or
  that already appear in the model given to ``qcore.load(path, model=...)``.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable, Iterator, Optional

from torch import nn

from qcore.checkpoint.errors import CheckpointClassError

__all__ = ["QCORE_PACKAGES", "class_name", "ClassResolver", "registered_classes", "how_to_allow"]

#: qcore's packages whose exported classes a checkpoint may name (most specific first when matching).
QCORE_PACKAGES: tuple[str, ...] = (
    "qcore.stubs",
    "qcore.nn.quantized",
    "qcore.nn.quantized.dynamic",
    "qcore.nn.quantized.weight_only",
    "qcore.nn.intrinsic",
    "qcore.nn.intrinsic.quantized",
    "qcore.nn.intrinsic.qat",
    "qcore.nn.qat",
    "qcore.nn.quantizable",
    "qcore.observers",
    "qcore.fake_quant",
)
_BY_SPECIFICITY = sorted(QCORE_PACKAGES, key=len, reverse=True)


def how_to_allow(name: str) -> str:
    """The advice every not-allowed error ends with."""
    cls = name.rpartition(":")[2] or name
    return (
        f"qcore.load builds only torch.nn modules, qcore's own modules and classes registered by plugins; "
        f"if you trust this checkpoint and {name!r} is your class, pass it explicitly: qcore.load(path, "
        f"classes=[{cls}]), or pass a model that contains it: qcore.load(path, model=...)"
    )


def _exports(package: Any) -> frozenset[str]:
    names = getattr(package, "__all__", None)
    if names is None:
        names = [n for n in vars(package) if not n.startswith("_")]
    return frozenset(names)


def _exported(package_name: str, name: str) -> Optional[type]:
    """The class ``package_name`` exports as ``name`` (imports only the fixed package and that export)."""
    if not name.isidentifier():
        return None
    if package_name == "torch.nn":
        found = getattr(nn, name, None)
        return found if isinstance(found, type) and issubclass(found, nn.Module) else None
    package = importlib.import_module(package_name)
    if name not in _exports(package):
        return None
    try:
        found = getattr(package, name)
    except (AttributeError, ImportError):
        return None
    return found if isinstance(found, type) else None


def _full_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def class_name(cls: type) -> str:
    """``torch.nn:Conv2d``, ``qcore.nn.quantized:Linear`` (the exporting package), else ``module:qualname``."""
    if cls.__module__.startswith("torch.nn") and _exported("torch.nn", cls.__name__) is cls:
        return f"torch.nn:{cls.__name__}"
    for package in _BY_SPECIFICITY:
        if cls.__module__ == package or cls.__module__.startswith(package + "."):
            if _exported(package, cls.__qualname__) is cls:
                return f"{package}:{cls.__qualname__}"
    return _full_name(cls)


def registered_classes() -> Iterator[type]:
    """Every class the plugin registry holds: module swaps, custom-module triples, observers, fake-quantizers."""
    from qcore.registry import get_registry

    registry = get_registry()
    for entry in registry.quantized_modules.entries():
        yield entry.key[0]  # type: ignore[index]
        yield entry.value
    for entry in registry.custom_modules.entries():
        swap = entry.value
        yield swap.float_cls
        yield swap.observed_cls
        yield swap.quantized_cls
    for table in (registry.observers, registry.fake_quantizers):
        for entry in table.entries():
            yield entry.value


class ClassResolver:
    """Resolves manifest class names against the allow-list; ``extra`` are the caller's own classes."""

    def __init__(self, extra: Iterable[type] = (), include_registry: bool = True) -> None:
        self._extra: dict[str, type] = {}
        classes = list(extra)
        if include_registry:
            classes += list(registered_classes())
        for cls in classes:
            if not isinstance(cls, type):
                raise CheckpointClassError(f"classes= takes classes, got {cls!r} of type {type(cls).__name__}")
            self._extra.setdefault(_full_name(cls), cls)
            self._extra.setdefault(class_name(cls), cls)

    def allows(self, cls: type) -> bool:
        """Whether ``cls`` is on the allow-list (so qcore.load may build it)."""
        try:
            return self.find(class_name(cls)) is cls
        except CheckpointClassError:
            return False

    def find(self, name: str) -> type:
        """The allowed class named ``name``; CheckpointClassError (saying how to allow it) otherwise."""
        if not isinstance(name, str) or name.count(":") != 1:
            raise CheckpointClassError(f"the checkpoint names the class {name!r}, which is not a 'package:Name' class name")
        found = self._extra.get(name)
        if found is not None:
            return found
        module_name, _, qualname = name.partition(":")
        for package in ("torch.nn", *_BY_SPECIFICITY):
            if module_name == package or module_name.startswith(package + "."):
                cls = _exported(package, qualname)
                if cls is not None and (module_name == package or cls.__module__ == module_name):
                    return cls
                break
        raise CheckpointClassError(f"the checkpoint names the class {name!r}, which is not allowed. {how_to_allow(name)}")

    def find_observer(self, name: str) -> type:
        """A class named in a saved QConfig: a registered observer/fake-quant name, or an allowed ``module:qualname``."""
        if isinstance(name, str) and ":" not in name:
            from qcore.registry import get_registry

            registry = get_registry()
            for table in (registry.observers, registry.fake_quantizers):
                if name in table:
                    return table.get(name)
            raise CheckpointClassError(
                f"the checkpoint's qconfig names the observer {name!r}, which no loaded plugin registers; "
                f"install or enable the plugin that provides it{registry.not_loaded_note()}"
            )
        return self.find(name)
