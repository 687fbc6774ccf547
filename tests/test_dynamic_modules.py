"""Dynamic quantized modules (qcore.nn.quantized.dynamic) against torch.ao's, on random and real data."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
from qcore import dtypes
from qcore.errors import ConfigError, QuantizationError
from qcore.qtensor import quantize_per_tensor, quantize_per_tensor_dynamic
from qcore.nn.quantized import dynamic as qd
from qcore.nn.quantized.dynamic.functional import choose_dynamic_qparams, fake_quantize_dynamic

import _helpers
from _helpers import digits_split, fit, oracle

torch.set_num_threads(1)
SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QCONFIG_NAMES = ["default_dynamic_qconfig", "per_channel_dynamic_qconfig", "float16_dynamic_qconfig"]


def ao():
    """torch.ao's dynamic modules and qconfigs (the oracle), or skip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nnqd = pytest.importorskip("torch.ao.nn.quantized.dynamic")
        tq = pytest.importorskip("torch.ao.quantization")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch.ao's dynamic kernels need fbgemm")
    return nnqd, tq


def pair(float_mod: nn.Module, qconfig_name: str, kind: str):
    """(qcore module, torch.ao module) converted from the same float module with the same named qconfig."""
    nnqd, tq = ao()
    mod = copy.deepcopy(float_mod)
    mod.qconfig = getattr(qcore, qconfig_name)
    ours = getattr(qd, kind).from_float(mod)
    mod.qconfig = getattr(tq, qconfig_name)
    theirs = oracle(getattr(nnqd, kind).from_float, mod)
    return ours, theirs


def digits():
    """The digits as 8 rows of 8 pixels."""
    x, y = _helpers.digits()
    return x.reshape(-1, 8, 8), y


def input_step(x: torch.Tensor) -> float:
    """The activation quantization step torch.ao's dynamic linear uses for ``x`` (uint8, reduce_range)."""
    scale, _ = choose_dynamic_qparams(float(x.min()), float(x.max()), 0, 255, True)
    return scale


# --- the reference kernels ----------------------------------------------------------------------


@settings(**SETTINGS)
@given(
    st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=40),
    st.sampled_from([0.0, 1e-6, 1e-3, 1.0, 100.0]),
    st.booleans(),
    st.sampled_from(["uint8", "int8"]),
)
def test_fake_quantize_dynamic_equals_quantize_per_tensor_dynamic(values, spread, reduce_range, dtype):
    x = torch.tensor(values) * spread
    d = dtypes.qdtype(dtype)
    expected = quantize_per_tensor_dynamic(x, d, reduce_range).dequantize()
    got = fake_quantize_dynamic(x, d.quant_min, d.quant_max, reduce_range)
    assert torch.equal(got.view(torch.int32), expected.view(torch.int32))


def test_fake_quantize_dynamic_scripted_is_bit_exact():
    scripted = torch.jit.script(fake_quantize_dynamic)
    g = torch.Generator().manual_seed(0)
    for spread in (1e-7, 1e-2, 1.0, 300.0):
        x = torch.randn(4000, generator=g) * spread + 0.3 * spread
        expected = quantize_per_tensor_dynamic(x, "uint8", True).dequantize()
        assert torch.equal(scripted(x, 0, 255, True), expected)


def test_fake_quantize_dynamic_rounds_ties_like_torch():
    # scale 0.125, zero point 3: x * 8 lands on .5 exactly; the fused add rounds (k + 0.5 + 3) to even.
    x = torch.full((40,), 0.0625 * 5)
    x[0], x[1] = -0.375, 15.5
    q = quantize_per_tensor(x, 0.125, 3, "uint8")
    assert torch.equal(fake_quantize_dynamic(x, 0, 255, True), q.dequantize())


def test_fake_quantize_dynamic_rejects_nan():
    with pytest.raises(QuantizationError, match="NaN"):
        fake_quantize_dynamic(torch.tensor([1.0, float("nan")]), 0, 255, True)


# --- Linear -----------------------------------------------------------------------------------


@pytest.mark.parametrize("qconfig_name", QCONFIG_NAMES)
def test_linear_matches_torch_ao_within_one_step(qconfig_name):
    torch.manual_seed(0)
    lin = nn.Linear(37, 11)
    ours, theirs = pair(lin, qconfig_name, "Linear")
    x_digits = digits()[0][:64].reshape(64, -1)[:, :37]
    for x in (torch.randn(64, 37) * 3, torch.randn(2, 5, 37), x_digits):
        got, want = ours(x), oracle(theirs, x)
        assert got.shape == want.shape and got.dtype == torch.float32
        diff = (got - want).abs().max().item()
        if qconfig_name == "float16_dynamic_qconfig":
            assert diff <= 1e-5
            continue
        # One activation step in every input element moves an output by at most step * |row of W|_1.
        one_step = input_step(x) * ours.weight().dequantize().abs().sum(1).max().item()
        assert diff <= one_step
        assert diff <= 1e-5  # in practice only float32 summation order differs


@pytest.mark.parametrize("qconfig_name", QCONFIG_NAMES[:2])
def test_linear_weight_equals_torch_ao(qconfig_name):
    torch.manual_seed(1)
    ours, theirs = pair(nn.Linear(20, 6), qconfig_name, "Linear")
    w_ours, w_theirs = ours.weight(), oracle(theirs.weight)
    assert torch.equal(w_ours.int_repr(), w_theirs.int_repr())
    assert torch.equal(w_ours.dequantize(), w_theirs.dequantize())
    assert torch.equal(ours.bias(), theirs.bias())


def test_linear_without_bias_and_float64_input():
    torch.manual_seed(2)
    lin = nn.Linear(8, 3, bias=False)
    ours, theirs = pair(lin, "default_dynamic_qconfig", "Linear")
    x = torch.randn(4, 8, dtype=torch.float64)
    y = ours(x)
    assert y.dtype == torch.float64 and ours.bias() is None
    assert torch.allclose(y.float(), oracle(theirs, x.float()), atol=1e-5)


def test_linear_reduce_range_can_be_turned_off():
    torch.manual_seed(3)
    lin = nn.Linear(16, 4)
    lin.qconfig = qcore.default_dynamic_qconfig
    full = qd.Linear.from_float(lin, reduce_range=False)
    x = torch.randn(10, 16)
    expected = F.linear(quantize_per_tensor_dynamic(x, "uint8", False).dequantize(), full.weight().dequantize(), lin.bias)
    assert torch.equal(full(x), expected)
    assert "reduce_range=False" in repr(full)


def test_linear_int8_activations_from_the_qconfig():
    torch.manual_seed(13)
    lin = nn.Linear(6, 3)
    lin.qconfig = qcore.QConfig(
        activation=qcore.PlaceholderObserver.with_args(dtype=torch.qint8, is_dynamic=True), weight=qcore.default_weight_observer
    )
    q = qd.Linear.from_float(lin)
    assert "act_dtype=int8" in repr(q)
    x = torch.randn(4, 6)
    expected = F.linear(quantize_per_tensor_dynamic(x, "int8", True).dequantize(), q.weight().dequantize(), lin.bias)
    assert torch.equal(q(x), expected)


def test_linear_relu():
    torch.manual_seed(4)
    from qcore.nn.intrinsic import LinearReLU as FusedLinearReLU

    fused = FusedLinearReLU(nn.Linear(6, 5), nn.ReLU())
    fused.qconfig = qcore.default_dynamic_qconfig
    q = qd.LinearReLU.from_float(fused)
    plain = fused[0]
    plain.qconfig = qcore.default_dynamic_qconfig
    x = torch.randn(7, 6)
    assert torch.equal(q(x), F.relu(qd.Linear.from_float(plain)(x)))
    assert torch.equal(torch.jit.script(q)(x), q(x))
    assert qd.DYNAMIC_MAPPINGS[FusedLinearReLU] is qd.LinearReLU


def test_linear_repr_and_errors():
    lin = nn.Linear(4, 3)
    lin.qconfig = qcore.per_channel_dynamic_qconfig
    q = qd.Linear.from_float(lin)
    text = repr(q)
    assert "DynamicQuantizedLinear" in text and "int8" in text and "per_channel_symmetric" in text and "weight_axis=0" in text
    assert "float16" in repr(qd.Linear(4, 3, dtype=torch.float16))
    with pytest.raises(QuantizationError, match="DeQuantStub"):
        q(quantize_per_tensor(torch.randn(2, 4), 0.1, 128, "uint8"))
    with pytest.raises(ConfigError, match="qconfig"):
        qd.Linear.from_float(nn.Linear(4, 3))
    bad = nn.Linear(4, 3)
    bad.qconfig = qcore.float_qparams_weight_only_qconfig_4bit
    with pytest.raises(ConfigError, match="int8 or float16"):
        qd.Linear.from_float(bad)
    with pytest.raises(ConfigError, match="nn.Linear"):
        qd.Linear.from_float(nn.Conv1d(1, 1, 1))
    none = nn.Linear(4, 3)
    none.qconfig = None  # torch.ao: None means default_dynamic_qconfig
    assert qd.Linear.from_float(none).weight().qscheme() is dtypes.per_tensor_symmetric


@pytest.mark.parametrize("qconfig_name", QCONFIG_NAMES)
def test_linear_state_dict_round_trip_into_fresh_module(qconfig_name):
    torch.manual_seed(5)
    lin = nn.Linear(12, 7)
    lin.qconfig = getattr(qcore, qconfig_name)
    q = qd.Linear.from_float(lin)
    state = q.state_dict()
    assert set(state) >= {"weight", "bias", "_extra_state"}
    if qconfig_name != "float16_dynamic_qconfig":
        assert {"weight_scale", "weight_zero_point", "weight_axis"} <= set(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = qd.Linear(12, 7, dtype=q.weight_dtype)  # per tensor, scale 1: shapes differ from a per-channel save
    fresh.load_state_dict(torch.load(buffer))
    x = torch.randn(3, 12)
    assert torch.equal(fresh(x), q(x))
    assert repr(fresh) == repr(q)


# --- cells and recurrent layers ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("qconfig_name", QCONFIG_NAMES)
def test_cells_match_torch_ao(kind, qconfig_name):
    torch.manual_seed(6)
    cell = getattr(nn, kind)(5, 7)
    ours, theirs = pair(cell, qconfig_name, kind)
    x, h, c = torch.randn(4, 5), torch.randn(4, 7), torch.randn(4, 7)
    state = (h, c) if kind == "LSTMCell" else h
    for args in ((x, state), (x,)):
        got, want = ours(*args), oracle(theirs, *args)
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        for a, b in zip(got, want):
            assert (a - b).abs().max().item() <= 1e-5


def test_rnn_cell_relu_and_unbatched():
    torch.manual_seed(7)
    cell = nn.RNNCell(3, 4, nonlinearity="relu")
    ours, theirs = pair(cell, "default_dynamic_qconfig", "RNNCell")
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert (ours(x, h) - oracle(theirs, x, h)).abs().max().item() <= 1e-5
    assert "nonlinearity=relu" in repr(ours)
    single = ours(x[0], h[0])
    assert single.shape == (4,)


@pytest.mark.parametrize(
    "kind,qconfig_name,layers,bidirectional,batch_first",
    [
        ("LSTM", "default_dynamic_qconfig", 1, False, False),
        ("LSTM", "default_dynamic_qconfig", 2, True, True),
        ("LSTM", "per_channel_dynamic_qconfig", 2, False, False),
        ("LSTM", "float16_dynamic_qconfig", 2, True, False),
        ("GRU", "default_dynamic_qconfig", 1, False, True),
        ("GRU", "default_dynamic_qconfig", 2, True, False),
        ("GRU", "per_channel_dynamic_qconfig", 1, True, True),
        ("GRU", "float16_dynamic_qconfig", 2, False, True),
    ],
)
def test_recurrent_layers_match_torch_ao(kind, qconfig_name, layers, bidirectional, batch_first):
    """Max abs difference to torch.ao stays below 1e-5 (observed ~1e-7: float32 summation order only)."""
    torch.manual_seed(8)
    rnn = getattr(nn, kind)(5, 7, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
    ours, theirs = pair(rnn, qconfig_name, kind)
    batch, steps = 3, 6
    x = torch.randn(batch, steps, 5) * 2 if batch_first else torch.randn(steps, batch, 5) * 2
    h0 = torch.randn(layers * (2 if bidirectional else 1), batch, 7) * 0.5
    state = (h0, h0 * 0.3) if kind == "LSTM" else h0
    for args in ((x,), (x, state)):
        (out, hidden), (want_out, want_hidden) = ours(*args), oracle(theirs, *args)
        assert out.shape == want_out.shape
        assert (out - want_out).abs().max().item() <= 1e-5
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        want_hidden = want_hidden if isinstance(want_hidden, tuple) else (want_hidden,)
        for a, b in zip(hidden, want_hidden):
            assert (a - b).abs().max().item() <= 1e-5


def test_recurrent_layer_weights_equal_torch_ao():
    torch.manual_seed(9)
    ours, theirs = pair(nn.LSTM(4, 3, num_layers=2, bidirectional=True), "per_channel_dynamic_qconfig", "LSTM")
    w_ours, w_theirs = ours._weight_bias(), oracle(theirs._weight_bias)
    assert set(w_ours["weight"]) == set(w_theirs["weight"])
    for name, w in w_ours["weight"].items():
        assert torch.equal(w.dequantize(), w_theirs["weight"][name].dequantize()), name


def test_recurrent_layer_unbatched_bias_free_and_eval_dropout():
    torch.manual_seed(10)
    gru = nn.GRU(4, 3, num_layers=2, bias=False, dropout=0.5)
    gru.qconfig = qcore.default_dynamic_qconfig
    q = qd.GRU.from_float(gru).eval()
    x = torch.randn(5, 4)
    out, h = q(x)
    batched_out, batched_h = q(x.unsqueeze(1))
    assert torch.equal(out, batched_out.squeeze(1)) and torch.equal(h, batched_h.squeeze(1))
    # Close to the float GRU (int8 weights and activations).
    assert (out - gru.eval()(x)[0]).abs().max().item() < 0.05


def test_recurrent_layer_errors():
    lstm = nn.LSTM(4, 3, proj_size=2)
    lstm.qconfig = qcore.default_dynamic_qconfig
    with pytest.raises(ConfigError, match="proj_size"):
        qd.LSTM.from_float(lstm)
    q = qd.LSTM(4, 3)
    packed = nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    with pytest.raises(QuantizationError, match="PackedSequence"):
        q(packed)
    with pytest.raises(QuantizationError, match="input_size"):
        q(torch.randn(3, 2, 5))
    with pytest.raises(QuantizationError, match="empty"):
        q(torch.randn(0, 2, 4))
    with pytest.raises(ConfigError, match="nn.GRU"):
        qd.GRU.from_float(nn.LSTM(4, 3))


def test_recurrent_state_dict_round_trip_and_repr():
    torch.manual_seed(11)
    lstm = nn.LSTM(4, 3, num_layers=2, bidirectional=True)
    lstm.qconfig = qcore.per_channel_dynamic_qconfig
    q = qd.LSTM.from_float(lstm)
    state = q.state_dict()
    assert "cells.0.linear_ih.weight" in state and "cells.3.linear_hh.weight_scale" in state
    fresh = qd.LSTM(4, 3, num_layers=2, bidirectional=True)
    fresh.load_state_dict(state)
    x = torch.randn(5, 2, 4)
    assert torch.equal(fresh(x)[0], q(x)[0])
    text = repr(q)
    assert "DynamicQuantizedLSTM" in text and "bidirectional=True" in text and "per_channel_symmetric" in text


# --- TorchScript -------------------------------------------------------------------------------


@pytest.mark.parametrize("qconfig_name", ["default_dynamic_qconfig", "float16_dynamic_qconfig"])
def test_scripting_and_jit_save_load(qconfig_name):
    torch.manual_seed(12)
    qconfig = getattr(qcore, qconfig_name)
    modules = []
    for float_mod, kind in (
        (nn.Linear(5, 4), "Linear"),
        (nn.LSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True), "LSTM"),
        (nn.GRU(5, 4), "GRU"),
        (nn.RNNCell(5, 4), "RNNCell"),
        (nn.LSTMCell(5, 4), "LSTMCell"),
        (nn.GRUCell(5, 4), "GRUCell"),
    ):
        float_mod.qconfig = qconfig
        modules.append(getattr(qd, kind).from_float(float_mod))
    x = torch.randn(3, 5)
    seq = torch.randn(3, 6, 5)
    for module in modules:
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        inp = seq if isinstance(module, qd.RNNBase) else x
        eager = module(inp)
        for other in (scripted(inp), loaded(inp)):
            flat_e = torch.cat([t.reshape(-1) for t in _flatten(eager)])
            flat_o = torch.cat([t.reshape(-1) for t in _flatten(other)])
            assert torch.equal(flat_e, flat_o), type(module).__name__


def _flatten(value):
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in _flatten(item)]


# --- mappings and real data -----------------------------------------------------------------------


def test_dynamic_mappings():
    from qcore.nn.quantized import Embedding, EmbeddingBag

    table = qd.DYNAMIC_MAPPINGS
    assert table[nn.Linear] is qd.Linear and table[nn.LSTM] is qd.LSTM and table[nn.GRU] is qd.GRU
    assert table[nn.RNNCell] is qd.RNNCell and table[nn.LSTMCell] is qd.LSTMCell and table[nn.GRUCell] is qd.GRUCell
    assert table[nn.Embedding] is Embedding and table[nn.EmbeddingBag] is EmbeddingBag
    assert "DYNAMIC_MAPPINGS" in dir(qd)


class SequenceClassifier(nn.Module):
    """The digits as 8 time steps of 8 pixels, a recurrent layer, a linear head on the last step."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = getattr(nn, kind)(8, 32, batch_first=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def _swap_dynamic(model: nn.Module, qconfig) -> nn.Module:
    model = copy.deepcopy(model)
    for name, child in list(model.named_children()):
        child.qconfig = qconfig
        setattr(model, name, qd.DYNAMIC_MAPPINGS[type(child)].from_float(child))
    return model


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_digits_sequence_classifier_dynamic_int8_accuracy(kind):
    """Dynamic int8 within 1 point of fp32, and no worse than torch.ao's quantize_dynamic by more than 0.3."""
    x, y = digits()
    train, test = digits_split(len(x))
    torch.manual_seed(0)
    model = SequenceClassifier(kind)
    fit(model, x, y, train, epochs=15)
    model.eval()

    def accuracy(m: nn.Module) -> float:
        return _helpers.accuracy(m, x[test], y[test])

    fp32 = accuracy(model)
    assert fp32 > 90
    ours = accuracy(_swap_dynamic(model, qcore.default_dynamic_qconfig))
    assert ours >= fp32 - 1.0
    _, tq = ao()
    theirs = accuracy(oracle(tq.quantize_dynamic, model, {nn.Linear, getattr(nn, kind)}, dtype=torch.qint8))
    assert ours >= theirs - 0.3
    fp16 = accuracy(_swap_dynamic(model, qcore.float16_dynamic_qconfig))
    assert abs(fp16 - fp32) <= 0.5


def test_dynamic_activation_range_follows_the_backend():
    """fbgemm (and reference) quantize dynamic activations to 7 bits as torch.ao does; qnnpack uses all 8."""
    import qcore
    from qcore.nn.quantized.dynamic import Linear as DynamicLinear

    float_linear = torch.nn.Linear(4, 4)
    float_linear.qconfig = qcore.default_dynamic_qconfig
    with qcore.backend("reference"):
        assert DynamicLinear.from_float(float_linear).settings.reduce_range is True
    with qcore.backend("qnnpack"):
        assert DynamicLinear.from_float(float_linear).settings.reduce_range is False
