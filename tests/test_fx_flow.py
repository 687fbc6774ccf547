"""FX graph mode: placement from the backend's patterns, conversion, warnings, tracing failures, configs.

Differential checks run torch.ao's prepare_fx / convert_fx on the same
weights and data (skipped where torch.ao or its fbgemm engine is missing).
"""

from __future__ import annotations

import copy
import io
import warnings

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import qcore
import qcore.fx as qfx
import qcore.nn.intrinsic as nni
import qcore.nn.quantized as nnq
import qcore.registry as R
from qcore import QConfigMapping
from qcore.errors import ConfigError
from qcore.fake_quant import FakeQuantizeBase
from qcore.fx import FloatFallbackWarning, PrepareCustomConfig, SymbolicTraceError
from qcore.fx.record import get_record
from qcore.fx.quantized_ops import QuantizedAdd, QuantizedAddReLU, QuantizedAddScalar, QuantizedCat
from qcore.observers import FixedQParamsObserver, ObserverBase
from qcore.qtensor import QTensor
from qcore.spec import hookimpl

torch.set_num_threads(1)


def torch_ao():
    ao = pytest.importorskip("torch.ao.quantization")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch.ao's fbgemm engine is not available")
    return ao


def calibrated(model, qconfig_mapping, data, **kwargs):
    prepared = qfx.prepare_fx(model, qconfig_mapping, (data[0],), **kwargs)
    for batch in data:
        prepared(batch)
    return prepared


def observer_count(model: fx.GraphModule, base: tuple) -> int:
    """Distinct observer instances the graph calls (a shared observer counts once, as torch.ao shares instances)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    return len({id(modules[n.target]) for n in model.graph.nodes
                if n.op == "call_module" and isinstance(modules[n.target], base)})


class Residual(nn.Module):
    """Conv-BN-ReLU, a residual add + F.relu, max-pool, flatten, a functional linear + relu, a Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.w = nn.Parameter(torch.randn(16, 64) * 0.2)
        self.b = nn.Parameter(torch.randn(16) * 0.1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(y + self.conv2(y))
        y = F.max_pool2d(y, 2)
        y = torch.flatten(y, 1)
        y = F.relu(F.linear(y, self.w, self.b))
        return self.fc(y)


def residual_model() -> Residual:
    torch.manual_seed(0)
    model = Residual().eval()
    model.bn1.running_mean.uniform_(-0.2, 0.2)
    model.bn1.running_var.uniform_(0.5, 2.0)
    return model


def batches(shape, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


# --- placement and numerics against torch.ao -----------------------------------------------------------


@pytest.mark.parametrize("backend", ["fbgemm", "reference"])
def test_placement_and_outputs_match_torch_ao(backend):
    ao = torch_ao()
    from torch.ao.quantization import quantize_fx as ao_fx

    if backend not in qcore.list_backends():
        pytest.skip(f"{backend} is not registered here")
    model = residual_model()
    data = batches((8, 1, 8, 8))
    # torch.ao's x86 graph: conv then a quantized add (qcore's fbgemm would fuse them: tests/test_fx_conv_add.py)
    description = qcore.get_backend_description(backend)
    native = attrs.evolve(description, patterns=[p for p in description.patterns
                                                 if p.pattern not in (nni.ConvAdd2d, nni.ConvAddReLU2d)])
    with qcore.backend(backend):
        prepared = calibrated(model, {"": qcore.default_qconfig}, data, backend_config=native)
        quantized = qfx.convert_fx(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_prepared = ao_fx.prepare_fx(copy.deepcopy(model), ao.QConfigMapping().set_global(ao.default_qconfig),
                                       (data[0],))
        for batch in data:
            ao_prepared(batch)
        ao_observers = observer_count(ao_prepared, (ao.ObserverBase, ao.FakeQuantizeBase))
        ao_quantized = ao_fx.convert_fx(ao_prepared)  # converts in place
        expected = [ao_quantized(batch) for batch in data]
    assert observer_count(prepared, (ObserverBase, FakeQuantizeBase)) == ao_observers == 7
    step = float(quantized.fc.scale)
    for batch, ao_out in zip(data, expected):
        assert (quantized(batch) - ao_out).abs().max() <= step * 1.001


class _Pooled(nn.Module):
    """Average pooling between quantized layers: module and functional spellings."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = F.avg_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(self.pool(y), 1))


@pytest.mark.parametrize("backend", ["fbgemm", "reference"])
def test_average_pooling_shares_its_input_qparams_as_in_torch_ao(backend):
    """No observer of its own: the pools run on the quantized tensor, with torch.ao's observers and integers."""
    ao = torch_ao()
    from torch.ao.quantization import quantize_fx as ao_fx

    if backend not in qcore.list_backends():
        pytest.skip(f"{backend} is not registered here")
    torch.manual_seed(0)
    model = _Pooled().eval()
    data = batches((8, 1, 8, 8))
    with qcore.backend(backend):
        prepared = calibrated(model, {"": qcore.default_qconfig}, data)
        quantized = qfx.convert_fx(prepared)
    outputs = {r.name: r.output_kind for r in get_record(prepared).nodes.values()}
    assert outputs["avg_pool2d"] == outputs["pool"] == "shared"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_prepared = ao_fx.prepare_fx(copy.deepcopy(model), ao.QConfigMapping().set_global(ao.default_qconfig),
                                       (data[0],))
        for batch in data:
            ao_prepared(batch)
        ao_observers = observer_count(ao_prepared, (ao.ObserverBase, ao.FakeQuantizeBase))
        ao_quantized = ao_fx.convert_fx(ao_prepared)
        expected = [ao_quantized(batch) for batch in data]
    assert observer_count(prepared, (ObserverBase, FakeQuantizeBase)) == ao_observers
    step = float(quantized.fc.scale)
    for batch, ao_out in zip(data, expected):
        assert (quantized(batch) - ao_out).abs().max() <= step * 1.001


def test_the_converted_graph_runs_quantized_ops():
    model = residual_model()
    data = batches((8, 1, 8, 8))
    with qcore.backend("reference"):
        quantized = qfx.convert_fx(calibrated(model, {"": qcore.default_qconfig}, data))
    modules = dict(quantized.named_modules())
    assert isinstance(modules["conv1"], qcore.nn.intrinsic.quantized.ConvReLU2d)  # conv, bn, F.relu fused, bn folded
    assert isinstance(modules["conv2"], nnq.Conv2d)
    assert [type(m) for m in modules.values() if isinstance(m, (QuantizedAddReLU, QuantizedAdd))] == [QuantizedAddReLU]
    assert [type(m) for m in modules.values() if isinstance(m, nnq.Linear)] == [nnq.Linear, nnq.Linear]
    calls = [n for n in quantized.graph.nodes if n.op == "call_module"]
    assert sum(isinstance(modules[n.target], nnq.Quantize) for n in calls) == 1
    assert sum(isinstance(modules[n.target], nnq.DeQuantize) for n in calls) == 1
    reference = quantized
    outputs = [reference(batch) for batch in data]
    for batch, out in zip(data, outputs):
        assert (out - model(batch)).abs().max() < 0.1 * model(batch).abs().max()
    scripted = torch.jit.script(reference)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for batch, out in zip(data, outputs):
        assert torch.equal(loaded(batch), out)


def test_fx_equals_eager_for_the_same_model_and_qconfig():
    class FxNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(64, 10)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            y = self.relu(self.conv(x))
            y = y + self.conv2(y)
            y = self.pool(y).flatten(1)
            return self.sigmoid(self.fc(y))

    class EagerNet(FxNet):
        def __init__(self):
            super().__init__()
            self.quant = qcore.QuantStub()
            self.dequant = qcore.DeQuantStub()
            self.ff = nnq.FloatFunctional()
            self.fused_add = False

        def forward(self, x):
            y = self.relu(self.conv(self.quant(x)))
            if self.fused_add:
                y = self.conv2(y, y)  # the backend's fused conv + add, as FX fuses it
            else:
                y = self.ff.add(y, self.conv2(y))
            y = self.pool(y).flatten(1)
            return self.dequant(self.sigmoid(self.fc(y)))

    torch.manual_seed(0)
    fx_model = FxNet().eval()
    eager_model = EagerNet().eval()
    eager_model.load_state_dict(fx_model.state_dict(), strict=False)
    data = batches((8, 1, 8, 8))
    for backend in dict.fromkeys(["reference", qcore.get_backend()]):
        with qcore.backend(backend):
            qconfig = qcore.get_default_qconfig()
            eager = qcore.fuse_modules(copy.deepcopy(eager_model), [["conv", "relu"]])
            if qcore.get_backend_description().supports(nni.ConvAdd2d) is not None:
                eager.conv2 = nni.ConvAdd2d(eager.conv2, torch.add).eval()  # eager mode has no graph: fuse it by hand
                eager.fused_add = True
            eager.qconfig = qconfig
            eager = qcore.prepare(eager)
            for batch in data:
                eager(batch)
            eager = qcore.convert(eager)
            graph = qfx.convert_fx(calibrated(fx_model, {"": qconfig}, data))
        for batch in data:
            assert torch.equal(graph(batch), eager(batch)), backend


# --- what each kind of op gets ------------------------------------------------------------------------


class Ops(nn.Module):
    def forward(self, x):
        y = torch.sigmoid(x) + torch.tanh(x)
        y = F.softmax(y, dim=-1)
        z = y.reshape(y.shape[0], 2, -1).permute(0, 2, 1).transpose(1, 2)
        a, b = torch.chunk(z, 2, dim=1)
        w = torch.cat([a, b], dim=1)[:, 0]
        return w * 3.0 + 1.0


def test_fixed_shared_and_scalar_ops():
    torch.manual_seed(0)
    model = Ops().eval()
    data = batches((4, 8))
    with qcore.backend("reference"):
        prepared = calibrated(model, {"": qcore.default_qconfig}, data)
        record = prepared.meta["qcore_fx"]
        fixed = {name: prepared.get_submodule(name) for name, o in record.observers.items()
                 if o.node in ("sigmoid", "tanh", "softmax") and o.role == "output"}
        assert len(fixed) == 3 and all(isinstance(o, FixedQParamsObserver) for o in fixed.values())
        assert sorted(float(o.scale) for o in fixed.values()) == [1 / 256, 1 / 256, 2 / 256]
        roles = {r.name: (r.role, r.output_kind) for r in record.nodes.values()}
        assert roles["getitem"] == ("float", "none")  # x.shape[0]: not a tensor
        for shared in ("reshape", "permute", "transpose", "chunk", "getitem_1", "getitem_2", "getitem_3"):
            assert roles[shared] == ("shared", "shared")
        assert record.nodes["mul"].scalar == 3.0 and record.nodes["mul"].output_kind == "none"
        quantized = qfx.convert_fx(prepared)
    modules = dict(quantized.named_modules())
    assert sum(isinstance(m, QuantizedAddScalar) for m in modules.values()) == 1
    assert sum(isinstance(m, QuantizedAdd) for m in modules.values()) == 1
    assert sum(isinstance(m, QuantizedCat) for m in modules.values()) == 1
    for batch in data:
        out = quantized(batch)
        assert not isinstance(out, QTensor)
        assert (out - model(batch)).abs().max() < 0.05


def test_mixed_dynamic_and_static_in_one_model():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.fc2 = nn.Linear(16, 16)
            self.lstm = nn.LSTM(16, 8, batch_first=True)

        def forward(self, x):
            y = F.relu(self.fc1(x))
            y = self.fc2(y)
            out, _ = self.lstm(y)
            return out

    torch.manual_seed(0)
    model = Mixed().eval()
    data = batches((2, 5, 8))
    mapping = (QConfigMapping().set_global(qcore.default_qconfig)
               .set_module_name("fc2", qcore.default_dynamic_qconfig)
               .set_object_type(nn.LSTM, qcore.default_dynamic_qconfig))
    with qcore.backend("reference"):
        prepared = calibrated(model, mapping, data)
        record = prepared.meta["qcore_fx"]
        assert (record.nodes["fc1"].quant_type, record.nodes["fc2"].quant_type, record.nodes["lstm"].quant_type) == (
            "static", "dynamic", "dynamic")
        quantized = qfx.convert_fx(prepared)
    assert isinstance(quantized.fc1, qcore.nn.intrinsic.quantized.LinearReLU)
    assert isinstance(quantized.fc2, nnq.dynamic.Linear)
    assert isinstance(quantized.lstm, nnq.dynamic.LSTM)
    for batch in data:
        assert (quantized(batch) - model(batch)).abs().max() < 0.05


def test_unhonourable_qconfig_stays_float_with_a_warning_naming_node_and_reason():
    if "fbgemm" not in qcore.list_backends():
        pytest.skip("the fbgemm plugin is not installed here")
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    full_range = qcore.QConfig(activation=qcore.MinMaxObserver.with_args(quant_min=0, quant_max=255),
                               weight=qcore.default_weight_observer)
    with pytest.warns(FloatFallbackWarning) as caught:
        prepared = qfx.prepare_fx(model, {"": full_range}, torch.randn(3, 4), backend_config="fbgemm")
    message = str(caught[0].message)
    assert "2 node(s) stay float: '0' (Linear), '2' (Linear)" in message
    assert "[0, 127]" in message and "[0, 255]" in message and "fbgemm" in message
    record = prepared.meta["qcore_fx"]
    assert not record.nodes["_0"].quantized and record.nodes["_0"].warned
    assert "[0, 127]" in record.nodes["_0"].reason
    prepared(torch.randn(3, 4))
    quantized = qfx.convert_fx(prepared)
    assert type(quantized.get_submodule("0")) is nn.Linear
    x = torch.randn(3, 4)
    assert torch.equal(quantized(x), model(x))


def test_ops_without_a_form_for_the_qconfig_warn():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4)).eval()
    with pytest.warns(FloatFallbackWarning, match=r"'0' \(Embedding\).*only weight-only"):
        prepared = qfx.prepare_fx(model, {"": qcore.default_qconfig}, torch.tensor([[1, 2, 3]]),
                                  backend_config="reference")
    assert prepared.meta["qcore_fx"].nodes["_1"].quantized
    with warnings.catch_warnings():
        warnings.simplefilter("error", FloatFallbackWarning)  # a weight-only qconfig fits the embedding
        mapping = QConfigMapping().set_global(qcore.default_qconfig).set_object_type(
            nn.Embedding, qcore.float_qparams_weight_only_qconfig)
        prepared = qfx.prepare_fx(model, mapping, torch.tensor([[1, 2, 3]]), backend_config="reference")
        prepared(torch.tensor([[1, 2, 3]]))
        quantized = qfx.convert_fx(prepared)
    assert isinstance(quantized.get_submodule("0"), nnq.Embedding)


def test_a_global_dynamic_qconfig_leaves_non_weighted_ops_float_silently():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FloatFallbackWarning)
        prepared = qfx.prepare_fx(model, {"": qcore.default_dynamic_qconfig}, torch.randn(2, 4))
    record = prepared.meta["qcore_fx"]
    assert "applies to ops with weights" in record.nodes["_1"].reason and not record.nodes["_1"].warned
    assert not record.observers


def test_qconfig_mapping_entries_select_nodes():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            x = self.a(x)
            x = torch.add(x, x)
            x = torch.add(x, 1.0)
            return self.b(x)

    model = Two().eval()
    mapping = (QConfigMapping().set_global(qcore.default_qconfig).set_module_name("b", None)
               .set_module_name_object_type_order("", torch.add, 1, None))
    with qcore.backend("reference"):
        prepared = qfx.prepare_fx(model, mapping, torch.randn(2, 4))
    nodes = prepared.meta["qcore_fx"].nodes
    assert nodes["a"].quantized and nodes["add"].quantized
    assert nodes["add_1"].reason.startswith("its qconfig is None (module_name_object_type_order(''")
    assert nodes["b"].reason == "its qconfig is None (module_name('b'))"
    assert nodes["a"].qconfig_entry == "global"
    dict_form = qfx.prepare_fx(model, {"": qcore.default_qconfig, "module_name": [("b", None)]}, torch.randn(2, 4),
                               backend_config="reference")
    assert not dict_form.meta["qcore_fx"].nodes["b"].quantized


# --- tracing failures -----------------------------------------------------------------------------------


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not symbolically traceable
            return self.fc(x)
        return -self.fc(x)


class WithBranchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 4)
        self.branchy = Branchy()
        self.tail = nn.Linear(4, 2)

    def forward(self, x):
        return self.tail(F.relu(self.branchy(self.head(x))))


def test_tracing_failure_names_the_module_the_line_and_the_way_out():
    model = WithBranchy().eval()
    with pytest.raises(SymbolicTraceError) as caught:
        qfx.prepare_fx(model, {"": qcore.default_qconfig}, torch.randn(2, 4))
    message = str(caught.value)
    assert "'branchy' (Branchy)" in message
    assert "if x.sum() > 0:" in message and f"{__file__}:" in message
    assert "set_non_traceable_module_names(['branchy'])" in message and "set_non_traceable_module_classes" in message
    assert caught.value.module_name == "branchy" and isinstance(caught.value, ConfigError)


@pytest.mark.parametrize("config", [
    PrepareCustomConfig().set_non_traceable_module_names(["branchy"]),
    {"non_traceable_module_class": [Branchy]},
])
def test_non_traceable_modules_run_float_and_the_rest_is_quantized(config):
    torch.manual_seed(0)
    model = WithBranchy().eval()
    data = batches((6, 4))
    with qcore.backend("reference"):
        prepared = calibrated(model, {"": qcore.default_qconfig}, data, prepare_custom_config=config)
        record = prepared.meta["qcore_fx"]
        assert "non-traceable" in record.nodes["branchy"].reason
        quantized = qfx.convert_fx(prepared)
    assert isinstance(quantized.head, nnq.Linear) and isinstance(quantized.tail, nnq.Linear)
    assert type(quantized.branchy) is Branchy and type(quantized.branchy.fc) is nn.Linear
    for batch in data:
        assert (quantized(batch) - model(batch)).abs().max() < 0.05


def test_the_models_own_untraceable_forward_says_to_move_the_code_into_a_submodule():
    with pytest.raises(SymbolicTraceError, match=r"(?s)model itself \(Branchy\).*move it into a submodule"):
        qfx.prepare_fx(Branchy().eval(), {"": qcore.default_qconfig}, torch.randn(2, 4))


# --- QAT, fusion, custom configs ---------------------------------------------------------------------


def test_prepare_qat_fx_fake_quantizes_and_converts():
    model = residual_model().train()
    data = batches((8, 1, 8, 8))
    with qcore.backend("reference"):
        prepared = qfx.prepare_qat_fx(model, {"": qcore.get_default_qat_qconfig()}, (data[0],))
        assert isinstance(prepared.conv1, qcore.nn.intrinsic.qat.ConvBnReLU2d)
        assert isinstance(prepared.fc, qcore.nn.qat.Linear)
        record = prepared.meta["qcore_fx"]
        weight = record.nodes["linear"].weight_observer
        assert isinstance(prepared.get_submodule(weight), FakeQuantizeBase)
        optimizer = torch.optim.SGD(prepared.parameters(), lr=0.01)
        for batch in data:
            optimizer.zero_grad()
            prepared(batch).pow(2).mean().backward()
            optimizer.step()
        prepared.eval()
        quantized = qfx.convert_fx(prepared)
        prepared.apply(qcore.disable_observer)
    assert isinstance(quantized.conv1, qcore.nn.intrinsic.quantized.ConvReLU2d)
    for batch in data:
        expected = prepared(batch).detach()
        assert (quantized(batch) - expected).abs().max() <= 2.001 * float(quantized.fc.scale)


def test_fuse_fx_folds_batchnorm_in_eval_and_keeps_it_for_qat():
    model = residual_model()
    x = batches((2, 1, 8, 8), n=1)[0]
    fused = qfx.fuse_fx(model)
    assert isinstance(fused.conv1, qcore.nn.intrinsic.ConvReLU2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not any(n.target is F.relu and n.args[0].target == "conv1" for n in fused.graph.nodes)
    torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)
    fused_qat = qfx.fuse_fx(residual_model().train())
    assert isinstance(fused_qat.conv1, qcore.nn.intrinsic.ConvBnReLU2d)


def test_custom_configs_objects_and_dicts_agree():
    observed = {"float_to_observed_custom_module_class": {"static": {nn.Linear: nn.Linear}}}
    config = PrepareCustomConfig.from_dict({
        "non_traceable_module_name": ["a"], "input_quantized_idxs": [0], "output_quantized_idxs": [0],
        "preserved_attributes": ["attr"], **observed,
    })
    assert config.non_traceable_module_names == ["a"] and config.input_quantized_indexes == [0]
    assert config.float_to_observed_mapping == {"static": {nn.Linear: nn.Linear}}
    assert PrepareCustomConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    convert = qfx.ConvertCustomConfig.from_dict({"observed_to_quantized_custom_module_class": {nn.Linear: nn.Linear}})
    assert convert.observed_to_quantized_mapping == {"static": {nn.Linear: nn.Linear}}
    with pytest.raises(ConfigError, match="unknown keys"):
        PrepareCustomConfig.from_dict({"non_traceable_module_names": ["a"]})
    with pytest.raises(ConfigError, match="unknown quantization type"):
        PrepareCustomConfig().set_float_to_observed_mapping(nn.Linear, nn.Linear, "sometimes")


def test_quantized_input_and_output_indexes_and_preserved_attributes():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU()).eval()
    model.note = "kept"
    config = PrepareCustomConfig().set_input_quantized_indexes([0]).set_output_quantized_indexes([0]) \
        .set_preserved_attributes(["note"])
    with qcore.backend("reference"):
        prepared = qfx.prepare_fx(model, {"": qcore.default_qconfig}, torch.randn(2, 4), prepare_custom_config=config)
        assert prepared.note == "kept" and copy.deepcopy(prepared).note == "kept"
        assert not any(o.role == "input" for o in prepared.meta["qcore_fx"].observers.values())
        prepared(torch.randn(2, 4))
        quantized = qfx.convert_fx(prepared)
    x = qcore.quantize_per_tensor(torch.randn(2, 4), 0.05, 64, torch.quint8)
    out = quantized(x)
    assert isinstance(out, QTensor) and out.q_scale() == float(quantized.get_submodule("0").scale)


def test_standalone_module_is_prepared_and_converted_on_its_own():
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.inner(x))

    torch.manual_seed(0)
    model = Outer().eval()
    inner_mapping = QConfigMapping().set_global(qcore.default_qconfig)
    config = PrepareCustomConfig().set_standalone_module_name("inner", inner_mapping, None)
    data = batches((5, 4))
    with qcore.backend("reference"):
        prepared = calibrated(model, {"": qcore.default_qconfig}, data, prepare_custom_config=config)
        assert isinstance(prepared.inner, fx.GraphModule) and "qcore_fx" in prepared.inner.meta
        quantized = qfx.convert_fx(prepared)
    assert isinstance(quantized.inner, fx.GraphModule)
    assert isinstance(quantized.inner.get_submodule("0"), qcore.nn.intrinsic.quantized.LinearReLU)
    assert isinstance(quantized.fc, nnq.Linear)
    for batch in data:
        assert (quantized(batch) - model(batch)).abs().max() < 0.05


# --- lowering, errors ---------------------------------------------------------------------------------


class Lowered(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class LoweringPlugin:
    seen: list = []

    @hookimpl
    def qcore_lower_module(self, backend, module):
        if backend == "reference" and isinstance(module, nnq.Linear):
            self.seen.append(module._qcore_name if hasattr(module, "_qcore_name") else "?")
            return Lowered(module)
        return None


@pytest.fixture
def lowering_plugin():
    R.register_plugin(LoweringPlugin(), "fx_test_lowering")
    LoweringPlugin.seen.clear()
    yield LoweringPlugin
    R.unregister_plugin("fx_test_lowering")


def test_convert_fx_lowers_through_the_hook_and_the_reference_convert_does_not(lowering_plugin):
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    with qcore.backend("reference"):
        prepared = calibrated(model, {"": qcore.default_qconfig}, batches((3, 4)))
        reference = qfx.convert_to_reference_fx(prepared)
        lowered = qfx.convert_fx(prepared)
    assert type(reference.get_submodule("0")) is nnq.Linear
    assert isinstance(lowered.get_submodule("0"), Lowered) and lowering_plugin.seen == ["0"]
    x = torch.randn(3, 4)
    assert torch.equal(lowered(x), reference(x))
    assert reference.meta["qcore_fx"].stage == "reference" and lowered.meta["qcore_fx"].stage == "lowered"


def test_flow_errors_are_qcore_errors():
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="eval mode"):
        qfx.prepare_fx(model.train(), {"": qcore.default_qconfig})
    with pytest.raises(ConfigError, match="training mode"):
        qfx.prepare_qat_fx(model.eval(), {"": qcore.default_qat_qconfig})
    with pytest.raises(ConfigError, match="qconfig_mapping is required"):
        qfx.prepare_fx(model.eval(), None)
    with pytest.raises(ConfigError, match="prepare_fx / prepare_qat_fx returned"):
        qfx.convert_fx(fx.symbolic_trace(model))
    with pytest.raises(ConfigError, match="backend_config"):
        qfx.prepare_fx(model.eval(), {"": qcore.default_qconfig}, backend_config=42)
    prepared = qfx.prepare_fx(model.eval(), {"": qcore.default_dynamic_qconfig}, torch.randn(1, 4))
    converted = qfx.convert_fx(prepared)
    with pytest.raises(ConfigError, match="already converted"):
        qfx.convert_fx(converted)


def test_convert_qconfig_mapping_can_switch_nodes_off():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).eval()
    with qcore.backend("reference"):
        prepared = calibrated(model, {"": qcore.default_qconfig}, batches((3, 4)))
        quantized = qfx.convert_fx(prepared, qconfig_mapping=QConfigMapping().set_global(qcore.default_qconfig)
                                   .set_module_name("1", None))
    assert isinstance(quantized.get_submodule("0"), nnq.Linear) and type(quantized.get_submodule("1")) is nn.Linear
    x = torch.randn(3, 4)
    assert (quantized(x) - model(x)).abs().max() < 0.05


def test_prepared_models_survive_deepcopy_and_pickling():
    model = residual_model()
    data = batches((2, 1, 8, 8), n=1)
    with qcore.backend("reference"):
        prepared = calibrated(model, {"": qcore.default_qconfig}, data)
        buffer = io.BytesIO()
        torch.save(prepared, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        kinds = [(r.quant_type, r.role, r.target) for r in prepared.meta["qcore_fx"].nodes.values()]
        assert [(r.quant_type, r.role, r.target) for r in get_record(loaded).nodes.values()] == kinds
        expected = qfx.convert_fx(prepared)(data[0])
        assert torch.equal(qfx.convert_fx(loaded)(data[0]), expected)
        assert torch.equal(qfx.convert_fx(copy.deepcopy(prepared))(data[0]), expected)
