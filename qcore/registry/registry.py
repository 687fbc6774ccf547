"""Registry: the tables the loaded plugins filled, the dispatch hooks, and the plugin list.

Built by calling each plugin's ``qcore_register_*`` hookimpls in turn (the
core first, then plugins by name), each with the table opened for that
plugin, so every entry records who added it. A plugin whose registration
hook raises is marked failed and its entries are withdrawn; a name two plugins
claim raises :class:`~qcore.errors.PluginConflictError`.
"""

from __future__ import annotations

from typing import Any, Optional

from qcore.errors import ConfigError, PluginConflictError, PluginError, PluginUnavailable
from qcore.registry.plugins import FAILED, LOADED, PluginInfo
from qcore.registry.selection import CORE
from qcore.registry.tables import (
    BackendRegistry,
    ClassRegistry,
    CustomModuleRegistry,
    FusionPatternRegistry,
    QuantizedModuleRegistry,
    Table,
)

#: Registration hook -> the Registry attribute it fills.
REGISTRATION_HOOKS = {
    "qcore_register_backends": "backends",
    "qcore_register_observers": "observers",
    "qcore_register_fake_quantizers": "fake_quantizers",
    "qcore_register_fusion_patterns": "fusion_patterns",
    "qcore_register_custom_modules": "custom_modules",
    "qcore_register_quantized_modules": "quantized_modules",
}


def plugin_failure(info: PluginInfo, what: str) -> PluginError:
    """A PluginError for asking for ``what`` from the failed plugin ``info``, carrying its exception."""
    error = PluginError(
        f"{what} needs the plugin {info.name!r} ({info.distribution} {info.version}), which failed to load: "
        f"{info.reason}"
    )
    error.original = info.error  # type: ignore[attr-defined]
    error.__cause__ = info.error
    return error


class Registry:
    """Everything the loaded plugins provide. Get it with :func:`qcore.registry.get_registry`."""

    def __init__(self, loaded: Any) -> None:
        self._loaded = loaded
        self.backends = BackendRegistry()
        self.observers = ClassRegistry("observer")
        self.fake_quantizers = ClassRegistry("fake-quantizer")
        self.fusion_patterns = FusionPatternRegistry()
        self.custom_modules = CustomModuleRegistry()
        self.quantized_modules = QuantizedModuleRegistry()
        #: pluggy's hook relay: ``registry.hook.qcore_lower_module(backend=..., module=...)``.
        self.hook = loaded.manager.hook
        self._fill()

    @property
    def plugin_manager(self) -> Any:
        return self._loaded.manager

    @property
    def plugins(self) -> tuple[PluginInfo, ...]:
        """Every discovered plugin (the core first), with its status."""
        return tuple(self._loaded.infos.values())

    def _tables(self) -> list[Table[Any]]:
        return [getattr(self, attr) for attr in REGISTRATION_HOOKS.values()]

    def _fill(self) -> None:
        from qcore.registry.loading import impls_of

        manager = self._loaded.manager
        names = [n for n, info in self._loaded.infos.items() if info.status == LOADED and manager.has_plugin(n)]
        for name in names:
            impls = impls_of(manager, name)
            try:
                for hook_name, attr in REGISTRATION_HOOKS.items():
                    table = getattr(self, attr)
                    for impl in (impl for h, impl in impls if h == hook_name):
                        with table.open_for(name):
                            impl.function(**{arg: table for arg in impl.argnames})
            except PluginConflictError:
                raise
            except Exception as exc:
                if name == CORE:
                    raise PluginError(f"qcore's core plugin failed to register its entries: {exc}") from exc
                for table in self._tables():
                    table._discard_plugin(name)
                if isinstance(exc, PluginUnavailable):
                    self._loaded.mark_skipped(name, exc.reason)
                else:
                    self._loaded.mark_failed(name, exc, "registration hook raised")

    # -- what the rest of qcore asks ------------------------------------------
    def name_of_class(self, cls: Any) -> Optional[str]:
        """The name ``cls`` is registered under as an observer or fake-quantizer, or None."""
        return self.observers.name_of(cls) or self.fake_quantizers.name_of(cls)

    def lookup_class(self, name: str) -> type:
        """The observer (searched first) or fake-quantizer class registered as ``name``."""
        for table in (self.observers, self.fake_quantizers):
            if name in table:
                return table.get(name)
        raise ConfigError(
            f"no observer or fake-quantizer is registered as {name!r}; observers: "
            f"{', '.join(self.observers.names()) or '(none)'}; fake-quantizers: "
            f"{', '.join(self.fake_quantizers.names()) or '(none)'}{self.not_loaded_note()}"
        )

    def not_loaded_note(self) -> str:
        """``"; plugins not loaded: ..."`` naming every blocked, skipped or failed plugin, or ""."""
        missing = [info.describe() for info in self.plugins if info.status != LOADED]
        return f"; plugins not loaded (one may provide it): {'; '.join(missing)}" if missing else ""

    def backend_description(self, name: str) -> Any:
        """The BackendDescription registered under ``name`` (or an alias); a clear error otherwise.

        When the plugin of the same name (or distribution ``qcore-<name>``)
        did not load, the error says so; a failed one raises PluginError
        carrying the plugin's original exception.
        """
        description = self.backends.get(name)
        if description is not None:
            return description
        for info in self.plugins:
            if info.status != LOADED and name in (info.name, _backend_of_distribution(info.distribution)):
                if info.status == FAILED:
                    raise plugin_failure(info, f"the backend {name!r}")
                raise ConfigError(f"the backend {name!r} is provided by the plugin {info.name!r}, which is "
                                  f"{info.status}: {info.reason}")
        installed = [", ".join(d.names) for d in self.backends.descriptions()]
        raise ConfigError(
            f"unknown backend {name!r}; installed backends: {'; '.join(installed) or '(none)'}{self.not_loaded_note()}"
        )

    def __repr__(self) -> str:
        loaded = [info.name for info in self.plugins if info.status == LOADED]
        return f"<Registry plugins={loaded} backends={self.backends.names()}>"


def _backend_of_distribution(distribution: str) -> str:
    normalised = distribution.lower().replace("_", "-")
    return normalised[len("qcore-"):].replace("-", "_") if normalised.startswith("qcore-") else ""
