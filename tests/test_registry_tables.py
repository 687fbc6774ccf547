"""The registry objects plugins fill: validation, conflicts, attribution, lookups."""

from __future__ import annotations

import pytest
import torch.nn as nn

from qcore.backend_config import BackendDescription
from qcore.errors import ConfigError, PluginConflictError, PluginError
from qcore.registry.tables import (
    BackendRegistry,
    ClassRegistry,
    CustomModuleRegistry,
    CustomModuleSwap,
    FusionPatternRegistry,
    QuantizedModuleRegistry,
)


class ObsA(nn.Module):
    pass


class ObsB(nn.Module):
    pass


def _backend(name, aliases=()):
    return BackendDescription(name=name, aliases=aliases, summary="s", default_qconfig=None, default_qat_qconfig=None)


def test_entries_record_the_adding_plugin_and_reverse_lookup():
    table = ClassRegistry("observer")
    with table.open_for("core"):
        table.add("a", ObsA)
        table.add("a_alias", ObsA)
    with table.open_for("extra"):
        table.add("b", ObsB)
    assert table.get("a") is ObsA and "b" in table and len(table) == 3
    assert table.entry("b").plugin == "extra" and table.entry("a").plugin == "core"
    assert table.name_of(ObsA) == "a"  # the first name wins
    assert table.name_of(nn.Linear) is None
    assert table.names() == ["a", "a_alias", "b"]
    assert [e.key for e in table.entries()] == ["a", "a_alias", "b"]


def test_clash_between_plugins_names_both_and_the_fix():
    table = ClassRegistry("observer")
    with table.open_for("core"):
        table.add("a", ObsA)
    with table.open_for("extra"), pytest.raises(PluginConflictError) as info:
        table.add("a", ObsB)
    message = str(info.value)
    assert "'core'" in message and "'extra'" in message and "QCORE_DISABLED_PLUGINS=extra" in message
    assert table.get("a") is ObsA


def test_same_plugin_adding_twice():
    table = ClassRegistry("fake-quantizer")
    with table.open_for("p"), pytest.raises(PluginConflictError, match="plugin 'p' registers the fake-quantizer 'a' twice"):
        table.add("a", ObsA)
        table.add("a", ObsB)


def test_add_outside_a_hook_is_refused_with_guidance():
    with pytest.raises(PluginError, match="register_plugin"):
        ClassRegistry("observer").add("a", ObsA)


@pytest.mark.parametrize("name, cls, match", [
    ("", ObsA, "non-empty"),
    ("mod:attr", ObsA, "without ':'"),
    (3, ObsA, "non-empty string"),
    ("ok", ObsA(), "must be a class"),
])
def test_class_registry_validates(name, cls, match):
    table = ClassRegistry("observer")
    with table.open_for("p"), pytest.raises(ConfigError, match=match):
        table.add(name, cls)


def test_discarding_a_plugin_removes_its_entries():
    table = ClassRegistry("observer")
    with table.open_for("core"):
        table.add("a", ObsA)
    with table.open_for("bad"):
        table.add("b", ObsB)
    table._discard_plugin("bad")
    assert "b" not in table and table.name_of(ObsB) is None and table.name_of(ObsA) == "a"


def test_backends_by_name_and_alias():
    table = BackendRegistry()
    with table.open_for("fbgemm"):
        table.add(_backend("fbgemm", ("x86",)))
    assert table.get("x86") is table.get("fbgemm")
    assert table.names() == ["fbgemm"] and len(table.descriptions()) == 1
    with table.open_for("other"), pytest.raises(PluginConflictError, match="name 'x86'.*'fbgemm' and 'other'"):
        table.add(_backend("x86new", ("x86",)))
    assert "x86new" not in table  # nothing of a clashing description is kept
    with table.open_for("p"), pytest.raises(ConfigError, match="BackendDescription"):
        table.add("fbgemm")


def test_fusion_patterns():
    def fuse(is_qat, *modules):
        return nn.Sequential(*modules)

    table = FusionPatternRegistry()
    with table.open_for("core"):
        table.add((nn.Conv2d, nn.ReLU), fuse)
        table.add((nn.Conv2d, nn.ReLU), fuse, qat=True)
        with pytest.raises(PluginConflictError, match=r"\(Conv2d, ReLU\)"):
            table.add((nn.Conv2d, nn.ReLU), fuse)
        for bad, match in [((nn.Conv2d,), "at least two"), ([nn.Conv2d, nn.ReLU], "tuple"), ((nn.Conv2d, "relu"), "class")]:
            with pytest.raises(ConfigError, match=match):
                table.add(bad, fuse)
        with pytest.raises(ConfigError, match="callable"):
            table.add((nn.Linear, nn.ReLU), "fuse")
    assert table.get((nn.Conv2d, nn.ReLU)) is fuse and table.get((nn.Conv2d, nn.ReLU), qat=True) is fuse
    assert table.get((nn.Linear, nn.ReLU)) is None
    assert table.patterns() == [(nn.Conv2d, nn.ReLU)] == table.patterns(qat=True)


def test_custom_modules():
    class Observed(nn.Module):
        pass

    class Quantized(nn.Module):
        pass

    table = CustomModuleRegistry()
    with table.open_for("p"):
        table.add(nn.LSTM, Observed, Quantized)
        table.add(nn.LSTM, Observed, Quantized, quant_type="dynamic")
        with pytest.raises(ConfigError, match="quant_type must be one of static, dynamic, weight_only, qat"):
            table.add(nn.GRU, Observed, Quantized, quant_type="float")
        with pytest.raises(ConfigError, match="observed_cls must be a class"):
            table.add(nn.GRU, "Observed", Quantized)
    assert table.get(nn.LSTM) == CustomModuleSwap(nn.LSTM, Observed, Quantized, "static")
    assert table.get(nn.LSTM, quant_type="dynamic").quant_type == "dynamic"
    assert table.get(nn.GRU) is None


def test_quantized_modules():
    class QLinear(nn.Module):
        pass

    class DynamicQLinear(nn.Module):
        pass

    table = QuantizedModuleRegistry()
    with table.open_for("core"):
        table.add(nn.Linear, QLinear, "static")
        table.add(nn.Linear, DynamicQLinear, "dynamic")
    with table.open_for("other"), pytest.raises(PluginConflictError, match=r"Linear \(static\)"):
        table.add(nn.Linear, DynamicQLinear, "static")
    assert table.get(nn.Linear) is QLinear and table.get(nn.Linear, quant_type="dynamic") is DynamicQLinear
    assert table.mapping("static") == {nn.Linear: QLinear} and table.mapping("qat") == {}
    with pytest.raises(ConfigError, match="quant_type"):
        table.mapping("int8")
