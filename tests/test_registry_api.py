"""The registry API in-process: the core plugin, runtime plugins, class lookups, dispatch order, rebuilds."""

from __future__ import annotations

import pytest
import torch.nn as nn

import qcore.registry as R
from qcore.errors import ConfigError, PluginError
from qcore.spec import hookimpl


@pytest.fixture(autouse=True)
def core_only():
    R.reset()
    R.configure_plugins(plugins=[])  # whatever is installed, only the core loads
    yield
    R.reset()


class Lowering:
    """A plugin that lowers Linear modules for its backend and registers an observer."""

    class LoweredLinear(nn.Module):
        pass

    class TinyObserver(nn.Module):
        pass

    @hookimpl
    def qcore_lower_module(self, backend, module):
        if backend == "lowering" and isinstance(module, nn.Linear):
            return self.LoweredLinear()
        return None

    @hookimpl
    def qcore_register_observers(self, registry):
        registry.add("tiny", self.TinyObserver)


class CoreDefaultLast:
    """Stands in for the core's trylast default: answers only when nobody else does."""

    @hookimpl(trylast=True)
    def qcore_lower_module(self, backend, module):
        return "default"


def test_the_core_is_always_listed_and_loaded():
    plugins = R.list_plugins()
    assert plugins[0].name == "core" and plugins[0].distribution == "qcore" and plugins[0].status == "loaded"
    assert all(p.status == "blocked" for p in plugins[1:])  # installed plugins, deselected
    assert R.get_registry().plugins == tuple(plugins)


def test_core_classes_are_registered_under_their_names():
    from qcore.fake_quant import CORE_FAKE_QUANTIZERS
    from qcore.observers import CORE_OBSERVERS, MinMaxObserver

    registry = R.get_registry()
    assert registry.lookup_class("minmax") is MinMaxObserver
    assert registry.name_of_class(MinMaxObserver) == "minmax"
    for name, cls in {**CORE_OBSERVERS, **CORE_FAKE_QUANTIZERS}.items():
        assert registry.lookup_class(name) is cls
        assert registry.observers.get(name, registry.fake_quantizers.get(name)) is cls
    assert registry.name_of_class(nn.Linear) is None


def test_serialisation_helpers_use_the_registry():
    from qcore.observers import MinMaxObserver
    from qcore.serialize_values import class_name, resolve_class

    assert class_name(MinMaxObserver) == "minmax" and resolve_class("minmax") is MinMaxObserver
    assert class_name(nn.Linear) == "torch.nn.modules.linear:Linear"


def test_unknown_class_name_lists_what_is_available():
    with pytest.raises(ConfigError) as info:
        R.get_registry().lookup_class("percentile")
    message = str(info.value)
    assert "'percentile'" in message and "observers: minmax" in message and "fake-quantizers: fake_quantize" in message


def test_runtime_plugin_adds_entries_and_dispatch_answers():
    plugin = Lowering()
    R.register_plugin(plugin, "lowering")
    registry = R.get_registry()
    assert registry.lookup_class("tiny") is Lowering.TinyObserver
    assert registry.observers.entry("tiny").plugin == "lowering"
    info = [p for p in R.list_plugins() if p.name == "lowering"][0]
    assert info.status == "loaded" and info.distribution == "(registered at runtime)"
    assert info.hooks == ("qcore_lower_module", "qcore_register_observers")
    lowered = registry.hook.qcore_lower_module(backend="lowering", module=nn.Linear(2, 2))
    assert isinstance(lowered, Lowering.LoweredLinear)
    assert registry.hook.qcore_lower_module(backend="reference", module=nn.Linear(2, 2)) is None
    assert R.get_plugin("lowering") is plugin
    R.unregister_plugin("lowering")
    assert "tiny" not in R.get_registry().observers


def test_trylast_default_answers_only_after_the_backend_plugins():
    R.register_plugin(CoreDefaultLast(), "default_last")
    R.register_plugin(Lowering(), "lowering")
    hook = R.get_registry().hook
    assert isinstance(hook.qcore_lower_module(backend="lowering", module=nn.Linear(2, 2)), Lowering.LoweredLinear)
    assert hook.qcore_lower_module(backend="reference", module=nn.Linear(2, 2)) == "default"


def test_runtime_plugins_are_validated_and_named_uniquely():
    class Wrong:
        @hookimpl
        def qcore_register_observers(self, registry, extra):
            pass

    class Unknown:
        @hookimpl
        def qcore_no_such_hook(self):
            pass

    class WrapperRegistration:
        @hookimpl(wrapper=True)
        def qcore_register_observers(self, registry):
            yield

    with pytest.raises(PluginError, match="extra"):
        R.register_plugin(Wrong(), "wrong")
    with pytest.raises(PluginError, match="qcore_no_such_hook"):
        R.register_plugin(Unknown(), "unknown")
    with pytest.raises(PluginError, match="cannot be a wrapper"):
        R.register_plugin(WrapperRegistration(), "wrapper")
    with pytest.raises(PluginError, match="'core' is taken"):
        R.register_plugin(Lowering(), "core")
    with pytest.raises(PluginError, match="was not added with register_plugin"):
        R.unregister_plugin("core")
    assert [p.name for p in R.list_plugins() if p.status == "loaded"] == ["core"]


def test_configure_plugins_rebuilds_the_registry():
    first = R.get_registry()
    assert R.get_registry() is first
    R.configure_plugins(plugins=[])
    assert R.get_registry() is not first


def test_get_plugin_errors():
    assert R.get_plugin("core").__name__ == "qcore.registry.builtin"
    with pytest.raises(PluginError, match="no plugin named 'nosuch' is installed; installed plugins: core"):
        R.get_plugin("nosuch")


def test_plugin_info_status_is_validated():
    with pytest.raises(ValueError):
        R.PluginInfo("x", "d", "1", (), "weird")
    info = R.PluginInfo("x", "d", "1", ["qcore_a"], "failed", "boom", RuntimeError("boom"))
    assert info.hooks == ("qcore_a",) and info == R.PluginInfo("x", "d", "1", ("qcore_a",), "failed", "boom")
    assert info.describe() == "x (d 1): failed: boom"
