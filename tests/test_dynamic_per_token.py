"""Per-token dynamic activations on the reference backend: settings, qconfig, reference numerics, modules.

The reference functions are checked against a float64 simulation: every
float32 step (subtraction, division, multiplication, addition) is computed in
float64 and rounded to float32, which equals the float32 operation exactly
(float64 has more than twice float32's precision, so the double rounding is
innocuous), and the integer sums are exact in float64.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
import qcore.fx as qfx
from qcore import QConfigMapping
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized import dynamic as qd
from qcore.nn.quantized.dynamic.functional import (
    PER_TOKEN_EPS,
    choose_per_token_qparams,
    linear_dynamic_per_token,
    quantize_per_token,
)
from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")
SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U = 2.0**-24  # float32 unit roundoff


def f32(t: torch.Tensor) -> torch.Tensor:
    """Round float64 values to float32 and back: one float32 operation's rounding."""
    return t.to(torch.float32).to(torch.float64)


def simulate_qparams(x: torch.Tensor):
    """choose_per_token_qparams in float64, rounding to float32 after every step."""
    x64 = x.to(torch.float64)
    lo = x64.amin(-1, keepdim=True).clamp(max=0.0)
    hi = x64.amax(-1, keepdim=True).clamp(min=0.0)
    scale = f32(f32(hi - lo) / 255.0).clamp(min=PER_TOKEN_EPS)
    zero_point = torch.round(f32(-lo / scale))
    return scale, zero_point


def simulate_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (torch.round(f32(x.to(torch.float64) / scale)) + zero_point).clamp(0, 255)


def rows_strategy():
    """A 2-d float32 input: rows of mixed signs and spreads, some all-zero, some one-signed, with ties."""

    @st.composite
    def build(draw):
        rows, cols = draw(st.integers(1, 8)), draw(st.integers(1, 40))
        seed = draw(st.integers(0, 2**16))
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(rows, cols, generator=g) * torch.tensor(
            [draw(st.sampled_from([1e-30, 1e-6, 0.01, 1.0, 300.0, 1e30])) for _ in range(rows)]
        ).unsqueeze(1)
        kind = draw(st.sampled_from(["mixed", "positive", "negative", "zero_row", "integers"]))
        if kind == "positive":
            x = x.abs()
        elif kind == "negative":
            x = -x.abs()
        elif kind == "zero_row":
            x[0] = 0.0
        elif kind == "integers":  # exact ties x / scale = n + 0.5
            x = torch.randint(-255, 256, (rows, cols), generator=g).to(torch.float32) / 2
        return x

    return build()


# --- settings, observer, qconfig ------------------------------------------------------------------------------


def test_settings_accept_only_int8_weights_and_full_range_uint8():
    ok = DynamicQuantSettings("int8", reduce_range=False, per_token=True)
    assert ok.per_token and ok.quant_range == (0, 255)
    assert not DynamicQuantSettings("int8").per_token
    with pytest.raises(ConfigError, match="reduce_range=True .* does not apply"):
        DynamicQuantSettings("int8", per_token=True)  # the per-tensor default halves the range
    with pytest.raises(ConfigError, match="needs int8 weights, not float16"):
        DynamicQuantSettings("float16", reduce_range=False, per_token=True)
    with pytest.raises(ConfigError, match=r"uint8 over the full \[0, 255\], not int8"):
        DynamicQuantSettings("int8", act_dtype="int8", reduce_range=False, per_token=True)
    with pytest.raises(ConfigError, match=r"not uint8 \[0, 127\]"):
        DynamicQuantSettings("int8", act_quant_min=0, act_quant_max=127, reduce_range=False, per_token=True)


def test_placeholder_observer_and_named_qconfig():
    observer = qcore.per_token_dynamic_quant_observer()
    assert isinstance(observer, qcore.PlaceholderObserver) and observer.per_token and observer.is_dynamic
    assert "per_token=True" in repr(observer) and "per_token" not in repr(qcore.default_dynamic_quant_observer())
    assert not qcore.default_dynamic_quant_observer().per_token
    with pytest.raises(ConfigError, match="is_dynamic=True"):
        qcore.PlaceholderObserver(dtype=torch.quint8, per_token=True)
    with pytest.raises(ConfigError, match="integer dtype"):
        qcore.PlaceholderObserver(dtype=torch.float16, is_dynamic=True, per_token=True)
    qconfig = qcore.per_token_dynamic_qconfig
    assert qconfig.activation is qcore.per_token_dynamic_quant_observer
    assert qconfig.weight == qcore.default_per_channel_weight_observer
    assert qcore.QConfig.from_dict(qconfig.to_dict()) == qconfig


# --- the reference functions ---------------------------------------------------------------------------------


@settings(**SETTINGS)
@given(rows_strategy())
def test_qparams_and_codes_equal_the_float64_simulation(x):
    scale, zero_point = choose_per_token_qparams(x)
    assert scale.dtype == zero_point.dtype == torch.float32 and scale.shape == zero_point.shape == (x.shape[0], 1)
    want_scale, want_zp = simulate_qparams(x)
    assert torch.equal(scale.to(torch.float64), want_scale)
    assert torch.equal(zero_point.to(torch.float64), want_zp)
    assert bool(((zero_point >= 0) & (zero_point <= 255)).all())
    assert not bool(torch.signbit(zero_point).any())  # +0.0, never -0.0
    q = quantize_per_token(x, scale, zero_point)
    assert q.dtype == torch.uint8
    assert torch.equal(q.to(torch.float64), simulate_codes(x, scale.to(torch.float64), want_zp))
    # Zero is exact, and every value is within half a step of its dequantized code.
    zeros = quantize_per_token(torch.zeros_like(x), scale, zero_point)
    assert torch.equal(zeros.to(torch.float32), zero_point.expand_as(x))
    err = ((q.to(torch.float64) - zero_point) * scale - x.to(torch.float64)).abs()
    assert bool((err <= scale.to(torch.float64) * (0.5 + 1e-5)).all())


@settings(**SETTINGS)
@given(rows_strategy(), st.integers(1, 12), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_linear_equals_the_float64_simulation(x, n, per_channel, with_bias, seed):
    g = torch.Generator().manual_seed(seed)
    k = x.shape[1]
    w = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    w_scale = (torch.rand(n if per_channel else (), generator=g, dtype=torch.float64) + 0.01) * 0.1
    bias = torch.randn(n, generator=g) if with_bias else None
    y = linear_dynamic_per_token(x, w, w_scale, bias)
    scale, zp = simulate_qparams(x)
    acc = (simulate_codes(x, scale, zp) - zp) @ w.to(torch.float64).t()  # exact
    want = f32(f32(f32(acc) * scale) * f32(w_scale))
    if bias is not None:
        want = f32(want + bias.to(torch.float64))
    assert y.dtype == torch.float32 and torch.equal(y.to(torch.float64), want)


def test_linear_shapes_dtypes_and_special_inputs():
    torch.manual_seed(1)
    w = torch.randint(-63, 64, (5, 7), dtype=torch.int8)
    w_scale, bias = torch.rand(5, dtype=torch.float64), torch.randn(5)
    x = torch.randn(2, 3, 7)
    y = linear_dynamic_per_token(x, w, w_scale, bias)
    assert y.shape == (2, 3, 5) and torch.equal(y, linear_dynamic_per_token(x.reshape(6, 7), w, w_scale, bias).reshape(2, 3, 5))
    assert torch.equal(linear_dynamic_per_token(x.double(), w, w_scale, bias), y.double())
    assert linear_dynamic_per_token(x.half(), w, w_scale, bias).dtype == torch.float16
    assert torch.equal(linear_dynamic_per_token(torch.zeros(4, 7), w, w_scale, bias), bias.expand(4, 5))  # all-zero tokens
    empty = linear_dynamic_per_token(torch.zeros(0, 3, 7), w, w_scale, bias)
    assert empty.shape == (0, 3, 5)
    assert linear_dynamic_per_token(torch.zeros(0, 7), w, w_scale, None).shape == (0, 5)
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.randn(3, 7)
        x[1, 2] = bad
        with pytest.raises(QuantizationError, match="NaN or infinite"):
            linear_dynamic_per_token(x, w, w_scale, bias)
    huge = torch.tensor([[3e38, -3e38] + [0.0] * 5])  # finite, but the range overflows float32
    with pytest.raises(QuantizationError, match="exceeds float32"):
        linear_dynamic_per_token(huge, w, w_scale, bias)


def test_per_token_beats_per_tensor_when_one_token_is_an_outlier():
    torch.manual_seed(2)
    lin = nn.Linear(32, 16)
    x = torch.randn(8, 32)
    x[0] *= 100.0  # one outlier token sets a per-tensor step far too coarse for the others
    per_tensor, per_token = _linear(lin, qcore.per_channel_dynamic_qconfig, reduce_range=False), _linear(lin, qcore.per_token_dynamic_qconfig)
    want = lin(x)
    err_tensor = (per_tensor(x) - want)[1:].abs().max()
    err_token = (per_token(x) - want)[1:].abs().max()
    assert err_token * 20 < err_tensor


# --- modules ---------------------------------------------------------------------------------------------------


def _linear(float_mod: nn.Module, qconfig, cls=qd.Linear, **kwargs) -> nn.Module:
    mod = copy.deepcopy(float_mod)
    mod.qconfig = qconfig
    return cls.from_float(mod, **kwargs)


def test_from_float_repr_and_forward():
    torch.manual_seed(3)
    lin = nn.Linear(10, 6)
    q = _linear(lin, qcore.per_token_dynamic_qconfig)
    assert q.per_token and not q.reduce_range and q.settings.per_token
    assert "per_token=True" in repr(q) and "reduce_range=False" in repr(q)
    assert "per_token" not in repr(_linear(lin, qcore.per_channel_dynamic_qconfig))
    x = torch.randn(4, 3, 10)
    want = linear_dynamic_per_token(x, q.weight().int_repr(), q.weight_scale, q.bias())
    assert torch.equal(q(x), want)
    assert (q(x) - lin(x)).abs().max() < 0.05
    assert torch.equal(torch.jit.script(q)(x), q(x))
    # Per-tensor symmetric int8 weights serve too.
    per_tensor_weights = qcore.QConfig(activation=qcore.per_token_dynamic_quant_observer, weight=qcore.default_weight_observer)
    q1 = _linear(lin, per_tensor_weights)
    assert q1.per_token and int(q1.weight_axis) == -1
    assert torch.equal(q1(x), linear_dynamic_per_token(x, q1.weight().int_repr(), q1.weight_scale, q1.bias()))


def test_linear_relu():
    from qcore.nn.intrinsic import LinearReLU as FusedLinearReLU

    torch.manual_seed(4)
    fused = FusedLinearReLU(nn.Linear(6, 5), nn.ReLU())
    fused.qconfig = qcore.per_token_dynamic_qconfig
    q = qd.LinearReLU.from_float(fused)
    plain = _linear(fused[0], qcore.per_token_dynamic_qconfig)
    x = torch.randn(7, 6)
    assert q.per_token and torch.equal(q(x), F.relu(plain(x)))
    assert torch.equal(torch.jit.script(q)(x), q(x))


def test_weights_that_cannot_serve_per_token_are_refused():
    lin = nn.Linear(4, 3)
    affine = qcore.QConfig(
        activation=qcore.per_token_dynamic_quant_observer,
        weight=qcore.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_affine),
    )
    with torch.no_grad():
        lin.weight.copy_(torch.rand(3, 4) + 0.1)  # all positive: affine zero points are not 0
    with pytest.raises(ConfigError, match="symmetric weights"):
        _linear(lin, affine)
    with pytest.raises(ConfigError, match="reduce_range=True"):
        _linear(lin, qcore.per_token_dynamic_qconfig, reduce_range=True)
    float16 = qcore.QConfig(activation=qcore.per_token_dynamic_quant_observer, weight=qcore.float16_dynamic_qconfig.weight)
    with pytest.raises(ConfigError, match="int8 weights"):
        _linear(lin, float16)
    q = _linear(lin, qcore.per_token_dynamic_qconfig)
    w = qcore.quantize_per_channel(lin.weight.detach(), torch.full((3,), 0.01), torch.full((3,), 5), 0, torch.qint8)
    with pytest.raises(ConfigError, match="symmetric weights"):
        q.set_weight_bias(w, None)
    half = qd.Linear(4, 3, dtype=torch.float16)
    with pytest.raises(ConfigError, match="int8 weights"):
        half.apply_settings(DynamicQuantSettings("int8", reduce_range=False, per_token=True))
    asym = _linear(lin, affine.__class__(activation=qcore.default_dynamic_quant_observer, weight=affine.weight))
    with pytest.raises(ConfigError, match="symmetric weights"):
        asym.apply_settings(DynamicQuantSettings("int8", reduce_range=False, per_token=True))


def test_errors_name_the_module():
    q = _linear(nn.Linear(4, 3), qcore.per_token_dynamic_qconfig)
    q._qcore_name = "encoder.fc"
    with pytest.raises(QuantizationError, match=r"encoder\.fc .*NaN or infinite"):
        q(torch.tensor([[0.0, float("nan"), 1.0, 2.0]]))
    assert q(torch.zeros(0, 4)).shape == (0, 3)


def test_state_dict_round_trip_into_a_fresh_module():
    torch.manual_seed(5)
    q = _linear(nn.Linear(12, 7), qcore.per_token_dynamic_qconfig)
    state = q.state_dict()
    assert state["_extra_state"]["per_token"] is True
    assert "per_token" not in _linear(nn.Linear(12, 7), qcore.per_channel_dynamic_qconfig).state_dict()["_extra_state"]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = qd.Linear(12, 7)  # per tensor, reduce_range=True: the extra state brings per_token back
    fresh.load_state_dict(torch.load(buffer))
    x = torch.randn(3, 12)
    assert fresh.per_token and not fresh.reduce_range and repr(fresh) == repr(q)
    assert torch.equal(fresh(x), q(x))
    # A per-tensor state dict turns per_token off again.
    fresh.load_state_dict(_linear(nn.Linear(12, 7), qcore.per_channel_dynamic_qconfig).state_dict())
    assert not fresh.per_token


def test_qcore_checkpoint_round_trip(tmp_path):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with qcore.backend("reference"):
        q = qcore.quantize_dynamic(model, {nn.Linear: qcore.per_token_dynamic_qconfig})
        qcore.save(q, tmp_path / "m.qcore")
        loaded = qcore.load(tmp_path / "m.qcore", model=copy.deepcopy(model))
    assert [type(m) for m in loaded] == [qd.Linear, nn.ReLU, qd.Linear] and loaded[0].per_token and loaded[2].per_token
    x = torch.randn(5, 8)
    assert torch.equal(loaded(x), q(x))


# --- the flows --------------------------------------------------------------------------------------------------


def test_quantize_dynamic_and_fx_give_per_token_modules():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(6, 8)
    with qcore.backend("reference"):
        eager = qcore.quantize_dynamic(model, {nn.Linear: qcore.per_token_dynamic_qconfig})
        prepared = qfx.prepare_fx(copy.deepcopy(model), QConfigMapping().set_global(qcore.per_token_dynamic_qconfig), (x,))
        graph = qfx.convert_fx(prepared)
    for quantized in (eager, graph):
        linears = [m for m in quantized.modules() if isinstance(m, qd.Linear)]
        assert len(linears) == 2 and all(m.per_token and not m.reduce_range for m in linears)
    assert torch.equal(graph(x), eager(x))
    # Without the per-token observer nothing changes.
    with qcore.backend("reference"):
        plain = qcore.quantize_dynamic(model, {nn.Linear: qcore.per_channel_dynamic_qconfig})
    assert not any(getattr(m, "per_token", False) for m in plain.modules())


def test_recurrent_reference_modules_quantize_their_projections_per_token():
    torch.manual_seed(8)
    lstm = nn.LSTM(6, 5)
    lstm.qconfig = qcore.per_token_dynamic_qconfig
    q = qd.LSTM.from_float(lstm)
    assert all(c.linear_ih.per_token and c.linear_hh.per_token for c in q.cells)
    x = torch.randn(4, 3, 6)
    out, _ = q(x)
    assert (out - lstm(x)[0]).abs().max() < 0.02
