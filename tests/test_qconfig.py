"""QConfig and QConfigMapping: validation, named defaults, dict forms, lookup precedence."""

from __future__ import annotations

import warnings

import pytest
import torch

import qcore
from qcore.errors import ConfigError
from qcore.factory import Factory
from qcore.qconfig_mapping import QConfigMapping, as_qconfig_mapping


def test_qconfig_accepts_classes_factories_and_torch_dtypes():
    qconfig = qcore.QConfig(
        activation=qcore.MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
        weight=qcore.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    act, weight = qconfig.activation(), qconfig.weight()
    assert act.dtype is qcore.uint8 and act.quant_max == 127
    assert weight.qscheme is qcore.per_channel_symmetric
    assert qcore.QConfig(activation=qcore.MinMaxObserver, weight=qcore.MinMaxObserver).activation == Factory(qcore.MinMaxObserver)


def test_qconfig_rejects_instances_with_a_hint():
    with pytest.raises(ConfigError, match=r"MinMaxObserver.with_args\(...\) instead of MinMaxObserver\(\)"):
        qcore.QConfig(activation=qcore.MinMaxObserver(), weight=qcore.default_weight_observer)


@pytest.mark.parametrize(
    "activation, weight, message",
    [
        (qcore.MinMaxObserver.with_args(quant_min=10, quant_max=0), qcore.default_weight_observer, "activation"),
        (qcore.default_observer, qcore.MinMaxObserver.with_args(qscheme=torch.per_channel_symmetric), "weight"),
        (qcore.PerChannelMinMaxObserver, qcore.default_weight_observer, "per-channel"),
    ],
)
def test_invalid_qconfigs_fail_at_construction(activation, weight, message):
    with pytest.raises(ConfigError, match=message):
        qcore.QConfig(activation=activation, weight=weight)


def test_qconfig_dict_round_trip():
    for qconfig in (qcore.default_qconfig, qcore.default_qat_qconfig, qcore.float16_dynamic_qconfig,
                    qcore.get_default_qconfig("fbgemm"), qcore.get_default_qat_qconfig("qnnpack")):
        data = qconfig.to_dict()
        assert qcore.QConfig.from_dict(data) == qconfig


def test_named_defaults_mirror_torch_ao():
    tq = pytest.importorskip("torch.ao.quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pairs = [
            (qcore.default_qconfig, tq.default_qconfig),
            (qcore.default_dynamic_qconfig, tq.default_dynamic_qconfig),
            (qcore.per_channel_dynamic_qconfig, tq.per_channel_dynamic_qconfig),
            (qcore.default_per_channel_qconfig, tq.default_per_channel_qconfig),
            (qcore.get_default_qconfig("fbgemm"), tq.get_default_qconfig("fbgemm")),
            (qcore.get_default_qconfig("x86"), tq.get_default_qconfig("x86")),
            (qcore.get_default_qconfig("qnnpack"), tq.get_default_qconfig("qnnpack")),
        ]
        for ours, theirs in pairs:
            for role in ("activation", "weight"):
                mine, ref = getattr(ours, role)(), getattr(theirs, role)()
                assert type(mine).__name__ == type(ref).__name__, role
                assert mine.quant_min == ref.quant_min and mine.quant_max == ref.quant_max
                assert qcore.dtypes.to_torch_dtype(mine.dtype) == ref.dtype
                assert mine.qscheme.value == str(ref.qscheme).removeprefix("torch.")


def test_qat_defaults_mirror_torch_ao():
    tq = pytest.importorskip("torch.ao.quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for backend in ("fbgemm", "x86", "qnnpack"):
            ours, theirs = qcore.get_default_qat_qconfig(backend), tq.get_default_qat_qconfig(backend)
            for role in ("activation", "weight"):
                mine, ref = getattr(ours, role)(), getattr(theirs, role)()
                assert type(mine).__name__ == type(ref).__name__
                assert (mine.quant_min, mine.quant_max) == (ref.quant_min, ref.quant_max)
                assert type(mine.activation_post_process).__name__ == type(ref.activation_post_process).__name__


def test_old_default_versions_are_refused():
    with pytest.raises(ConfigError, match="one default per backend"):
        qcore.get_default_qconfig("fbgemm", version=1)


def test_unknown_backend_lists_installed():
    with pytest.raises(ConfigError, match="reference"):
        qcore.get_default_qconfig("no_such_backend")


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        self.head = torch.nn.Linear(2, 2)


def test_mapping_precedence_matches_torch_ao_order():
    other = qcore.default_per_channel_qconfig
    mapping = (
        QConfigMapping()
        .set_global(qcore.default_qconfig)
        .set_object_type(torch.nn.Linear, other)
        .set_module_name_regex(r"block\..*", qcore.default_dynamic_qconfig)
        .set_module_name("block.0", None)
        .set_module_name_object_type_order("head", torch.add, 0, qcore.float16_dynamic_qconfig)
    )
    assert mapping.lookup("head", torch.nn.Linear) == (other, "object_type(Linear)")
    assert mapping.qconfig_for("block.1", torch.nn.ReLU) is qcore.default_dynamic_qconfig
    assert mapping.qconfig_for("block.0", torch.nn.Linear) is None
    assert mapping.qconfig_for("block.0.inner", torch.nn.Linear) is None  # a parent's name covers children
    assert mapping.qconfig_for("head", torch.add, 0) is qcore.float16_dynamic_qconfig
    assert mapping.qconfig_for("unknown", torch.nn.Conv2d) is qcore.default_qconfig


def test_mapping_dict_form_round_trip():
    mapping = as_qconfig_mapping({"": qcore.default_qconfig, "module_name": [("head", None)]})
    assert mapping.global_qconfig is qcore.default_qconfig
    assert QConfigMapping.from_dict(mapping.to_dict()) == mapping
    with pytest.raises(ConfigError, match="unknown qconfig_mapping keys"):
        QConfigMapping.from_dict({"globl": qcore.default_qconfig})
    with pytest.raises(ConfigError, match="expected a QConfig or None"):
        QConfigMapping().set_global("default")


def test_default_mapping_mirrors_torch_ao():
    tq = pytest.importorskip("torch.ao.quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tq.get_default_qconfig_mapping("x86")
    ours = qcore.get_default_qconfig_mapping("x86")
    assert set(ours.object_type_qconfigs) == set(theirs.object_type_qconfigs)
    sigmoid = ours.qconfig_for("s", torch.nn.Sigmoid).activation()
    assert float(sigmoid.scale) == 1.0 / 256 and int(sigmoid.zero_point) == 0
    qat = qcore.get_default_qat_qconfig_mapping("qnnpack")
    assert qat.global_qconfig == qcore.get_default_qat_qconfig("qnnpack")
