"""The active backend: which registered backend convert lowers to and whose defaults qconfigs use.

The default is the best backend installed for this machine: among the
registered backends whose ``unavailable_reason()`` is None, the one with the
highest priority (``reference``, always present, has the lowest). The
``QCORE_BACKEND`` environment variable, :func:`set_backend` and the
:func:`backend` context manager override it. Aliases resolve to their
backend (``x86`` and ``fbgemm`` are the fbgemm plugin's one backend).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator, Optional

from qcore.errors import ConfigError

ENV_VAR = "QCORE_BACKEND"

_lock = threading.Lock()
_selected: Optional[str] = None  # canonical name set by set_backend / backend()
_default_cache: tuple[Any, str] = (None, "")  # (registry it was computed for, name)
_env_cache: tuple[Any, str, str] = (None, "", "")  # (registry, QCORE_BACKEND value, canonical name)


def _registry() -> Any:
    from qcore.registry import get_registry

    return get_registry()


def _resolve(name: str, where: str) -> Any:
    """The description registered under ``name``, the error saying where the name came from."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: a backend is named by a string, got {name!r}")
    try:
        return _registry().backend_description(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _check_available(description: Any, where: str) -> None:
    reason = description.unavailable_reason()
    if reason is not None:
        raise ConfigError(
            f"{where}: the backend {description.name!r} cannot run on this machine: {reason}. "
            f"Available backends: {', '.join(available_backends())}"
        )


def available_backends() -> list[str]:
    """Canonical names of the backends that can run here, best first."""
    return [d.name for d in _ranked() if d.unavailable_reason() is None]


def _ranked() -> list[Any]:
    return sorted(_registry().backends.descriptions(), key=lambda d: (-d.priority, d.name))


def default_backend() -> str:
    """The best installed backend for this machine (ignores set_backend and QCORE_BACKEND)."""
    global _default_cache
    registry = _registry()
    cached_for, name = _default_cache
    if cached_for is registry:
        return name
    available = available_backends()
    if not available:
        raise ConfigError("no registered backend can run on this machine; not even 'reference' is registered")
    _default_cache = (registry, available[0])
    return available[0]


def get_backend() -> str:
    """The canonical name of the active backend: set_backend, else QCORE_BACKEND, else the default."""
    selected = _selected
    if selected is not None:
        return _resolve(selected, "the backend set with set_backend").name
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        global _env_cache
        registry = _registry()
        if _env_cache[0] is registry and _env_cache[1] == env:
            return _env_cache[2]
        description = _resolve(env, f"{ENV_VAR}={env}")
        _check_available(description, f"{ENV_VAR}={env}")
        _env_cache = (registry, env, description.name)
        return description.name
    return default_backend()


def set_backend(name: Optional[str]) -> None:
    """Make ``name`` (or an alias of it) the active backend for this process; None goes back to the default.

    Raises ConfigError, listing the installed backends, for an unknown name,
    and naming the reason for a backend that cannot run on this machine.
    """
    global _selected
    if name is None:
        with _lock:
            _selected = None
        return
    description = _resolve(name, f"set_backend({name!r})")
    _check_available(description, f"set_backend({name!r})")
    with _lock:
        _selected = description.name


@contextlib.contextmanager
def backend(name: str) -> Iterator[str]:
    """Use ``name`` as the active backend inside the block; the previous choice is restored after."""
    global _selected
    previous = _selected
    set_backend(name)
    try:
        yield get_backend()
    finally:
        with _lock:
            _selected = previous


def list_backends() -> list[str]:
    """Canonical names of every registered backend, highest priority first (available or not)."""
    return [d.name for d in _ranked()]


def get_backend_description(name: Optional[str] = None) -> Any:
    """The BackendDescription of ``name`` (alias or canonical), or of the active backend when None."""
    if name is None:
        name = get_backend()
    return _resolve(name, f"get_backend_description({name!r})")
