"""The eager flow: qconfig propagation, observer placement, prepare / convert / quantize*, mappings and hooks.

Observer placement is compared with torch.ao's prepare on the same model;
plugins registering module swaps, custom modules and lowerings are used
without the caller passing a mapping.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import qcore
import qcore.registry as R
from qcore import (
    ConfigError,
    FixedQParamsFakeQuantize,
    FixedQParamsObserver,
    MinMaxObserver,
    QConfig,
    QConfigMapping,
    default_dynamic_qconfig,
    default_qat_qconfig,
    default_qconfig,
    float16_dynamic_qconfig,
)
from qcore.flow import mappings
from qcore.flow.eager import (
    UnquantizedModuleWarning,
    convert,
    prepare,
    prepare_qat,
    propagate_qconfig_,
    quantize,
    quantize_dynamic,
    quantize_qat,
    swap_module,
)
from qcore.flow.eager.prepare import is_activation_post_process
from qcore.qtensor import QTensor
from qcore.spec import hookimpl
from qcore.stubs import DeQuantStub, QuantStub, QuantWrapper

torch.set_num_threads(1)

int8_act_qconfig = QConfig(
    activation=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
    weight=default_qconfig.weight,
)


class Net(nn.Module):
    """quant -> conv -> relu -> (conv, relu) -> pool -> flatten -> fc -> dequant -> head (float)."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.conv = nn.Conv2d(1, 4, 3)
        self.relu = nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 5)
        self.dequant = DeQuantStub()
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.block(self.relu(self.conv(x)))
        x = self.fc(self.flatten(self.pool(x)))
        return self.head(self.dequant(x))


def make_net(qconfig=default_qconfig) -> Net:
    torch.manual_seed(0)
    net = Net().eval()
    net.qconfig = qconfig
    net.head.qconfig = None
    return net


def data(n: int = 8) -> torch.Tensor:
    return torch.randn(n, 1, 6, 6, generator=torch.Generator().manual_seed(1))


def observed_names(model: nn.Module) -> set[str]:
    return {
        name for name, m in model.named_modules()
        if not is_activation_post_process(m) and is_activation_post_process(getattr(m, "activation_post_process", None))
    }


@pytest.fixture(autouse=True)
def fresh_registry():
    yield
    for name in ("flow_test_plugin",):
        try:
            R.unregister_plugin(name)
        except Exception:
            pass


# --- propagation -----------------------------------------------------------------------------


class TestPropagate:
    def test_parent_to_child_and_none_excludes_the_subtree(self):
        model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
        model.qconfig = default_qconfig
        model[1].qconfig = None
        propagate_qconfig_(model)
        assert model[0].qconfig is default_qconfig
        assert model[1][0].qconfig is None and model[1][1].qconfig is None

    def test_dict_precedence_type_then_name_then_own_attribute(self):
        model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2), nn.ReLU())
        model[2].qconfig = default_dynamic_qconfig
        propagate_qconfig_(model, {"": default_qconfig, nn.Linear: float16_dynamic_qconfig, "1": None})
        assert model.qconfig is default_qconfig and model[3].qconfig is default_qconfig
        assert model[0].qconfig is float16_dynamic_qconfig
        assert model[1].qconfig is None  # the name beats the type
        assert model[2].qconfig is default_dynamic_qconfig  # the module's own attribute beats both

    def test_qconfig_mapping_is_accepted(self):
        model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), nn.ReLU())
        mapping = QConfigMapping().set_global(default_qconfig).set_object_type(nn.ReLU, None)
        mapping.set_module_name_regex(r"1\..*", default_dynamic_qconfig)
        propagate_qconfig_(model, mapping)
        assert model[0].qconfig is default_qconfig and model[2].qconfig is None
        assert model[1][0].qconfig is default_dynamic_qconfig and model[1].qconfig is default_qconfig

    def test_non_traceable_children_are_left_alone(self):
        model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), nn.ReLU())
        propagate_qconfig_(model, {"": default_qconfig}, {"non_traceable_module_name": ["1"],
                                                          "non_traceable_module_class": [nn.ReLU]})
        assert model[0].qconfig is default_qconfig
        assert not hasattr(model[1], "qconfig") and not hasattr(model[2], "qconfig")

    def test_bad_qconfig_values_are_named(self):
        with pytest.raises(ConfigError, match=r"qconfig_dict\['Linear'\].*QConfig"):
            propagate_qconfig_(nn.Linear(2, 2), {nn.Linear: "int8"})
        model = nn.Sequential(nn.Linear(2, 2))
        model[0].qconfig = 3
        with pytest.raises(ConfigError, match="'0' \\(Linear\\)"):
            propagate_qconfig_(model)

    def test_torch_ao_qconfig_gets_a_hint(self):
        ao = pytest.importorskip("torch.ao.quantization")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = nn.Linear(2, 2)
            model.qconfig = ao.default_qconfig
        with pytest.raises(ConfigError, match="torch.ao's QConfig"):
            propagate_qconfig_(model)


# --- prepare ------------------------------------------------------------------------------------


class TestPrepare:
    def test_observers_only_where_a_qconfig_applies(self):
        prepared = prepare(make_net())
        assert observed_names(prepared) == {"quant", "conv", "block.0", "fc"}
        assert not hasattr(prepared.dequant, "activation_post_process")
        assert not hasattr(prepared.relu, "activation_post_process")
        assert not hasattr(prepared.head, "activation_post_process")  # qconfig None
        prepared(data())
        scale, _ = prepared.fc.activation_post_process.calculate_qparams()
        assert float(scale) > 0

    def test_observer_placement_matches_torch_ao(self):
        ao = pytest.importorskip("torch.ao.quantization")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ao_net = make_net(ao.default_qconfig)
            ao_net.quant, ao_net.dequant = ao.QuantStub(), ao.DeQuantStub()
            ao_prepared = ao.prepare(ao_net)
        assert observed_names(prepare(make_net())) == {
            n for n, m in ao_prepared.named_modules() if hasattr(m, "activation_post_process")
        }

    def test_observer_sees_the_module_output(self):
        prepared = prepare(make_net())
        x = data()
        with torch.no_grad():
            prepared(x)
            out = prepared.conv(x)
        observer = prepared.conv.activation_post_process
        assert float(observer.min_val) == pytest.approx(float(out.min()))
        assert float(observer.max_val) == pytest.approx(float(out.max()))

    def test_caller_model_is_untouched_unless_inplace(self):
        model = make_net()
        before = copy.deepcopy(model.state_dict())
        prepared = prepare(model)
        assert prepared is not model
        assert not any(hasattr(m, "activation_post_process") for m in model.modules())
        assert not hasattr(model.conv, "qconfig")
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert prepare(model, inplace=True) is model and hasattr(model.conv, "activation_post_process")

    def test_training_mode_is_refused_for_static_prepare(self):
        model = make_net().train()
        with pytest.raises(ConfigError, match=r"eval mode.*model\.eval\(\).*prepare_qat"):
            prepare(model)

    def test_eval_mode_is_refused_for_prepare_qat(self):
        model = make_net(default_qat_qconfig)
        with pytest.raises(ConfigError, match=r"training mode.*model\.train\(\)"):
            prepare_qat(model)

    def test_dynamic_qconfig_in_static_prepare_names_the_module(self):
        model = make_net()
        model.fc.qconfig = default_dynamic_qconfig
        with pytest.raises(ConfigError, match=r"'fc' \(Linear\).*quantize_dynamic"):
            prepare(model)

    def test_no_qconfig_anywhere_warns(self):
        with pytest.warns(UserWarning, match="no module has a qconfig"):
            prepare(nn.Sequential(nn.Linear(2, 2)).eval())

    def test_fixed_qparams_for_sigmoid_like_modules(self):
        model = nn.Sequential(QuantStub(), nn.Sigmoid(), nn.Tanh(), DeQuantStub()).eval()
        model.qconfig = default_qconfig
        prepared = prepare(model)
        sig, tanh = prepared[1].activation_post_process, prepared[2].activation_post_process
        assert isinstance(sig, FixedQParamsObserver) and isinstance(tanh, FixedQParamsObserver)
        assert [float(sig.scale), int(sig.zero_point)] == [1 / 256, 0]
        assert [float(tanh.scale), int(tanh.zero_point)] == [2 / 256, 128]
        model.qconfig = int8_act_qconfig
        prepared = prepare(model)
        assert int(prepared[1].activation_post_process.zero_point) == -128
        assert int(prepared[2].activation_post_process.zero_point) == 0
        model.train().qconfig = default_qat_qconfig
        qat = prepare_qat(model)
        assert isinstance(qat[1].activation_post_process, FixedQParamsFakeQuantize)

    def test_memoryless_observer_observes_the_input(self):
        from qcore import MovingAverageMinMaxObserver

        qconfig = QConfig(activation=MovingAverageMinMaxObserver.with_args(averaging_constant=1),
                          weight=default_qconfig.weight)
        model = nn.Sequential(nn.Linear(3, 3)).eval()
        model.qconfig = qconfig
        prepared = prepare(model)
        x = torch.full((2, 3), 5.0)
        prepared(x)
        assert float(prepared[0].activation_post_process.max_val) == 5.0


# --- convert ---------------------------------------------------------------------------------


def calibrated(model: nn.Module) -> nn.Module:
    prepared = prepare(model)
    prepared(data(32))
    return prepared


class TestConvert:
    def test_static_flow_swaps_and_stays_close_to_float(self):
        from qcore.nn import quantized as nnq

        model = make_net()
        quantized = convert(calibrated(model))
        assert isinstance(quantized.quant, nnq.Quantize) and isinstance(quantized.dequant, nnq.DeQuantize)
        assert isinstance(quantized.conv, nnq.Conv2d) and isinstance(quantized.fc, nnq.Linear)
        assert type(quantized.head) is nn.Linear and type(quantized.relu) is nn.ReLU
        assert not any(hasattr(m, "qconfig") for m in quantized.modules())
        assert not any(is_activation_post_process(m) for m in quantized.modules())
        x = data(32)
        step = float(quantized.fc.scale) * float(quantized.head.weight.detach().abs().sum(1).max())
        assert (quantized(x) - model(x)).abs().max() <= 4 * step

    def test_swapped_modules_know_their_names_and_the_backend_is_recorded(self):
        import qcore

        quantized = convert(calibrated(make_net()))
        assert quantized.block[0]._qcore_name == "block.0" and quantized.fc._qcore_name == "fc"
        assert quantized._qcore_backend == qcore.get_backend()
        assert convert(calibrated(make_net()), is_reference=True)._qcore_backend == "reference"

    def test_caller_model_is_untouched_unless_inplace(self):
        prepared = calibrated(make_net())
        types = [type(m) for m in prepared.modules()]
        quantized = convert(prepared)
        assert [type(m) for m in prepared.modules()] == types and quantized is not prepared
        assert convert(prepared, inplace=True) is prepared and type(prepared.fc) is not nn.Linear

    def test_remove_qconfig_false_keeps_qconfigs(self):
        quantized = convert(calibrated(make_net()), remove_qconfig=False)
        assert quantized.relu.qconfig == default_qconfig

    def test_mapping_overrides_the_default(self):
        quantized = convert(calibrated(make_net()), mapping={nn.Linear: StandIn, nn.Conv2d: StandIn,
                                                             QuantStub: StandIn})
        assert isinstance(quantized.fc, StandIn) and quantized.fc.source is nn.Linear
        assert float(quantized.fc.scale) > 0
        assert type(quantized.dequant) is DeQuantStub  # not in the mapping given

    def test_observed_module_without_mapping_is_an_error_naming_it(self):
        prepared = calibrated(make_net())
        with pytest.raises(ConfigError, match=r"'fc' \(Linear\) was prepared for quantization.*mapping"):
            convert(prepared, mapping={QuantStub: StandIn, nn.Conv2d: StandIn})

    def test_unmapped_module_with_qconfig_warns_once_per_type(self):
        class GeluNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.quant, self.fc, self.dequant = QuantStub(), nn.Linear(4, 4), DeQuantStub()
                self.act1, self.act2 = nn.GELU(), nn.GELU()

            def forward(self, x):
                return self.dequant(self.act2(self.act1(self.fc(self.quant(x)))))

        model = GeluNet().eval()
        model.qconfig = default_qconfig
        prepared = prepare(model)
        prepared(torch.randn(4, 4))
        with pytest.warns(UnquantizedModuleWarning) as record:
            quantized = convert(prepared)
        messages = [str(w.message) for w in record if issubclass(w.category, UnquantizedModuleWarning)]
        assert len(messages) == 1 and "'act1', 'act2'" in messages[0] and "GELU" in messages[0]
        assert type(quantized.act1) is nn.GELU

    def test_an_activation_dtype_the_module_cannot_use_names_the_module(self):
        from qcore import float16_static_qconfig

        model = make_net()
        model.fc.qconfig = float16_static_qconfig
        prepared = prepare(model)
        prepared(data())
        with pytest.raises(ConfigError, match=r"'fc' \(Linear\).*float16"):
            convert(prepared)

    def test_per_channel_activation_is_refused(self):
        from qcore import PerChannelMinMaxObserver

        with pytest.raises(ConfigError, match="per-channel.*activations are quantized per tensor"):
            QConfig(activation=PerChannelMinMaxObserver, weight=default_qconfig.weight)

    def test_uncalibrated_observer_names_the_module(self):
        from qcore import UncalibratedWarning

        with pytest.warns(UncalibratedWarning, match=r"'quant' \(QuantStub\).*saw no data.*calibrate"):
            convert(prepare(make_net()))

    def test_user_hooks_survive_the_swap(self):
        seen = []
        model = make_net()
        model.fc.register_forward_hook(lambda m, i, o: seen.append(type(o)))
        with qcore.backend("reference"):  # backends may return QTensor subclasses (fbgemm's carry torch's tensor)
            quantized = convert(calibrated(model))
        seen.clear()
        quantized(data(2))
        assert seen == [QTensor]

    def test_swap_module_follows_torch_ao(self):
        prepared = calibrated(make_net())
        assert isinstance(swap_module(prepared.fc, {nn.Linear: StandIn}, {}), StandIn)
        assert swap_module(prepared.head, {nn.Linear: StandIn}, {}) is prepared.head  # qconfig None
        assert swap_module(prepared.relu, {nn.Linear: StandIn}, {}) is prepared.relu  # no mapping


class StandIn(nn.Module):
    """A stand-in 'quantized' module: remembers its source type and output qparams."""

    def __init__(self, source: type, scale: float) -> None:
        super().__init__()
        self.source = source
        self.register_buffer("scale", torch.tensor(scale))

    @classmethod
    def from_float(cls, mod: nn.Module) -> "StandIn":
        scale, _ = mod.activation_post_process.calculate_qparams()
        return cls(type(mod), float(scale))

    def forward(self, x):
        return x


# --- one-call flows -----------------------------------------------------------------------------


class TestQuantizeFlows:
    def test_quantize_runs_calibration_and_converts(self):
        from qcore.nn import quantized as nnq

        calls = []

        def calibrate(model, batches):
            calls.append(model.training)
            for x in batches:
                model(x)

        model = make_net().train()
        quantized = quantize(model, calibrate, [[data(), data()]])
        assert calls == [False] and isinstance(quantized.fc, nnq.Linear)
        assert model.training and type(model.fc) is nn.Linear

    def test_prepare_qat_swaps_in_qat_modules_with_fake_quant(self):
        from qcore.nn import qat as nnqat

        model = make_net(default_qat_qconfig).train()
        prepared = prepare_qat(model)
        assert isinstance(prepared.conv, nnqat.Conv2d) and isinstance(prepared.fc, nnqat.Linear)
        assert type(model.fc) is nn.Linear  # the caller's model is untouched
        assert observed_names(prepared) == {"quant", "conv", "block.0", "fc"}
        assert type(prepared.head) is nn.Linear

    def test_quantize_qat_trains_then_converts(self):
        from qcore.nn import quantized as nnq

        def train(model, steps):
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
            for _ in range(steps):
                optimizer.zero_grad()
                model(data()).sum().backward()
                optimizer.step()
            model.eval()

        model = make_net(default_qat_qconfig)
        quantized = quantize_qat(model, train, [3])
        assert isinstance(quantized.fc, nnq.Linear) and isinstance(quantized.conv, nnq.Conv2d)
        assert quantized(data()).shape == (8, 3)


class TestQuantizeDynamic:
    @staticmethod
    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4)), nn.Conv1d(1, 1, 1))

    def test_set_of_types_set_of_names_and_dict(self):
        from qcore.nn.quantized.dynamic import Linear as dynamic_linear

        by_type = quantize_dynamic(self.model(), {nn.Linear})
        assert isinstance(by_type[0], dynamic_linear) and isinstance(by_type[2][0], dynamic_linear)
        by_name = quantize_dynamic(self.model(), {"2.0"})
        assert type(by_name[0]) is nn.Linear and isinstance(by_name[2][0], dynamic_linear)
        by_dict = quantize_dynamic(self.model(), {"": default_dynamic_qconfig, "0": None})
        assert type(by_dict[0]) is nn.Linear and isinstance(by_dict[2][0], dynamic_linear)
        default = quantize_dynamic(self.model())
        assert isinstance(default[0], dynamic_linear) and type(default[3]) is nn.Conv1d

    def test_float16_weights(self):
        model = self.model()
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.float16)
        x = torch.randn(3, 4)
        assert torch.allclose(quantized[:3](x), model[:3](x), atol=1e-2)

    def test_weight_only_qconfigs_pick_weight_only_modules(self):
        from qcore import float_qparams_weight_only_qconfig
        from qcore.nn.quantized import Embedding, weight_only

        model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4))
        quantized = quantize_dynamic(model, {nn.Embedding: float_qparams_weight_only_qconfig,
                                             nn.Linear: weight_only.weight_only_int8_qconfig})
        assert isinstance(quantized[0], Embedding) and isinstance(quantized[1], weight_only.Linear)
        tokens = torch.tensor([[1, 2, 3]])
        assert torch.allclose(quantized(tokens), model(tokens), atol=0.05)

    def test_unsupported_dtype_and_types_are_errors(self):
        with pytest.raises(ConfigError, match="quint8.*float_qparams_weight_only_qconfig"):
            quantize_dynamic(self.model(), {nn.Linear}, dtype=torch.quint8)
        with pytest.raises(ConfigError, match=r"no dynamic or weight-only quantized counterpart: '3' \(Conv1d\)"):
            quantize_dynamic(self.model(), {nn.Conv1d})
        with pytest.raises(ConfigError, match="set of module types/names or a dict"):
            quantize_dynamic(self.model(), default_dynamic_qconfig)

    def test_mapping_override_and_inplace(self):
        class Marker(nn.Module):
            @classmethod
            def from_float(cls, mod):
                assert mod.qconfig is default_dynamic_qconfig
                return cls()

        model = self.model()
        quantized = quantize_dynamic(model, {nn.Linear}, mapping={nn.Linear: Marker})
        assert isinstance(quantized[0], Marker) and type(model[0]) is nn.Linear
        assert quantize_dynamic(model, {nn.Linear}, mapping={nn.Linear: Marker}, inplace=True) is model
        assert isinstance(model[0], Marker)


# --- plugins: module swaps, custom modules and lowering without any config ---------------------------


class PluginFloat(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.weight


class PluginQuantized(nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    @classmethod
    def from_float(cls, mod):
        return cls(float(mod.activation_post_process.calculate_qparams()[0]))

    def forward(self, x):
        return x


class PluginCustomFloat(nn.Module):
    def forward(self, x):
        return x + 1


class PluginCustomObserved(nn.Module):
    @classmethod
    def from_float(cls, mod):
        observed = cls()
        observed.qconfig = mod.qconfig
        return observed

    def forward(self, x):
        return x + 1


class PluginCustomQuantized(nn.Module):
    @classmethod
    def from_observed(cls, observed):
        quantized = cls()
        quantized.saw_observer = observed.activation_post_process
        return quantized

    def forward(self, x):
        return x


class Lowered(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


class FlowPlugin:
    lowered_for: list = []

    @hookimpl
    def qcore_register_quantized_modules(self, registry):
        registry.add(PluginFloat, PluginQuantized, "static")

    @hookimpl
    def qcore_register_custom_modules(self, registry):
        registry.add(PluginCustomFloat, PluginCustomObserved, PluginCustomQuantized)

    @hookimpl
    def qcore_lower_module(self, backend, module):
        if isinstance(module, PluginQuantized):
            self.lowered_for.append(backend)
            return Lowered(module)
        return None


def plugin_model() -> nn.Module:
    model = nn.Sequential(QuantStub(), PluginFloat(), PluginCustomFloat(), DeQuantStub()).eval()
    model.qconfig = default_qconfig
    return model


class TestPlugins:
    def test_registered_swap_custom_module_and_lowering_apply_without_config(self):
        import qcore

        R.register_plugin(FlowPlugin(), "flow_test_plugin")
        assert mappings.get_default_static_quant_module_mappings()[PluginFloat] is PluginQuantized
        prepared = prepare(plugin_model())
        assert isinstance(prepared[2], PluginCustomObserved)
        assert isinstance(prepared[2].activation_post_process, MinMaxObserver)
        prepared(torch.randn(2, 3))
        FlowPlugin.lowered_for.clear()
        quantized = convert(prepared)
        assert isinstance(quantized[1], Lowered) and isinstance(quantized[1].inner, PluginQuantized)
        assert quantized[1]._qcore_name == "1" and FlowPlugin.lowered_for == [qcore.get_backend()]
        assert isinstance(quantized[2], PluginCustomQuantized)
        assert isinstance(quantized[2].saw_observer, MinMaxObserver)
        reference = convert(prepared, is_reference=True)
        assert type(reference[1]) is PluginQuantized

    def test_user_config_wins_over_the_registered_custom_module(self):
        class UserObserved(PluginCustomObserved):
            pass

        R.register_plugin(FlowPlugin(), "flow_test_plugin")
        prepared = prepare(plugin_model(), prepare_custom_config_dict={
            "float_to_observed_custom_module_class": {PluginCustomFloat: UserObserved}})
        assert type(prepared[2]) is UserObserved

    def test_without_the_plugin_the_float_module_is_not_observed(self):
        prepared = prepare(plugin_model())
        assert not hasattr(prepared[1], "activation_post_process")
        assert type(prepared[2]) is PluginCustomFloat


# --- mappings -----------------------------------------------------------------------------------


class TestMappings:
    def test_core_tables_are_complete(self):
        missing: list[str] = []
        mappings.core_module_swaps(missing)
        assert missing == []

    def test_defaults_cover_torch_ao_eager_mappings(self):
        from qcore.nn import intrinsic as nni
        from qcore.nn import qat as nnqat
        from qcore.nn import quantized as nnq

        static = mappings.get_default_static_quant_module_mappings()
        assert static[QuantStub] is nnq.Quantize and static[DeQuantStub] is nnq.DeQuantize
        assert static[nn.Linear] is nnq.Linear and static[nnqat.Linear] is nnq.Linear
        assert static[nni.ConvReLU2d] is nni.quantized.ConvReLU2d
        qat = mappings.get_default_qat_module_mappings()
        assert qat[nn.Conv2d] is nnqat.Conv2d and qat[nni.ConvBnReLU2d] is nni.qat.ConvBnReLU2d
        allow = mappings.get_default_qconfig_propagation_list()
        assert nn.Linear in allow and QuantStub in allow and nn.GRU not in allow

    def test_lookup_helpers(self):
        from qcore.nn import quantized as nnq

        assert mappings.get_static_quant_module_class(nn.Linear) is nnq.Linear
        with pytest.raises(ConfigError, match="GELU has no statically quantized counterpart"):
            mappings.get_static_quant_module_class(nn.GELU)

    def test_quant_wrapper_quantizes_a_float_module(self):
        from qcore.nn import quantized as nnq

        torch.manual_seed(0)
        linear = nn.Linear(4, 4).eval()
        linear.qconfig = default_qconfig
        wrapped = QuantWrapper(linear)
        assert not wrapped.training and wrapped.quant.qconfig is default_qconfig
        quantized = quantize(wrapped, lambda m: m(torch.randn(16, 4)), [])
        assert isinstance(quantized.module, nnq.Linear)
        x = torch.randn(5, 4)
        assert (quantized(x) - linear(x)).abs().max() <= 2 * float(quantized.module.scale)
