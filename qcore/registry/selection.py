"""Which plugins a deployment loads: environment, then ``[tool.qcore]`` in pyproject.toml, then the API.

Each layer may set any of four keys; a later layer overrides a key an earlier
one set, key by key:

- allow-list: ``QCORE_PLUGINS=a,b`` (empty string: none), ``plugins`` in
  ``[tool.qcore]``, ``configure_plugins(plugins=...)``;
- deny-list: ``QCORE_DISABLED_PLUGINS=a,b``, ``disabled_plugins``, ``disabled=``;
- must load: ``required_plugins``, ``required=`` (no environment variable);
- autoload: ``QCORE_DISABLE_PLUGIN_AUTOLOAD=1``, ``autoload = false``, ``autoload=False``.

With autoload off and no allow-list only the core and the required plugins
load. The core plugin cannot be blocked.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import attrs

from qcore.errors import ConfigError, PluginError

CORE = "core"
_PYPROJECT_KEYS = {"plugins": "plugins", "disabled": "disabled_plugins", "required": "required_plugins", "autoload": "autoload"}
_ENV_KEYS = {"plugins": "QCORE_PLUGINS", "disabled": "QCORE_DISABLED_PLUGINS", "autoload": "QCORE_DISABLE_PLUGIN_AUTOLOAD"}
_API_KEYS = {"plugins": "plugins", "disabled": "disabled", "required": "required", "autoload": "autoload"}

#: One layer: key -> (value, where it was set).
Layer = Mapping[str, "tuple[Any, str]"]


@attrs.frozen
class PluginSelection:
    """The merged selection, with where each key was set (for messages)."""

    plugins: Optional[tuple[str, ...]] = None
    disabled: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    autoload: bool = True
    sources: Mapping[str, str] = attrs.field(factory=dict, eq=False)

    def block_reason(self, name: str) -> Optional[str]:
        """Why ``name`` must not be loaded (its module must not even be imported), or None."""
        if name == CORE:
            return None
        if name in self.disabled:
            return f"disabled by {self.sources.get('disabled', 'the configuration')}"
        if self.plugins is not None and name not in self.plugins:
            return f"not in the allow-list {self.sources.get('plugins', '')}".rstrip()
        if self.plugins is None and not self.autoload and name not in self.required:
            return f"autoload is off ({self.sources.get('autoload', 'autoload=False')}) and it is not allow-listed"
        return None

    def check_names(self, installed: Iterable[str]) -> None:
        """Raise PluginError when a list names a plugin that is not installed, or disables the core."""
        known = [CORE, *sorted(set(installed) - {CORE})]
        problems = []
        for key in ("plugins", "disabled", "required"):
            names = getattr(self, key) or ()
            unknown = [n for n in names if n not in known]
            if unknown:
                problems.append(f"{', '.join(map(repr, unknown))} in {self.sources.get(key, key)}")
        if problems:
            raise PluginError(
                f"unknown plugin name {'; '.join(problems)}; installed plugins: {', '.join(known)}"
            )
        if CORE in self.disabled:
            raise PluginError(f"the core plugin cannot be disabled (found in {self.sources['disabled']})")


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def env_layer(environ: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """The keys the environment sets."""
    layer: dict[str, tuple[Any, str]] = {}
    for key in ("plugins", "disabled"):
        var = _ENV_KEYS[key]
        if var in environ:
            layer[key] = (_split(environ[var]), var)
    var = _ENV_KEYS["autoload"]
    if var in environ:
        layer["autoload"] = (not _truthy(environ[var]), f"{var}={environ[var]}")
    return layer


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python < 3.11 only
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read plugin selection from {path}: {exc}") from exc


def pyproject_layer(directory: Path) -> dict[str, tuple[Any, str]]:
    """The keys ``[tool.qcore]`` of ``directory/pyproject.toml`` sets (none if there is no such file)."""
    path = directory / "pyproject.toml"
    if not path.is_file():
        return {}
    table = _load_toml(path).get("tool", {}).get("qcore", {})
    layer: dict[str, tuple[Any, str]] = {}
    for key, toml_key in _PYPROJECT_KEYS.items():
        if toml_key not in table:
            continue
        value = table[toml_key]
        where = f"{path} [tool.qcore] {toml_key}"
        if key == "autoload":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
        elif not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{where} must be a list of plugin names, got {value!r}")
        else:
            value = tuple(value)
        layer[key] = (value, where)
    return layer


def api_layer(settings: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """The keys a ``configure_plugins`` call sets, validated."""
    layer: dict[str, tuple[Any, str]] = {}
    for key, value in settings.items():
        where = f"configure_plugins({_API_KEYS[key]}=...)"
        if key == "autoload":
            if not isinstance(value, bool):
                raise ConfigError(f"{where} takes True or False, got {value!r}")
        elif key == "plugins" and value is None:
            pass  # explicitly: no allow-list
        elif isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} takes a list of plugin names, got {value!r}")
        else:
            value = tuple(value)
        layer[key] = (value, where)
    return layer


def merge(*layers: Layer) -> PluginSelection:
    """Apply ``layers`` in rising precedence, key by key."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for key, (value, where) in layer.items():
            values[key], sources[key] = value, where
    return PluginSelection(**values, sources=sources)


def current_selection(api_settings: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None,
                      directory: Optional[Path] = None) -> PluginSelection:
    """The selection in force now: ``os.environ``, the cwd's pyproject.toml, then ``api_settings``."""
    return merge(
        env_layer(os.environ if environ is None else environ),
        pyproject_layer(Path.cwd() if directory is None else directory),
        api_layer(api_settings),
    )
