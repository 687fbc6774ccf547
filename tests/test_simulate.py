"""simulate_quantization: copies the model, puts values on the quantization grid, agrees with torch.ao."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qcore.errors import ConfigError
from qcore.flow.simulate import ObserveThenFakeQuantize, SimulatedModel, SimulatedModule, simulate_quantization
from qcore.observers import MinMaxObserver, PerChannelMinMaxObserver
from qcore.qconfig import QConfig, default_dynamic_qconfig, default_qat_qconfig, float16_static_qconfig

PER_TENSOR = QConfig(
    activation=MinMaxObserver.with_args(dtype=torch.quint8),
    weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
)
PER_CHANNEL = QConfig(
    activation=MinMaxObserver.with_args(dtype=torch.quint8),
    weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
)


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3)
    ).eval()


def calibration(seed: int = 1, batches: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(5, 1, 6, 6, generator=generator) for _ in range(batches)]


def on_grid(y: torch.Tensor, quantizer: ObserveThenFakeQuantize) -> bool:
    """Whether every value is scale * (q - zero_point) for an integer q in the quantizer's range."""
    shape = [1] * y.dim()
    if quantizer.axis is not None:
        shape[quantizer.axis] = -1
    scale = quantizer.scale.reshape(shape).double()
    zero_point = quantizer.zero_point.reshape(shape).double()
    q = y.double() / scale + zero_point
    return bool(((q - q.round()).abs() < 1e-3).all() and (q.round() >= quantizer.quant_min).all()
                and (q.round() <= quantizer.quant_max).all())


@pytest.mark.parametrize("qconfig", [PER_TENSOR, PER_CHANNEL], ids=["per_tensor", "per_channel"])
def test_the_callers_model_is_left_alone(qconfig):
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = calibration(seed=7)[0]
    expected = model(x)
    simulated = simulate_quantization(model, qconfig, calibration())
    assert [type(m) for m in model] == [nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(model(x), expected)
    assert isinstance(simulated, SimulatedModel) and not simulated.training
    got = simulated(x)
    assert not torch.equal(got, expected)
    assert torch.allclose(got, expected, atol=0.1)


def test_inplace_swaps_the_callers_modules():
    model = small_model()
    simulated = simulate_quantization(model, PER_TENSOR, calibration(), inplace=True)
    assert simulated.model is model
    assert [type(m) for m in model] == [SimulatedModule, nn.ReLU, nn.Flatten, SimulatedModule, nn.ReLU, SimulatedModule]


@pytest.mark.parametrize("qconfig", [PER_TENSOR, PER_CHANNEL], ids=["per_tensor", "per_channel"])
def test_inputs_weights_and_outputs_lie_on_their_grids(qconfig):
    simulated = simulate_quantization(small_model(), qconfig, calibration())
    seen: list[tuple[torch.Tensor, ObserveThenFakeQuantize]] = []
    for module in simulated.modules():
        if isinstance(module, ObserveThenFakeQuantize):
            assert module.frozen
            module.register_forward_hook(lambda m, args, out: seen.append((out, m)))
    x = calibration(seed=9)[0] * 1.5  # partly outside the calibrated range: clamped to the grid's ends
    y = simulated(x)
    roles = [quantizer.role for _, quantizer in seen]
    assert roles == ["input"] + ["weight", "activation"] * 3
    for out, quantizer in seen:
        assert on_grid(out, quantizer), quantizer
    per_channel = [q for _, q in seen if q.role == "weight" and q.axis is not None]
    assert len(per_channel) == (3 if qconfig is PER_CHANNEL else 0)
    assert torch.equal(y, seen[-1][0])


def test_a_single_linear_model_is_simulated_too():
    torch.manual_seed(0)
    simulated = simulate_quantization(nn.Linear(4, 2), PER_TENSOR, [torch.randn(8, 4)])
    assert isinstance(simulated.model, SimulatedModule)
    assert on_grid(simulated(torch.randn(3, 4)), simulated.model.output_fake_quant)


def test_calibration_batches_may_be_input_target_pairs():
    data = [(x, torch.zeros(len(x), dtype=torch.int64)) for x in calibration()]
    by_pairs = simulate_quantization(small_model(), PER_TENSOR, data)
    by_inputs = simulate_quantization(small_model(), PER_TENSOR, calibration())
    x = calibration(seed=3)[0]
    assert torch.equal(by_pairs(x), by_inputs(x))


@pytest.mark.parametrize("qconfig, message", [
    (None, "needs a qconfig"),
    (types.SimpleNamespace(activation=None, weight=MinMaxObserver), "has no activation"),
    (types.SimpleNamespace(activation=MinMaxObserver, weight=None), "has no weight"),
    (float16_static_qconfig, "integer dtypes only"),
    (default_dynamic_qconfig, "static quantization only"),
    (QConfig(activation=nn.Identity, weight=MinMaxObserver), "computes no qparams"),
])
def test_qconfigs_it_cannot_simulate_are_refused(qconfig, message):
    with pytest.raises(ConfigError, match=message):
        simulate_quantization(small_model(), qconfig, calibration())


def test_nothing_to_simulate_and_no_calibration_are_refused():
    with pytest.raises(ConfigError, match="no Conv1d/Conv2d/Conv3d/Linear"):
        simulate_quantization(nn.Sequential(nn.ReLU()), PER_TENSOR, calibration())
    with pytest.raises(ConfigError, match="no batches"):
        simulate_quantization(small_model(), PER_TENSOR, [])


def test_a_fake_quant_qconfig_contributes_its_observer():
    simulated = simulate_quantization(small_model(), default_qat_qconfig, calibration())
    quantizers = [m for m in simulated.modules() if isinstance(m, ObserveThenFakeQuantize)]
    assert len(quantizers) == 7 and all(q.frozen for q in quantizers)
    assert on_grid(simulated(calibration(seed=5)[0]), quantizers[-1])


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), per_channel=st.booleans(), spread=st.floats(0.05, 20.0))
def test_agrees_with_torch_ao_observers_and_fake_quantize_ops(seed, per_channel, spread):
    """Oracle: torch.ao's observers on the float model's activations, torch's fake-quantize ops; bit for bit."""
    ao = pytest.importorskip("torch.ao.quantization")
    model = small_model(seed)
    data = [batch * spread for batch in calibration(seed + 1)]
    x = calibration(seed + 2)[0] * spread
    simulated = simulate_quantization(model, PER_CHANNEL if per_channel else PER_TENSOR, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear))]
        act_obs = [ao.MinMaxObserver(dtype=torch.quint8) for _ in range(len(layers) + 1)]
        hooks = [layer.register_forward_hook(lambda m, a, out, o=o: o(out)) for layer, o in zip(layers, act_obs[1:])]
        with torch.no_grad():
            for batch in data:
                model(act_obs[0](batch))
        for hook in hooks:
            hook.remove()

        def fq_act(t, observer):
            scale, zero_point = observer.calculate_qparams()
            return torch.fake_quantize_per_tensor_affine(t, float(scale), int(zero_point), 0, 255)

        def fq_weight(w):
            if per_channel:
                observer = ao.PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
                observer(w)
                scale, zero_point = observer.calculate_qparams()
                return torch.fake_quantize_per_channel_affine(w, scale, zero_point.int(), 0, -128, 127)
            observer = ao.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
            observer(w)
            scale, zero_point = observer.calculate_qparams()
            return torch.fake_quantize_per_tensor_affine(w, float(scale), int(zero_point), -128, 127)

        with torch.no_grad():
            expected, observed = fq_act(x, act_obs[0]), iter(act_obs[1:])
            for module in model:
                if isinstance(module, nn.Conv2d):
                    expected = fq_act(module._conv_forward(expected, fq_weight(module.weight), module.bias), next(observed))
                elif isinstance(module, nn.Linear):
                    expected = fq_act(nn.functional.linear(expected, fq_weight(module.weight), module.bias), next(observed))
                else:
                    expected = module(expected)
            got = simulated(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
