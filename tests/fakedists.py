"""Throwaway installed distributions for plugin tests, and a way to run Python against them.

:func:`write_dist` puts a real ``NAME-VERSION.dist-info`` (METADATA and an
``entry_points.txt`` with a ``[qcore.plugins]`` section) and the plugin's
modules into a directory; a Python process with that directory on
``PYTHONPATH`` discovers them through importlib metadata exactly like
installed plugins. :func:`run_python` starts such a process with the qcore
environment variables cleared and a working directory free of any
pyproject.toml, so each scenario starts from fresh global state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

QCORE_ENV_VARS = ("QCORE_PLUGINS", "QCORE_DISABLED_PLUGINS", "QCORE_DISABLE_PLUGIN_AUTOLOAD", "QCORE_BACKEND")


def write_dist(
    root: Path,
    name: str,
    plugins: Mapping[str, str],
    modules: Mapping[str, str],
    version: str = "1.0",
) -> Path:
    """Write distribution ``name`` into ``root``: entry points ``plugins`` (ep name -> object ref) and ``modules``.

    ``modules`` maps dotted module names to their source (dedented); packages
    along the way get an empty ``__init__.py``. Returns the dist-info folder.
    """
    root = Path(root)
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = ["[qcore.plugins]", *(f"{ep} = {ref}" for ep, ref in plugins.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        parts = module.split(".")
        for depth in range(1, len(parts)):
            package = root.joinpath(*parts[:depth])
            package.mkdir(exist_ok=True)
            (package / "__init__.py").touch()
        root.joinpath(*parts[:-1], parts[-1] + ".py").write_text(textwrap.dedent(source))
    return dist_info


def plugin_dist(root: Path, name: str, source: str, version: str = "1.0") -> Path:
    """One plugin: distribution ``qcore-test-NAME``, entry point ``NAME`` -> module ``qcore_test_NAME``."""
    return write_dist(root, f"qcore-test-{name}", {name: f"qcore_test_{name}"}, {f"qcore_test_{name}": source}, version)


def clean_env(paths: Sequence[Path] = (), env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """``os.environ`` without qcore's variables, ``paths`` first on PYTHONPATH, then ``env`` on top."""
    result = {k: v for k, v in os.environ.items() if k not in QCORE_ENV_VARS}
    search = [str(p) for p in paths] + [p for p in result.get("PYTHONPATH", "").split(os.pathsep) if p]
    if search:
        result["PYTHONPATH"] = os.pathsep.join(search)
    result.update(env or {})
    return result


def run_python(
    code: str,
    cwd: Path,
    paths: Sequence[Path] = (),
    env: Optional[Mapping[str, str]] = None,
    args: Sequence[str] = (),
    python_flags: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run ``python -c code`` in ``cwd`` with ``paths`` importable; returns the finished process."""
    command = [sys.executable, *python_flags, "-c", textwrap.dedent(code), *args]
    return subprocess.run(
        command, cwd=cwd, env=clean_env(paths, env), capture_output=True, text=True, timeout=timeout
    )


def run_json(code: str, cwd: Path, paths: Sequence[Path] = (), env: Optional[Mapping[str, str]] = None,
             args: Sequence[str] = ()) -> Any:
    """Run ``code``, which must print one JSON document as its last line of output; return it decoded."""
    done = run_python(code, cwd, paths, env, args)
    if done.returncode != 0 or not done.stdout.strip():
        raise AssertionError(f"subprocess failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- plugin sources shared by the tests ------------------------------------------

GOOD = """
    import torch
    from qcore.spec import hookimpl
    from qcore.observers import MinMaxObserver
    from qcore.backend_config import BackendDescription


    class MyObserver(MinMaxObserver):
        '''A MinMaxObserver registered by a third-party plugin.'''


    def my_kernel(*args):
        return "good-kernel"


    @hookimpl
    def qcore_register_observers(registry):
        registry.add("myobs", MyObserver)


    @hookimpl
    def qcore_register_backends(registry):
        from qcore import qconfig
        registry.add(BackendDescription(
            name="goodbe", aliases=("goodalias",), summary="test backend of the good plugin",
            default_qconfig=qconfig.default_qconfig, default_qat_qconfig=qconfig.default_qat_qconfig,
            priority=10_000))
        registry.add(BackendDescription(
            name="nowhere", summary="a backend that cannot run here",
            default_qconfig=qconfig.default_qconfig, default_qat_qconfig=qconfig.default_qat_qconfig,
            priority=20_000, unavailable_reason=lambda: "needs hardware this machine lacks"))


    @hookimpl
    def qcore_select_kernel(backend, op, params):
        return my_kernel if backend == "goodbe" and op == "linear" else None
"""

BROKEN_IMPORT = """
    import qcore_module_that_does_not_exist
"""

UNAVAILABLE = """
    from qcore.errors import PluginUnavailable
    raise PluginUnavailable("no widget accelerator on this machine")
"""

MISMATCHED_ARGS = """
    from qcore.spec import hookimpl

    @hookimpl
    def qcore_register_observers(registry, colour):
        pass
"""

UNKNOWN_HOOK = """
    from qcore.spec import hookimpl

    @hookimpl
    def qcore_register_observer(registry):  # typo: the spec is qcore_register_observers
        pass
"""

RAISING_HOOK = """
    from qcore.spec import hookimpl
    from qcore.observers import MinMaxObserver

    class Half(MinMaxObserver):
        pass

    @hookimpl
    def qcore_register_observers(registry):
        registry.add("half_registered", Half)
        raise RuntimeError("registration went wrong")
"""

LATE_UNAVAILABLE = """
    from qcore.errors import PluginUnavailable
    from qcore.spec import hookimpl

    @hookimpl
    def qcore_register_backends(registry):
        raise PluginUnavailable("driver found at import, but no device answered")
"""


def observer_plugin(observer_name: str) -> str:
    """Source of a plugin registering a MinMaxObserver subclass as ``observer_name``."""
    return f"""
    from qcore.spec import hookimpl
    from qcore.observers import MinMaxObserver

    class Registered(MinMaxObserver):
        pass

    @hookimpl
    def qcore_register_observers(registry):
        registry.add({observer_name!r}, Registered)
"""
