"""Backend selection: the machine's default by priority and availability, aliases, overrides, errors.

In-process: installed entry-point plugins are deselected (``plugins=[]``) and
test backends come from a plugin object added with ``register_plugin``.
"""

from __future__ import annotations

import importlib
import platform

import pytest

import qcore.registry as R
from qcore.backend_config import BackendDescription
from qcore.errors import ConfigError, PluginConflictError
from qcore.spec import hookimpl

# The module behind qcore.set_backend / qcore.backend(...).
qb = importlib.import_module("qcore.backend_selection")


def _description(name, priority, aliases=(), reason=None):
    from qcore import qconfig

    return BackendDescription(
        name=name, aliases=aliases, summary=f"test backend {name}", priority=priority,
        default_qconfig=qconfig.default_qconfig, default_qat_qconfig=qconfig.default_qat_qconfig,
        unavailable_reason=lambda: reason,
    )


class TestBackends:
    """Two test backends: 'fast' (alias 'speedy') and a higher-priority one that cannot run here."""

    @hookimpl
    def qcore_register_backends(self, registry):
        registry.add(_description("fast", 50, aliases=("speedy",)))
        registry.add(_description("faster", 60, reason="no accelerator chip"))


class ClashingBackend:
    @hookimpl
    def qcore_register_backends(self, registry):
        registry.add(_description("other", 10, aliases=("speedy",)))


@pytest.fixture
def core_only(monkeypatch):
    monkeypatch.delenv("QCORE_BACKEND", raising=False)
    R.reset()
    qb.set_backend(None)
    R.configure_plugins(plugins=[])
    yield
    qb.set_backend(None)
    R.reset()


@pytest.fixture
def test_backends(core_only):
    R.register_plugin(TestBackends(), "test_backends")


def test_reference_is_the_default_when_nothing_else_is_installed(core_only):
    assert qb.list_backends() == ["reference"]
    assert qb.get_backend() == "reference"
    description = qb.get_backend_description()
    assert description.name == "reference" and "plain PyTorch" in description.summary
    assert description.unavailable_reason() is None
    assert R.get_registry().backends.entry("reference").plugin == "core"


def test_reference_defaults_come_from_qcore_qconfig(core_only):
    from qcore import qconfig

    description = qb.get_backend_description("reference")
    assert description.default_qconfig is qconfig.default_qconfig
    assert description.default_qat_qconfig is qconfig.default_qat_qconfig
    assert description.default_dynamic_qconfig is qconfig.default_dynamic_qconfig
    assert qconfig.get_default_qconfig() is qconfig.default_qconfig


def test_default_is_the_highest_priority_available_backend(test_backends):
    assert qb.list_backends() == ["faster", "fast", "reference"]
    assert qb.available_backends() == ["fast", "reference"]
    assert qb.get_backend() == "fast"


def test_aliases_resolve_to_the_backend(test_backends):
    assert qb.get_backend_description("speedy").name == "fast"
    qb.set_backend("speedy")
    assert qb.get_backend() == "fast"


def test_context_manager_restores_the_previous_backend(test_backends):
    qb.set_backend("reference")
    with qb.backend("speedy") as active:
        assert active == "fast" and qb.get_backend() == "fast"
        with qb.backend("reference"):
            assert qb.get_backend() == "reference"
        assert qb.get_backend() == "fast"
    assert qb.get_backend() == "reference"
    with pytest.raises(RuntimeError):
        with qb.backend("fast"):
            raise RuntimeError("boom")
    assert qb.get_backend() == "reference"
    qb.set_backend(None)
    assert qb.get_backend() == "fast"


def test_unknown_backend_lists_the_installed_ones(test_backends):
    with pytest.raises(ConfigError) as info:
        qb.set_backend("nope")
    message = str(info.value)
    assert "set_backend('nope')" in message and "unknown backend 'nope'" in message
    assert "fast, speedy" in message and "faster" in message and "reference" in message
    with pytest.raises(ConfigError, match="unknown backend"):
        qb.get_backend_description("nope")
    with pytest.raises(ConfigError, match="by a string"):
        qb.set_backend(3)


def test_unavailable_backend_cannot_be_selected(test_backends):
    with pytest.raises(ConfigError, match="no accelerator chip") as info:
        qb.set_backend("faster")
    assert "fast" in str(info.value)
    assert qb.get_backend() == "fast"


def test_environment_variable(test_backends, monkeypatch):
    monkeypatch.setenv("QCORE_BACKEND", "reference")
    assert qb.get_backend() == "reference"
    qb.set_backend("fast")
    assert qb.get_backend() == "fast"  # the API wins over the environment
    qb.set_backend(None)
    monkeypatch.setenv("QCORE_BACKEND", "bogus")
    with pytest.raises(ConfigError, match="QCORE_BACKEND=bogus.*unknown backend 'bogus'"):
        qb.get_backend()
    monkeypatch.setenv("QCORE_BACKEND", "faster")
    with pytest.raises(ConfigError, match="QCORE_BACKEND=faster.*no accelerator chip"):
        qb.get_backend()


def test_backend_names_clash_across_plugins(test_backends):
    R.register_plugin(ClashingBackend(), "clashing")
    with pytest.raises(PluginConflictError) as info:
        qb.get_backend()
    message = str(info.value)
    assert "'speedy'" in message and "'test_backends'" in message and "'clashing'" in message


def test_bundled_fbgemm_answers_to_x86():
    pytest.importorskip("qcore_fbgemm")
    R.reset()
    try:
        R.configure_plugins(plugins=["fbgemm"])
        if "fbgemm" not in [p.name for p in R.list_plugins() if p.status == "loaded"]:
            pytest.skip("the fbgemm plugin does not run on this machine")
        assert qb.get_backend_description("x86") is qb.get_backend_description("fbgemm")
        if platform.machine().lower() in ("x86_64", "amd64"):
            assert qb.get_backend() == "fbgemm"
    finally:
        R.reset()
