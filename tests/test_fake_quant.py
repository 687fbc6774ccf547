"""FakeQuantize / FixedQParamsFakeQuantize: bit-exact against torch.ao over several training steps."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qcore.fake_quant as fq
import qcore.observers as qobs
from qcore import dtypes
from qcore.dtypes import QDType, QScheme, to_torch_dtype, to_torch_qscheme
from qcore.errors import ConfigError
from qcore.factory import Factory

ao_fq = pytest.importorskip("torch.ao.quantization.fake_quantize")
ao_obs = pytest.importorskip("torch.ao.quantization.observer")

torch.set_num_threads(1)

# (observer enabled, fake-quant enabled) per step: observe, freeze, bypass, resume.
SCHEDULE = [(1, 1), (1, 1), (0, 1), (1, 0), (0, 0), (1, 1)]


def to_ao(value):
    """The torch.ao counterpart of a qcore configuration value (dtype, qscheme, class, factory)."""
    if isinstance(value, QDType):
        return to_torch_dtype(value)
    if isinstance(value, QScheme):
        return to_torch_qscheme(value)
    if isinstance(value, Factory):
        return to_ao(value.cls).with_args(**{k: to_ao(v) for k, v in value.kwargs})
    if isinstance(value, type) and value.__module__.startswith("qcore."):
        module = ao_fq if issubclass(value, fq.FakeQuantizeBase) else ao_obs
        return getattr(module, value.__name__)
    if isinstance(value, dict):
        return {k: to_ao(v) for k, v in value.items()}
    return value


def ao_build(factory: Factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_ao(factory)()


def step_input(step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Inputs whose range drifts between steps; step 4 is all zeros, step 5 has one constant channel."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(shape, generator=g) * (0.5 + step) + (step - 2) * 0.3
    if step == 4:
        x = torch.zeros(shape)
    if step == 5:
        x[0] = 0.75
    return x


def assert_same_step(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, step: int) -> None:
    """One forward+backward on both modules: outputs, input gradients and qparams must agree bit for bit."""
    xq = x.clone().requires_grad_(True)
    xa = x.clone().requires_grad_(True)
    out_q = ours(xq)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out_a = theirs(xa)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(step))
    (out_q * upstream).sum().backward()
    (out_a * upstream).sum().backward()
    assert torch.equal(out_q, out_a), f"step {step}: outputs differ"
    assert torch.equal(xq.grad, xa.grad), f"step {step}: gradients differ"
    assert torch.equal(ours.scale, theirs.scale), f"step {step}: scale {ours.scale} != {theirs.scale}"
    assert torch.equal(ours.zero_point, theirs.zero_point), f"step {step}: zero_point differs"
    assert ours.zero_point.dtype == theirs.zero_point.dtype


def run_schedule(ours: nn.Module, theirs: nn.Module, shape: tuple[int, ...]) -> None:
    for step, (observe, fake_quant) in enumerate(SCHEDULE):
        for module in (ours, theirs):
            module.enable_observer(bool(observe))
            module.enable_fake_quant(bool(fake_quant))
        assert_same_step(ours, theirs, step_input(step, shape), step)


CONFIGS = {
    "uint8_affine_reduce_range": (qobs.MovingAverageMinMaxObserver, dict(quant_min=0, quant_max=255, dtype=dtypes.uint8, reduce_range=True)),
    "int8_symmetric": (qobs.MovingAverageMinMaxObserver, dict(quant_min=-128, quant_max=127, dtype=dtypes.int8, qscheme=QScheme.PER_TENSOR_SYMMETRIC)),
    "int8_affine_reduce_range": (qobs.MovingAverageMinMaxObserver, dict(dtype=dtypes.int8, reduce_range=True, averaging_constant=0.3)),
    "uint8_symmetric": (qobs.MovingAverageMinMaxObserver, dict(dtype=dtypes.uint8, qscheme=QScheme.PER_TENSOR_SYMMETRIC)),
    "uint4_range_in_uint8": (qobs.MovingAverageMinMaxObserver, dict(quant_min=0, quant_max=15, dtype=dtypes.uint8)),
    "int4_range_in_int8": (qobs.MovingAverageMinMaxObserver, dict(quant_min=-8, quant_max=7, dtype=dtypes.int8, qscheme=QScheme.PER_TENSOR_SYMMETRIC)),
    "minmax_observer": (qobs.MinMaxObserver, dict(dtype=dtypes.uint8)),
    "histogram": (qobs.HistogramObserver, dict(quant_min=0, quant_max=255, dtype=dtypes.uint8, reduce_range=True)),
    "per_channel_sym_axis0": (qobs.MovingAveragePerChannelMinMaxObserver, dict(quant_min=-128, quant_max=127, dtype=dtypes.int8, qscheme=QScheme.PER_CHANNEL_SYMMETRIC, ch_axis=0)),
    "per_channel_affine_axis1": (qobs.MovingAveragePerChannelMinMaxObserver, dict(dtype=dtypes.uint8, qscheme=QScheme.PER_CHANNEL_AFFINE, ch_axis=1, averaging_constant=0.5)),
    "per_channel_sym_axis3_reduce": (qobs.PerChannelMinMaxObserver, dict(dtype=dtypes.int8, qscheme=QScheme.PER_CHANNEL_SYMMETRIC, ch_axis=3, reduce_range=True)),
    "per_channel_float_qparams": (qobs.MovingAveragePerChannelMinMaxObserver, dict(dtype=dtypes.uint8, qscheme=QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS, ch_axis=0, averaging_constant=1)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fake_quantize_matches_torch_ao_over_steps(name):
    observer, kwargs = CONFIGS[name]
    factory = fq.FakeQuantize.with_args(observer=observer, **kwargs)
    ours, theirs = factory(), ao_build(factory)
    assert (ours.quant_min, ours.quant_max, ours.ch_axis) == (theirs.quant_min, theirs.quant_max, theirs.ch_axis)
    assert ours.is_per_channel == theirs.is_per_channel
    assert to_torch_qscheme(ours.qscheme) == theirs.qscheme and to_torch_dtype(ours.dtype) == theirs.dtype
    run_schedule(ours, theirs, (4, 3, 5, 6))
    q_scale, q_zp = ours.calculate_qparams()
    a_scale, a_zp = theirs.calculate_qparams()
    assert torch.equal(q_scale, a_scale) and torch.equal(q_zp, a_zp)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    magnitude=st.sampled_from([1e-6, 1e-3, 1.0, 50.0, 1e4]),
    shift=st.floats(-3, 3),
    symmetric=st.booleans(),
    signed=st.booleans(),
)
def test_fake_quantize_property_matches_torch_ao(seed, magnitude, shift, symmetric, signed):
    qscheme = QScheme.PER_TENSOR_SYMMETRIC if symmetric else QScheme.PER_TENSOR_AFFINE
    factory = fq.FakeQuantize.with_args(
        observer=qobs.MovingAverageMinMaxObserver, dtype=dtypes.int8 if signed else dtypes.uint8, qscheme=qscheme
    )
    ours, theirs = factory(), ao_build(factory)
    g = torch.Generator().manual_seed(seed)
    for step in range(3):
        x = (torch.randn(7, 9, generator=g) + shift) * magnitude
        assert_same_step(ours, theirs, x, step)


@pytest.mark.parametrize("name", ["default_fixed_qparams_range_neg1to1_fake_quant", "default_fixed_qparams_range_0to1_fake_quant"])
def test_fixed_qparams_fake_quantize_matches_torch_ao(name):
    ours = getattr(fq, name)()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(ao_fq, name)()
    assert ours.scale is ours.activation_post_process.scale
    run_schedule(ours, theirs, (3, 50))
    assert torch.equal(ours.calculate_qparams()[0], theirs.calculate_qparams()[0])
    assert "scale=tensor([0.0078" in repr(ours) or "scale=tensor([0.0039" in repr(ours)


DEFAULT_NAMES = [
    "default_fake_quant",
    "default_weight_fake_quant",
    "default_dynamic_fake_quant",
    "default_per_channel_weight_fake_quant",
    "default_embedding_fake_quant",
    "default_embedding_fake_quant_4bit",
    "default_histogram_fake_quant",
    "default_fused_act_fake_quant",
    "default_fused_wt_fake_quant",
    "default_fused_per_channel_wt_fake_quant",
    "fused_wt_fake_quant_range_neg_127_to_127",
    "fused_per_channel_wt_fake_quant_range_neg_127_to_127",
    "default_fixed_qparams_range_neg1to1_fake_quant",
    "default_fixed_qparams_range_0to1_fake_quant",
    "default_symmetric_fixed_qparams_fake_quant",
    "default_affine_fixed_qparams_fake_quant",
]


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_named_defaults_match_torch_ao(name):
    factory = getattr(fq, name)
    assert isinstance(factory, Factory)
    ours = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(ao_fq, name)()
    assert type(ours).__name__ == type(theirs).__name__
    assert (ours.quant_min, ours.quant_max, ours.ch_axis, ours.is_dynamic) == (
        theirs.quant_min, theirs.quant_max, theirs.ch_axis, theirs.is_dynamic
    )
    assert to_torch_dtype(ours.dtype) == theirs.dtype and to_torch_qscheme(ours.qscheme) == theirs.qscheme
    for step in range(3):
        assert_same_step(ours, theirs, step_input(step, (6, 8)), step)


def test_per_channel_state_dict_from_torch_ao_resizes_qparams():
    """A torch.ao per-channel module saved after training loads into a fresh qcore module ([1] -> [C])."""
    factory = fq.default_per_channel_weight_fake_quant
    theirs = ao_build(factory)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs(step_input(0, (5, 4)))
    ours = factory()
    assert ours.scale.shape == (1,)
    result = ours.load_state_dict(theirs.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(ours.scale, theirs.scale) and torch.equal(ours.zero_point, theirs.zero_point)
    for module in (ours, theirs):
        module.disable_observer()
    assert_same_step(ours, theirs, step_input(1, (5, 4)), 1)


def test_state_dict_round_trip_keeps_flags_and_qparams():
    source = fq.default_fake_quant()
    source(step_input(0, (3, 3)))
    source.disable_observer()
    target = fq.default_fake_quant()
    target.load_state_dict(source.state_dict())
    assert int(target.observer_enabled[0]) == 0 and int(target.fake_quant_enabled[0]) == 1
    assert torch.equal(target.scale, source.scale) and torch.equal(target.zero_point, source.zero_point)
    x = step_input(2, (3, 3))
    assert torch.equal(target(x), source(x))


def test_module_level_switches_reach_every_fake_quant_in_a_model():
    model = nn.Sequential(nn.Linear(3, 3), fq.default_fake_quant(), nn.Sequential(fq.default_fused_act_fake_quant()))
    fakes = [m for m in model.modules() if isinstance(m, fq.FakeQuantizeBase)]
    model.apply(fq.disable_observer)
    model.apply(fq.disable_fake_quant)
    assert all(int(m.observer_enabled[0]) == 0 and int(m.fake_quant_enabled[0]) == 0 for m in fakes)
    x = torch.randn(2, 3)
    assert torch.equal(model[1](x), x)
    model.apply(fq.enable_observer)
    model.apply(fq.enable_fake_quant)
    assert all(int(m.observer_enabled[0]) == 1 and int(m.fake_quant_enabled[0]) == 1 for m in fakes)
    assert fakes[1].fake_quant_enabled.dtype == torch.long and fakes[0].fake_quant_enabled.dtype == torch.uint8


def test_with_args_and_registry_names():
    factory = fq.FakeQuantize.with_args(observer=qobs.MinMaxObserver, dtype=dtypes.int8)
    assert isinstance(factory, Factory) and factory.cls is fq.FakeQuantize
    assert factory.with_args(quant_min=-8, quant_max=7)().quant_max == 7
    by_name = fq.FakeQuantize(observer="moving_average_minmax", dtype=dtypes.int8)
    assert isinstance(by_name.activation_post_process, qobs.MovingAverageMinMaxObserver)
    assert fq.CORE_FAKE_QUANTIZERS == {
        "fake_quantize": fq.FakeQuantize,
        "fixed_qparams_fake_quantize": fq.FixedQParamsFakeQuantize,
        "fused_moving_avg_obs_fake_quantize": fq.FusedMovingAvgObsFakeQuantize,
    }
    text = repr(fq.default_per_channel_weight_fake_quant())
    for field in ("fake_quant_enabled=", "quant_min=-128", "quant_max=127", "ch_axis=0", "scale=", "zero_point="):
        assert field in text


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: fq.FakeQuantize(quant_min=0, quant_max=300), "outside uint8's range"),
        (lambda: fq.FakeQuantize(quant_min=-128, quant_max=127, dtype=dtypes.uint8), "outside uint8's range"),
        (lambda: fq.FakeQuantize(observer=qobs.MinMaxObserver.with_args(dtype=dtypes.int8), quant_min=-8, quant_max=200), "outside int8's range"),
        (lambda: fq.FakeQuantize(quant_min=10, quant_max=5), "swap them"),
        (lambda: fq.FakeQuantize(quant_min=0), "set both quant_min and quant_max"),
        (lambda: fq.FakeQuantize(observer=nn.ReLU), "not an observer"),
        (lambda: fq.FakeQuantize(observer=qobs.MinMaxObserver()), "instead of MinMaxObserver()"),
        (lambda: fq.FakeQuantize(observer=qobs.MovingAverageMinMaxObserver, qscheme=QScheme.PER_CHANNEL_SYMMETRIC), "FakeQuantize"),
        (lambda: fq.FakeQuantize(observer=qobs.MovingAverageMinMaxObserver, no_such_option=1), "FakeQuantize"),
        (lambda: fq.FixedQParamsFakeQuantize(observer=qobs.MovingAverageMinMaxObserver), "must be a FixedQParamsObserver"),
        (lambda: fq.FusedMovingAvgObsFakeQuantize(observer=qobs.HistogramObserver), "moving-average min/max observer"),
        (lambda: fq.FusedMovingAvgObsFakeQuantize(dtype=dtypes.int8), "pass quant_min/quant_max"),
        (lambda: fq.FusedMovingAvgObsFakeQuantize(observer=qobs.MovingAveragePerChannelMinMaxObserver, qscheme=QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS), "integer zero points"),
        (lambda: fq.FakeQuantize(observer=qobs.PlaceholderObserver, dtype=torch.float16), "float"),
    ],
)
def test_bad_configuration_raises_config_error(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


@pytest.mark.parametrize("weight_name", ["default_weight_fake_quant", "default_per_channel_weight_fake_quant"])
def test_qat_loop_on_digits_gives_torch_aos_losses(weight_name):
    """A linear classifier on sklearn's digits, trained a few SGD steps with fake-quantized input and weight."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:400] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:400])

    def train(act, weight):
        torch.manual_seed(0)
        linear = nn.Linear(64, 10)
        optimizer = torch.optim.SGD(linear.parameters(), lr=0.5)
        losses = []
        for step in range(6):
            if step == 4:
                act.disable_observer()
                weight.disable_observer()
            optimizer.zero_grad()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss = nn.functional.cross_entropy(nn.functional.linear(act(x), weight(linear.weight), linear.bias), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses), linear.weight.detach().clone()

    ours = train(fq.default_fake_quant(), getattr(fq, weight_name)())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = train(ao_fq.default_fake_quant(), getattr(ao_fq, weight_name)())
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])
    assert ours[0][-1] < ours[0][0]
