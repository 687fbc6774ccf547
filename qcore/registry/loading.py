"""Loading the selected plugins into a pluggy PluginManager, each inside its own ``try``.

A plugin whose import raises, or whose hookimpls do not match qcore's specs,
is recorded as failed (with the original exception) and skipped with one
:class:`QcorePluginWarning`; one raising :class:`~qcore.errors.PluginUnavailable`
is recorded as skipped with its reason. A blocked plugin's module is never
imported: selection is decided from the entry point's name alone.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Iterable, Mapping, Optional

import attrs
import pluggy

from qcore.errors import PluginError, PluginUnavailable
from qcore.registry.discovery import Candidate, core_version
from qcore.registry.plugins import BLOCKED, FAILED, LOADED, SKIPPED, PluginInfo, QcorePluginWarning
from qcore.registry.selection import CORE, PluginSelection
from qcore.spec import PROJECT_NAME, SPEC_MODULES

RUNTIME_DISTRIBUTION = "(registered at runtime)"
REGISTRATION_PREFIX = "qcore_register_"

# Failures already warned about, so that rebuilding the registry does not repeat them.
_warned: set[tuple[str, str, str]] = set()


@attrs.define
class LoadedPlugins:
    """A plugin manager holding the loaded plugins, and what happened to every discovered one."""

    manager: pluggy.PluginManager
    infos: dict[str, PluginInfo]
    selection: PluginSelection
    candidates: list[Candidate]

    def installed_names(self) -> list[str]:
        return [CORE, *(c.name for c in self.candidates)]

    def mark_failed(self, name: str, error: BaseException, stage: str) -> None:
        """Record ``name`` as failed, drop its hookimpls, and warn once."""
        if self.manager.has_plugin(name):
            self.manager.unregister(name=name)
        info = self.infos[name]
        self.infos[name] = _failed(info.name, info.distribution, info.version, info.hooks, error, stage)

    def mark_skipped(self, name: str, reason: str) -> None:
        """Record ``name`` as skipped (it raised PluginUnavailable late, from a hook) and drop its hookimpls."""
        if self.manager.has_plugin(name):
            self.manager.unregister(name=name)
        info = self.infos[name]
        self.infos[name] = PluginInfo(info.name, info.distribution, info.version, info.hooks, SKIPPED, reason)


def new_manager() -> pluggy.PluginManager:
    """A plugin manager that knows qcore's hook specifications."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    for module in SPEC_MODULES:
        manager.add_hookspecs(module)
    return manager


def hooks_of(manager: pluggy.PluginManager, plugin: Any) -> tuple[str, ...]:
    """The hook names ``plugin`` implements (from its markers, before registering it)."""
    names = set()
    for attr in dir(plugin):
        opts = manager.parse_hookimpl_opts(plugin, attr)
        if opts is not None:
            names.add(opts.get("specname") or attr)
    return tuple(sorted(names))


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_QCORE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller_outside_qcore() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the qcore package."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_QCORE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def _failed(name: str, dist: str, version: str, hooks: Iterable[str], error: BaseException, stage: str) -> PluginInfo:
    reason = f"{stage}: {_one_line(error)}"
    key = (name, dist, reason)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"qcore plugin {name!r} ({dist} {version}) is skipped, {reason}. Fix or uninstall it, "
            f"or disable it with QCORE_DISABLED_PLUGINS={name}",
            QcorePluginWarning,
            stacklevel=_caller_outside_qcore(),
        )
    return PluginInfo(name, dist, version, tuple(hooks), FAILED, reason, error)


def validate(manager: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Register ``plugin`` under ``name`` and check every hookimpl against the specs; undo on failure."""
    try:
        manager.register(plugin, name=name)
        manager.check_pending()
        for hook_name, impl in impls_of(manager, name):
            if hook_name.startswith(REGISTRATION_PREFIX) and (impl.hookwrapper or impl.wrapper):
                raise pluggy.PluginValidationError(
                    plugin, f"the registration hook {hook_name} cannot be a wrapper (plugin {name!r})"
                )
    except Exception:
        if manager.has_plugin(name):
            manager.unregister(name=name)
        raise


def impls_of(manager: pluggy.PluginManager, name: str) -> list[tuple[str, Any]]:
    """(hook name, HookImpl) for every hookimpl the plugin registered as ``name`` has."""
    plugin = manager.get_plugin(name)
    return [(caller.name, impl) for caller in manager.get_hookcallers(plugin) or ()
            for impl in caller.get_hookimpls() if impl.plugin_name == name]


def _load_one(manager: pluggy.PluginManager, candidate: Candidate) -> PluginInfo:
    name, dist, version = candidate.name, candidate.distribution, candidate.version
    try:
        plugin = candidate.entry_point.load()
    except PluginUnavailable as exc:
        return PluginInfo(name, dist, version, (), SKIPPED, exc.reason)
    except Exception as exc:
        return _failed(name, dist, version, (), exc, "import failed")
    hooks = hooks_of(manager, plugin)
    try:
        validate(manager, plugin, name)
    except Exception as exc:
        return _failed(name, dist, version, hooks, exc, "invalid hooks")
    return PluginInfo(name, dist, version, hooks, LOADED)


def load_plugins(
    candidates: list[Candidate], selection: PluginSelection, runtime: Optional[Mapping[str, Any]] = None
) -> LoadedPlugins:
    """Register the core, then every selected candidate, then plugins registered at runtime."""
    from qcore.registry import builtin

    manager = new_manager()
    manager.register(builtin, name=CORE)
    infos = {CORE: PluginInfo(CORE, "qcore", core_version(), hooks_of(manager, builtin), LOADED)}
    for candidate in candidates:
        name = candidate.name
        if name in infos:
            other = infos[name]
            error = PluginError(
                f"the plugin name {name!r} of {candidate.distribution} is already taken by {other.distribution}"
            )
            # Keyed apart so both distributions stay visible in list_plugins().
            infos[f"{name} ({candidate.distribution})"] = _failed(
                name, candidate.distribution, candidate.version, (), error, "name clash"
            )
            continue
        reason = selection.block_reason(name)
        if reason is not None:
            infos[name] = PluginInfo(name, candidate.distribution, candidate.version, (), BLOCKED, reason)
            continue
        infos[name] = _load_one(manager, candidate)
    for name, plugin in (runtime or {}).items():
        validate(manager, plugin, name)
        infos[name] = PluginInfo(name, RUNTIME_DISTRIBUTION, "-", hooks_of(manager, plugin), LOADED)
    return LoadedPlugins(manager, infos, selection, candidates)
