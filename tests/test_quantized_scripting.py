"""TorchScript twins: ``torch.jit.script`` of a converted model takes and returns floats equal to the eager model's.

Also: the scripted output quantizer is bit-exact with qcore.affine, and the
eager model keeps working (forward, state_dict, load_state_dict) after
``torch.jit.script`` swapped twins into it.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
from qcore import affine, dtypes
from qcore.errors import QuantizationError
from qcore.nn.intrinsic.quantized.conv_relu import ConvReLU2d
from qcore.nn.intrinsic.quantized.linear_relu import LinearReLU
from qcore.nn.quantized.base import QuantizedModule
from qcore.nn.quantized.conv import Conv1d, Conv2d, ConvTranspose2d
from qcore.nn.quantized.linear import Linear
from qcore.nn.quantized.quant_dequant import DeQuantize, Quantize
from qcore.nn.quantized.scripting import FakeQuantizeTwin, PassThroughTwin, ScriptableTwin, fake_quantize_output
from qcore.observers import MinMaxObserver, default_per_channel_weight_observer
from qcore.qconfig import QConfig
from qcore.qtensor import QTensor

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated; scripting is what is tested
    SCRIPTED_FQ = torch.jit.script(fake_quantize_output)


def eager_fake_quantize(y, scale, zero_point, qmin, qmax, storage):
    q = affine.quantize_affine(y, scale, zero_point, qmin, qmax, storage)
    return affine.dequantize_affine(q, scale, zero_point)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


@settings(**SETTINGS)
@example(scale=1.0, signed=True, zp_offset=1, narrow=False, seed=0)  # zero point 0: no -0.0 may come out
@given(
    scale=st.floats(1e-4, 10.0, allow_nan=False, allow_infinity=False),
    signed=st.booleans(),
    zp_offset=st.integers(-20, 20),
    narrow=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fake_quantize_output_is_bit_exact_with_affine(scale, signed, zp_offset, narrow, seed):
    d = dtypes.int8 if signed else dtypes.uint8
    qmin, qmax = (d.quant_min // 2, d.quant_max // 2) if narrow else (d.quant_min, d.quant_max)
    zp = min(max((qmin + qmax) // 2 + zp_offset, qmin), qmax)
    s = torch.tensor(scale, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(qmin - zp - 10, qmax - zp + 10, (400,), generator=g).to(torch.float32)
    ties = (k + 0.5) * s  # exact halves of the grid (and their float32 neighbours below)
    values = torch.cat([ties, torch.nextafter(ties, torch.zeros_like(ties)), torch.randn(400, generator=g) * s * 100])
    expected = eager_fake_quantize(values, s, zp, qmin, qmax, d.storage)
    zp_t = torch.tensor(zp)
    assert same_bits(fake_quantize_output(values, s, zp_t, qmin, qmax), expected)
    assert same_bits(SCRIPTED_FQ(values, s, zp_t, qmin, qmax), expected)


# --- a converted model built from the static modules -----------------------------------------------------------


def observe(module: nn.Module, qconfig: QConfig, x: torch.Tensor) -> torch.Tensor:
    """Attach qconfig and a calibrated output observer (what prepare + calibration do); return the float output."""
    module.qconfig = qconfig
    module.activation_post_process = qconfig.activation()
    with torch.no_grad():
        y = module(x)
    module.activation_post_process(y)
    return y


def converted_model(int8_activations: bool = False) -> tuple[nn.Sequential, torch.Tensor]:
    torch.manual_seed(0)
    if int8_activations:
        act = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    else:
        act = MinMaxObserver.with_args(dtype=torch.quint8)
    qconfig = QConfig(activation=act, weight=default_per_channel_weight_observer)
    x = torch.randn(4, 2, 8, 8)
    stub = nn.Identity()
    stub.activation_post_process = act()
    stub.activation_post_process(x)
    conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
    fused = qcore.nn.intrinsic.ConvReLU2d(nn.Conv2d(4, 4, 3, groups=2), nn.ReLU())
    up = nn.ConvTranspose2d(4, 3, 2, stride=2)
    linear = nn.Linear(3 * 6 * 6, 10)
    fused_linear = qcore.nn.intrinsic.LinearReLU(nn.Linear(10, 6), nn.ReLU())
    h = observe(conv, qconfig, x)
    h = observe(fused, qconfig, h)
    h = F.max_pool2d(h, 2)
    h = observe(up, qconfig, h)
    h = observe(linear, qconfig, h.flatten(1))
    observe(fused_linear, qconfig, h)
    model = nn.Sequential(
        Quantize.from_float(stub),
        Conv2d.from_float(conv),
        ConvReLU2d.from_float(fused),
        nn.MaxPool2d(2),
        ConvTranspose2d.from_float(up),
        nn.Flatten(),
        Linear.from_float(linear),
        LinearReLU.from_float(fused_linear),
        DeQuantize(),
    )
    return model, x


@pytest.mark.parametrize("int8_activations", [False, True])
def test_scripted_model_equals_eager_dequantized_output(int8_activations):
    model, x = converted_model(int8_activations)
    eager = model(x)
    assert not isinstance(eager, QTensor) and eager.dtype == torch.float32
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    for other in (scripted, loaded):
        assert torch.equal(other(x), eager)
    y = torch.randn(2, 2, 8, 8) * 3  # outside the calibration range: clamping must agree too
    assert torch.equal(loaded(y), model(y))


def test_eager_model_keeps_working_after_scripting():
    model, x = converted_model()
    before = model(x)
    state = copy.deepcopy(model.state_dict())
    torch.jit.script(model)  # torch swaps twins into model._modules
    assert isinstance(model[1], ScriptableTwin)
    hidden = model[1](model[0](x))
    assert isinstance(hidden, QTensor)  # eager twins run the quantized module itself
    assert torch.equal(model(x), before)
    after = model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items() if isinstance(v, torch.Tensor))
    with pytest.raises(QuantizationError, match="expected a quantized input"):
        model[1](x)
    assert "scale=" in repr(model[1])


def test_load_state_dict_after_scripting_reaches_the_twins():
    model, x = converted_model()
    other, _ = converted_model()
    torch.jit.script(model)
    state = other.state_dict()
    state["6.bias"] = state["6.bias"] + 1.0
    state["6.scale"] = state["6.scale"] * 2
    result = model.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    fresh, _ = converted_model()
    fresh.load_state_dict(state)
    expected = fresh(x)
    assert torch.equal(model(x), expected)
    assert torch.equal(torch.jit.script(model)(x), expected)


def test_scripting_single_modules_and_conv1d():
    torch.manual_seed(0)
    qconfig = QConfig(activation=MinMaxObserver, weight=default_per_channel_weight_observer)
    conv = nn.Conv1d(3, 5, 3, stride=2, padding=2, dilation=2, padding_mode="circular")
    x = torch.randn(2, 3, 12)
    observe(conv, qconfig, x)
    qconv = Conv1d.from_float(conv)
    xq = qcore.quantize_per_tensor(x, 0.03, 128, "uint8")
    scripted = torch.jit.script(qconv)
    assert torch.equal(scripted(xq.dequantize()), qconv(xq).dequantize())


def test_free_standing_twins_and_missing_twin_error():
    twin = FakeQuantizeTwin(torch.tensor(0.1), torch.tensor(5), 0, 255)
    x = torch.linspace(-2, 30, 50)
    assert torch.equal(torch.jit.script(twin)(x), twin(x))
    assert torch.equal(twin(x), qcore.quantize_per_tensor(x, 0.1, 5, "uint8").dequantize())
    pool = torch.jit.script(PassThroughTwin(nn.MaxPool1d(2)))
    assert torch.equal(pool(x.reshape(1, 1, -1)), F.max_pool1d(x.reshape(1, 1, -1), 2))

    class NoTwin(QuantizedModule):
        def forward(self, x):
            return self._quantize_output(self._dequantized_input(x))

    with pytest.raises(QuantizationError, match="has no TorchScript form"):
        torch.jit.script(nn.Sequential(NoTwin()))
