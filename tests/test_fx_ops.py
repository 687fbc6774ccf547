"""FX graph mode op coverage: functional forms, two-input ops, registered custom modules, dynamic functionals.

Each model is quantized with prepare_fx / convert_fx, checked against its
float outputs, and scripted: the TorchScript model must give the eager
converted model's outputs exactly.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

import qcore
import qcore.fx as qfx
import qcore.nn.quantized as nnq
from qcore.fx import FloatFallbackWarning
from qcore.fx.quantized_ops import QuantizedMatmul

torch.set_num_threads(1)


def scripted_equal(model, *inputs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(model)
    return torch.equal(scripted(*inputs), model(*inputs))


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 2, 3, 3) * 0.3)
        self.b = nn.Parameter(torch.zeros(4))
        self.gamma = nn.Parameter(torch.ones(8))
        self.ln = nn.LayerNorm(8)
        self.hardswish = nn.Hardswish()

    def forward(self, x):
        y = F.hardswish(F.conv2d(x, self.w, self.b, padding=1, groups=2))
        y = F.relu(F.conv2d(y, self.w, None, 1, 1, 1, 2))
        z = self.hardswish(self.ln(F.layer_norm(y, (8,), self.gamma, None)))
        a = z.flatten(0, 1)
        return torch.bmm(a, a.transpose(1, 2)).mean(0) + torch.matmul(a, a).mean(0) + F.avg_pool2d(z, 2).sum()


def test_functional_forms_are_quantized_like_their_modules():
    torch.manual_seed(0)
    model = Functional().eval()
    data = [torch.randn(3, 4, 8, 8) for _ in range(3)]
    with qcore.backend("reference"):
        prepared = qfx.prepare_fx(model, {"": qcore.default_qconfig}, (data[0],))
        record = prepared.meta["qcore_fx"]
        roles = {r.name: (r.quant_type, r.role) for r in record.nodes.values()}
        assert roles["conv2d"] == ("static", "weighted_function") and roles["relu"] == ("static", "weighted_function")
        assert record.nodes["relu"].pattern_nodes == ("conv2d_1", "relu")  # F.conv2d + F.relu fused
        for name in ("hardswish", "layer_norm", "bmm"):
            assert roles[name] == ("static", "general"), name
        assert roles["avg_pool2d"] == ("static", "shared")  # pools the QTensor on its input's grid, as torch.ao
        assert roles["matmul"] == ("static", "binary") and roles["ln"] == ("static", "module")
        for batch in data:
            prepared(batch)
        quantized = qfx.convert_fx(prepared)
    modules = dict(quantized.named_modules())
    # both F.conv2d calls become quantized Conv2d modules; the fused one's relu runs on its QTensor output
    assert sum(isinstance(m, nnq.Conv2d) for m in modules.values()) == 2
    assert isinstance(modules["ln"], nnq.LayerNorm) and isinstance(modules["hardswish"], nnq.Hardswish)
    assert sum(isinstance(m, QuantizedMatmul) for m in modules.values()) == 1
    for batch in data:
        expected = model(batch)
        assert (quantized(batch) - expected).abs().max() <= 0.02 * expected.abs().max()
    assert scripted_equal(quantized, data[0])


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.lstm = nn.LSTM(6, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        y, (h, _) = self.lstm(self.fc(x))
        return self.out(y) + h.sum()


def test_registered_custom_modules_apply_without_config():
    torch.manual_seed(0)
    model = Recurrent().eval()
    data = [torch.randn(7, 3, 4) for _ in range(2)]
    with qcore.backend("reference"):
        prepared = qfx.prepare_fx(model, {"": qcore.default_qconfig}, (data[0],))
        assert isinstance(prepared.lstm, qcore.nn.quantizable.LSTM)
        assert prepared.meta["qcore_fx"].nodes["lstm"].output_kind == "none"  # it observes its own outputs
        for batch in data:
            prepared(batch)
        quantized = qfx.convert_fx(prepared)
    assert isinstance(quantized.lstm, nnq.LSTM)
    for batch in data:
        assert (quantized(batch) - model(batch)).abs().max() < 0.05
    assert scripted_equal(quantized, data[0])


class Embedded(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.fc = nn.Linear(6, 3)
        self.emb = nn.EmbeddingBag(10, 4)

    def forward(self, idx, x):
        return self.fc(F.relu(F.linear(x + self.emb(idx), self.w)))


def test_dynamic_functional_linear_and_weight_only_embedding():
    torch.manual_seed(0)
    model = Embedded().eval()
    idx, x = torch.randint(0, 10, (5, 3)), torch.randn(5, 4)
    mapping = qcore.QConfigMapping().set_global(qcore.default_dynamic_qconfig).set_object_type(
        nn.EmbeddingBag, qcore.float_qparams_weight_only_qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FloatFallbackWarning)
        prepared = qfx.prepare_fx(model, mapping, (idx, x))
    nodes = prepared.meta["qcore_fx"].nodes
    assert (nodes["emb"].quant_type, nodes["linear"].quant_type, nodes["fc"].quant_type) == (
        "weight_only", "dynamic", "dynamic")
    quantized = qfx.convert_fx(prepared)
    assert isinstance(quantized.linear, nnq.dynamic.Linear) and isinstance(quantized.fc, nnq.dynamic.Linear)
    assert isinstance(quantized.emb, nnq.EmbeddingBag)
    assert (quantized(idx, x) - model(idx, x)).abs().max() < 0.1
    assert scripted_equal(quantized, idx, x)


def test_a_computed_weight_cannot_be_quantized_and_says_so():
    class Computed(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 4))

        def forward(self, x):
            return F.linear(x, self.w * 2)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prepared = qfx.prepare_fx(Computed().eval(), {"": qcore.default_qconfig}, torch.randn(2, 4),
                                  backend_config="reference")
    messages = [str(w.message) for w in caught if issubclass(w.category, FloatFallbackWarning)]
    assert any("'linear' (F.linear)" in m and "computed in the graph" in m for m in messages)
    assert not prepared.meta["qcore_fx"].nodes["linear"].quantized


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x) * 2


class ObservedScaled(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return self.linear(x) * 2

    @classmethod
    def from_float(cls, module):
        observed = cls(module.linear)
        observed.qconfig = module.qconfig
        return observed


class DynamicScaled(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return self.linear(x) * 2

    @classmethod
    def from_observed(cls, observed):
        assert not hasattr(observed, "activation_post_process")
        observed.linear.qconfig = observed.qconfig
        return cls(nnq.dynamic.Linear.from_float(observed.linear))


def test_dynamic_custom_modules_get_no_observers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), Scaled()).eval()
    prepare_config = qfx.PrepareCustomConfig().set_float_to_observed_mapping(Scaled, ObservedScaled, "dynamic")
    convert_config = {"observed_to_quantized_custom_module_class": {"dynamic": {ObservedScaled: DynamicScaled}}}
    prepared = qfx.prepare_fx(model, {"": qcore.default_dynamic_qconfig}, torch.randn(2, 4),
                              prepare_custom_config=prepare_config)
    assert isinstance(prepared.get_submodule("1"), ObservedScaled) and not prepared.meta["qcore_fx"].observers
    quantized = qfx.convert_fx(prepared, convert_custom_config=convert_config)
    assert isinstance(quantized.get_submodule("1"), DynamicScaled)
    x = torch.randn(3, 4)
    assert (quantized(x) - model(x)).abs().max() < 0.05


class Reused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.fc(self.fc(x))) + self.sigmoid(x)


def test_a_module_called_twice_is_one_quantized_module_with_one_output_observer():
    torch.manual_seed(0)
    model = Reused().eval()
    x = torch.randn(3, 4)
    with qcore.backend("reference"):
        prepared = qfx.prepare_fx(model, {"": qcore.default_qconfig}, x)
        nodes = prepared.meta["qcore_fx"].nodes
        assert nodes["fc"].output_observer == nodes["fc_1"].output_observer
        prepared(x)
        quantized = qfx.convert_fx(prepared)
        dynamic = qfx.convert_fx(qfx.prepare_fx(model, {"": qcore.default_dynamic_qconfig}, x))
    assert isinstance(quantized.fc, nnq.Linear) and isinstance(dynamic.fc, nnq.dynamic.Linear)
    assert (quantized(x) - model(x)).abs().max() < 0.02 and (dynamic(x) - model(x)).abs().max() < 0.02


class FunctionalConvs(nn.Module):
    """F.conv1d and F.conv3d with weights held as parameters, as item 3 of the FX issue lists them."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 2, 3) * 0.3)
        self.w3 = nn.Parameter(torch.randn(2, 2, 3, 3, 3) * 0.3)
        self.b3 = nn.Parameter(torch.zeros(2))

    def forward(self, x1, x3):
        return F.relu(F.conv1d(x1, self.w1, padding=1)), F.conv3d(x3, self.w3, self.b3, padding=1)


def test_functional_conv1d_and_conv3d_become_quantized_convs():
    torch.manual_seed(0)
    model = FunctionalConvs().eval()
    data = [(torch.randn(2, 2, 9), torch.randn(1, 2, 4, 4, 4)) for _ in range(3)]
    with qcore.backend("reference"):
        prepared = qfx.prepare_fx(model, {"": qcore.default_qconfig}, data[0])
        for batch in data:
            prepared(*batch)
        quantized = qfx.convert_fx(prepared)
    convs = [m for m in quantized.modules() if isinstance(m, (nnq.Conv1d, nnq.Conv3d))]
    # F.conv1d + F.relu is one pattern; as for F.conv2d, its relu runs exactly on the quantized conv output
    assert prepared.meta["qcore_fx"].nodes["relu"].pattern_nodes == ("conv1d", "relu")
    assert sorted(type(m).__name__ for m in convs) == ["Conv1d", "Conv3d"]
    steps = {m.weight().dim(): float(m.scale) for m in convs}  # output step of each conv, by weight rank
    for batch in data:
        for out, ref, rank in zip(quantized(*batch), model(*batch), (3, 5)):
            # within the output rounding plus the input and weight rounding carried through the conv
            assert (out - ref).abs().max() <= 3 * steps[rank], rank
