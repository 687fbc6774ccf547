"""qcore.fx.explain: per node, the qconfig entry that matched, the backend pattern or why it stays float, the observers.

Every answer is checked against what prepare_fx itself does with the same
arguments (its record and its observers), and the caller's model is checked
to come back untouched.
"""

from __future__ import annotations

import copy
import json
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qcore
import qcore.fx as qfx
from qcore import QConfigMapping
from qcore.errors import ConfigError
from qcore.fx import Explanation, FloatFallbackWarning, PrepareCustomConfig, SymbolicTraceError

torch.set_num_threads(1)


class Block(nn.Module):
    """Traced through: its nodes are explained one by one."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv(x))


class Branchy(nn.Module):
    """Not traceable (control flow on a tensor value)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return -x


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = nn.ReLU()
        self.block = Block()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)
        self.head = nn.Linear(10, 10)

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.block(y)
        y = torch.flatten(F.max_pool2d(y, 2), 1)
        y = self.fc2(F.relu(self.fc1(y)))
        return self.head(torch.sigmoid(y))


def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


EXAMPLE = (torch.randn(2, 1, 8, 8),)


def mapping() -> QConfigMapping:
    """Every kind of entry: global, object type, module name (None = keep float)."""
    qconfig = qcore.get_default_qconfig("fbgemm")
    return (QConfigMapping().set_global(qconfig)
            .set_object_type(nn.Linear, qconfig)
            .set_module_name("fc1", qconfig)
            .set_module_name("head", None))


@pytest.fixture(autouse=True)
def fbgemm():
    if "fbgemm" not in qcore.list_backends():
        pytest.skip("the fbgemm plugin is not installed here")
    with qcore.backend("fbgemm"):
        yield


def test_rows_name_the_entry_the_pattern_and_the_observers():
    explanation = qfx.explain(net(), mapping(), EXAMPLE)
    assert isinstance(explanation, Explanation) and explanation.backend == "fbgemm" and not explanation.is_qat
    conv1 = explanation.row("conv1")
    assert (conv1.decision, conv1.role, conv1.qconfig_entry) == ("static", "module", "global")
    assert conv1.target == "ConvReLU2d" and conv1.pattern == "(Conv2d, BatchNorm2d, ReLU)"
    assert [o.split(" ")[0] for o in conv1.observers] == ["input:", "weight:", "output:"]
    assert "HistogramObserver" in conv1.observers[0] and "PerChannelMinMaxObserver" in conv1.observers[1]
    for fused in ("bn1", "relu1"):
        row = explanation.row(fused)
        assert (row.decision, row.fused_into, row.pattern) == ("fused", "conv1", "(Conv2d, BatchNorm2d, ReLU)")
        assert not row.quantized
    assert explanation.row("fc1").qconfig_entry == "module_name('fc1')"
    assert explanation.row("fc1").pattern == "(Linear, ReLU)"  # nn.Linear + F.relu, fused
    assert explanation.row("fc2").qconfig_entry == "object_type(Linear)"
    head = explanation.row("head")
    assert head.decision == "float" and head.qconfig_entry == "module_name('head')"
    assert "qconfig is None" in head.reason and not head.warned
    conv = explanation.row("block.conv")  # found by module name
    assert conv.node == "block_conv" and conv.decision == "static"
    if "onednn" in torch.backends.quantized.supported_engines:  # fbgemm runs conv + add + relu as one kernel
        assert conv.target == "ConvAddReLU2d" and conv.pattern == "(Conv2d, operator.add, ReLU)"
        for fused in ("add", "relu"):
            row = explanation.row(fused)
            assert (row.decision, row.fused_into, row.pattern) == ("fused", "block_conv", conv.pattern)
    else:  # the add + relu in the block are one pattern
        (relu,) = [r for r in explanation.rows if r.group and r.node == r.group[-1] and "add" in r.target]
        assert relu.pattern == "(operator.add, ReLU)" and "output:" in relu.observers[0]
    sigmoid = explanation.row("sigmoid")
    assert sigmoid.pattern == "torch.sigmoid" and "FixedQParamsObserver" in sigmoid.observers[0]
    assert explanation.row("max_pool2d").observers == ("output: shares its input's qparams",)


def test_explain_agrees_with_prepare_fx():
    model = net()
    explanation = qfx.explain(model, mapping(), EXAMPLE)
    prepared = qfx.prepare_fx(model, mapping(), EXAMPLE)
    record = prepared.meta["qcore_fx"]
    modules = dict(prepared.named_modules())
    explained = {r.node: r for r in explanation.rows if r.decision != "fused"}
    assert set(explained) == set(record.nodes)
    for name, node_record in record.nodes.items():
        row = explained[name]
        assert (row.decision, row.role, row.qconfig_entry) == (node_record.quant_type, node_record.role,
                                                               node_record.qconfig_entry)
    observer_names = {re.match(r"\w+: (activation_post_process_\d+)", o).group(1)
                      for r in explanation.rows for o in r.observers if "activation_post_process_" in o}
    assert observer_names == set(record.observers)
    for name in observer_names:
        assert type(modules[name]).__name__ in " ".join(o for r in explanation.rows for o in r.observers)


def test_the_callers_model_is_left_untouched():
    model = net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    children = dict(model.named_modules())
    qfx.explain(model, mapping(), EXAMPLE)
    qfx.explain(model, mapping(), EXAMPLE, is_qat=True)
    assert dict(model.named_modules()) == children and not model.training
    assert all(not hasattr(m, "qconfig") for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_why_a_layer_is_not_quantized():
    model = net()
    qnnpack_qconfig = qcore.get_default_qconfig("qnnpack")  # 8-bit activations: fbgemm runs 7-bit only
    config = PrepareCustomConfig().set_non_traceable_module_names(["fc2"])
    mapping_ = QConfigMapping().set_global(qcore.get_default_qconfig("fbgemm")).set_module_name("fc1", qnnpack_qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FloatFallbackWarning)  # explain reports the fallback instead of warning
        explanation = qfx.explain(model, mapping_, EXAMPLE, prepare_custom_config=config)
    fc1 = explanation.why("fc1")
    assert fc1.startswith("'fc1' (Linear) is not quantized: ") and "[0, 127]" in fc1 and "[0, 255]" in fc1
    assert "prepare_fx warns about it" in fc1 and "module_name('fc1')" in fc1
    assert len(explanation.warnings) == 1 and "'fc1' (Linear)" in explanation.warnings[0]
    assert "non-traceable" in explanation.why("fc2")
    assert "is quantized static (module)" in explanation.why("conv1")
    assert "fused into 'conv1'" in explanation.why("bn1") and "(Conv2d, BatchNorm2d, ReLU)" in explanation.why("bn1")
    block = explanation.why("block")  # traced through: every node it holds
    assert block.startswith("'block' was traced through, so its 3 node(s)")
    if "onednn" in torch.backends.quantized.supported_engines:  # fbgemm runs conv + add + relu as one kernel
        assert "'block.conv' (ConvAddReLU2d) is quantized static (module)" in block
        assert "'relu' (F.relu) is fused into 'block.conv' (ConvAddReLU2d)" in block
    else:
        assert "'block.conv' (Conv2d)" in block and "'relu' (operator.add + F.relu) is quantized static (binary)" in block
    with pytest.raises(ConfigError, match=r"no node or module 'fc3'.*did you mean 'fc1', 'fc2'\?"):
        explanation.why("fc3")


def test_dynamic_qconfigs_quantize_weighted_ops_only():
    mapping_ = QConfigMapping().set_object_type(nn.Linear, qcore.default_dynamic_qconfig)
    explanation = qfx.explain(net(), mapping_, EXAMPLE)
    fc1 = explanation.row("fc1")
    assert fc1.decision == "dynamic" and fc1.qconfig_entry == "object_type(Linear)"
    assert fc1.observers == ("weight: MinMaxObserver, observed at convert", "input: quantized at run time (dynamic)")
    conv1 = explanation.row("conv1")
    assert conv1.decision == "float" and conv1.qconfig_entry == "global" and "qconfig is None" in conv1.reason
    assert {r.node for r in explanation.quantized_rows()} == {"fc1", "fc2", "head"}


def test_qat_explains_prepare_qat_fx():
    model = net().train()
    explanation = qfx.explain(model, qcore.get_default_qat_qconfig_mapping("fbgemm"), EXAMPLE)
    assert explanation.is_qat and model.training
    conv1 = explanation.row("conv1")
    assert conv1.target == "ConvBnReLU2d" and conv1.pattern == "(Conv2d, BatchNorm2d, ReLU)"
    assert "weight: conv1.weight_fake_quant (FusedMovingAvgObsFakeQuantize)" in conv1.observers
    assert "quantization-aware training" in str(explanation)


def test_str_is_an_aligned_table_and_to_dict_is_json():
    explanation = qfx.explain(net(), mapping(), EXAMPLE, backend_config="reference")
    assert explanation.backend == "reference"
    lines = str(explanation).splitlines()
    header, rule, body = lines[1], lines[2], lines[3:-1]
    starts = [m.start() for m in re.finditer(r"-+", rule)]
    assert [m.start() for m in re.finditer(r"\S+", header)] == starts
    assert len(body) == len(explanation.rows)
    for line, row in zip(body, explanation.rows):
        assert line.startswith(row.node + " ")
        assert len(line) > starts[-2]  # the observers column is never empty ("-"); the reason may be
        for start in (s for s in starts[1:] if s < len(line)):
            assert line[start - 1] == " " and line[start] != " "  # every cell starts at its column
    assert re.fullmatch(r"\d+ node\(s\) quantized, 3 fused into them, 1 float", lines[-1])
    data = json.loads(json.dumps(explanation.to_dict()))
    assert data["backend"] == "reference" and len(data["rows"]) == len(explanation.rows)
    assert data["rows"][0]["node"] == "conv1" and data["rows"][0]["pattern"] == "(Conv2d, BatchNorm2d, ReLU)"


def test_tracing_failures_and_bad_arguments_raise_qcore_errors():
    class WithBranchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.branchy = Branchy()

        def forward(self, x):
            return self.branchy(x)

    with pytest.raises(SymbolicTraceError, match="set_non_traceable_module_names"):
        qfx.explain(WithBranchy().eval(), mapping(), torch.randn(2, 10))
    with pytest.raises(ConfigError, match="qconfig_mapping is required"):
        qfx.explain(net(), None, EXAMPLE)
    with pytest.raises(ConfigError, match="expects an nn.Module"):
        qfx.explain(lambda x: x, mapping(), EXAMPLE)
    explanation = qfx.explain(copy.deepcopy(WithBranchy()).eval(), mapping(), torch.randn(2, 10),
                              prepare_custom_config={"non_traceable_module_name": ["branchy"]})
    assert explanation.row("branchy").decision == "float"
