"""The process-wide plugin state: discovered once, loaded and built on first use, behind a lock.

Nothing here runs at import time. The first call that needs plugins
discovers the entry points, reads the selection (environment, the working
directory's pyproject.toml, the API) and loads the selected plugins;
:func:`configure_plugins` and :func:`register_plugin` drop the loaded state so
that the next use rebuilds it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional

from qcore.errors import PluginError
from qcore.registry.plugins import FAILED, LOADED, PluginInfo
from qcore.registry.selection import CORE, api_layer, current_selection

if TYPE_CHECKING:
    from qcore.registry.registry import Registry

_lock = threading.RLock()
_candidates: Optional[list[Any]] = None  # discovered entry points (cached for the process)
_loaded: Optional[Any] = None  # LoadedPlugins
_built: Optional[Any] = None  # Registry built from _loaded, not yet checked against the selection
_registry: Optional[Any] = None  # Registry, built and checked
_api_settings: dict[str, Any] = {}
_runtime_plugins: dict[str, Any] = {}

_UNSET: Any = object()


def _discovered() -> list[Any]:
    global _candidates
    if _candidates is None:
        from qcore.registry.discovery import discover

        _candidates = discover()
    return _candidates


def _load() -> Any:
    global _loaded
    with _lock:
        if _loaded is None:
            from qcore.registry.loading import load_plugins

            selection = current_selection(_api_settings)
            _loaded = load_plugins(_discovered(), selection, _runtime_plugins)
        return _loaded


def _build() -> Any:
    """The Registry of the loaded plugins, running the registration hooks once."""
    global _built
    with _lock:
        if _built is None:
            from qcore.registry.registry import Registry

            _built = Registry(_load())
        return _built


def _forget_loaded() -> None:
    global _loaded, _built, _registry
    _loaded = _built = _registry = None


def _installed(loaded: Any) -> str:
    return ", ".join(loaded.installed_names())


def _check_required(loaded: Any) -> None:
    selection = loaded.selection
    for name in selection.required:
        info = loaded.infos[name]
        where = selection.sources.get("required", "required plugins")
        if info.status == FAILED:
            from qcore.registry.registry import plugin_failure

            raise plugin_failure(info, f"{where}") from info.error
        if info.status != LOADED:
            raise PluginError(
                f"the required plugin {name!r} ({where}) is {info.status}: {info.reason}; "
                f"installed plugins: {_installed(loaded)}"
            )


def get_registry() -> Registry:
    """The :class:`~qcore.registry.registry.Registry` of the selected plugins (built on first use).

    Raises PluginError for an unknown plugin name in the selection, a
    required plugin that did not load, and PluginConflictError for a name
    two plugins claim.
    """
    global _registry
    registry = _registry
    if registry is not None:
        return registry
    with _lock:
        if _registry is None:
            loaded = _load()
            loaded.selection.check_names(c.name for c in loaded.candidates)
            built = _build()
            _check_required(loaded)
            _registry = built
        return _registry


def list_plugins() -> list[PluginInfo]:
    """Every discovered plugin, the core first, with name, distribution, version, hooks, status, reason.

    Never raises for unknown names, unmet required plugins or conflicts (it is
    how you diagnose them); :func:`get_registry` does.
    """
    with _lock:
        loaded = _load()
        try:
            _build()  # runs the registration hooks, so a plugin whose hook raises shows as failed
        except PluginError:
            pass  # a conflict: get_registry() reports it
        return list(loaded.infos.values())


def get_plugin(name: str) -> Any:
    """The loaded plugin object (usually its module) named ``name``.

    A failed plugin raises PluginError chained from, and carrying as
    ``.original``, the exception it failed with; a blocked or skipped one
    raises PluginError with the reason; an unknown name lists the installed ones.
    """
    registry = get_registry()
    infos = [info for info in registry.plugins if info.name == name]
    if not infos:
        raise PluginError(f"no plugin named {name!r} is installed; installed plugins: {_installed(_load())}")
    info = infos[0]
    if info.status == FAILED:
        from qcore.registry.registry import plugin_failure

        raise plugin_failure(info, f"get_plugin({name!r})") from info.error
    if info.status != LOADED:
        raise PluginError(f"the plugin {name!r} is {info.status}: {info.reason}")
    return registry.plugin_manager.get_plugin(name)


def configure_plugins(
    *, plugins: Any = _UNSET, disabled: Any = _UNSET, required: Any = _UNSET, autoload: Any = _UNSET
) -> None:
    """Select plugins from code; overrides the environment and pyproject.toml key by key.

    ``plugins``: allow-list (``[]`` for none, ``None`` for all installed);
    ``disabled``: names never to load; ``required``: names that must load;
    ``autoload``: False to load only allow-listed (and required) plugins. Keys
    left out fall back to pyproject.toml and the environment; each call
    replaces the previous call's settings, so ``configure_plugins()`` undoes
    them. The registry is rebuilt on next use.
    """
    settings = {k: v for k, v in dict(plugins=plugins, disabled=disabled, required=required,
                                      autoload=autoload).items() if v is not _UNSET}
    api_layer(settings)  # validate now, where the caller can see the mistake
    global _api_settings
    with _lock:
        _api_settings = settings
        _forget_loaded()


def register_plugin(plugin: Any, name: str) -> None:
    """Register an in-process plugin object (a module or class with hookimpls), as pluggy's ``register``.

    Selection does not apply to it. It is validated now (PluginError when a
    hookimpl does not match a spec) and included from the next use on.
    """
    from qcore.registry.loading import new_manager, validate

    with _lock:
        taken = {CORE, *_runtime_plugins, *(c.name for c in _discovered())}
        if name in taken:
            raise PluginError(f"the plugin name {name!r} is taken; taken names: {', '.join(sorted(taken))}")
        try:
            validate(new_manager(), plugin, name)
        except Exception as exc:
            raise PluginError(f"cannot register the plugin {name!r}: {exc}") from exc
        _runtime_plugins[name] = plugin
        _forget_loaded()


def unregister_plugin(name: str) -> None:
    """Remove a plugin added with :func:`register_plugin`."""
    with _lock:
        if name not in _runtime_plugins:
            raise PluginError(f"{name!r} was not added with register_plugin; runtime plugins: "
                              f"{', '.join(_runtime_plugins) or '(none)'}")
        del _runtime_plugins[name]
        _forget_loaded()


def reset() -> None:
    """Forget everything: discovered entry points, API selection, runtime plugins, the built registry."""
    global _candidates
    with _lock:
        _candidates = None
        _forget_loaded()
        _api_settings.clear()
        _runtime_plugins.clear()

