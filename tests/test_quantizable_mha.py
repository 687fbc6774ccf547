"""Static MultiheadAttention through the custom-module path: qcore.nn.quantizable -> qcore.nn.quantized.

Differential against torch.ao's same flow (torch.ao.nn.quantizable / quantized MultiheadAttention passed through
prepare_custom_config_dict) on the same float weights and calibration data, on random and structured inputs.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from typing import Any, Optional, Tuple

import pytest
import torch
from torch import nn

import qcore
import qcore.nn.quantizable as nnqa
import qcore.nn.quantized as nnq
from qcore.errors import ConfigError, QuantizationError
from qcore.flow.eager.prepare import is_activation_post_process
from qcore.qtensor import QTensor

torch.set_num_threads(1)

E, HEADS, TGT, SRC, BATCH = 8, 2, 5, 7, 4


class Model(nn.Module):
    """Quantizes query, key and value, attends, dequantizes the output and the weights."""

    def __init__(self, mha: nn.Module, quant: type = qcore.QuantStub, dequant: type = qcore.DeQuantStub) -> None:
        super().__init__()
        self.quant_q, self.quant_k, self.quant_v = quant(), quant(), quant()
        self.mha = mha
        self.dequant, self.dequant_weights = dequant(), dequant()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> Any:
        out, weights = self.mha(self.quant_q(q), self.quant_k(k), self.quant_v(v), **kwargs)
        return self.dequant(out), None if weights is None else self.dequant_weights(weights)


def _ao() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq = pytest.importorskip("torch.ao.quantization")
        ao_quantizable = pytest.importorskip("torch.ao.nn.quantizable")
        ao_quantized = pytest.importorskip("torch.ao.nn.quantized")
    config = {
        "float_to_observed_custom_module_class": {nn.MultiheadAttention: ao_quantizable.MultiheadAttention},
        "observed_to_quantized_custom_module_class": {ao_quantizable.MultiheadAttention: ao_quantized.MultiheadAttention},
    }
    return tq, config


def _random_inputs(kdim: int = E, vdim: int = E) -> tuple[torch.Tensor, ...]:
    return torch.randn(TGT, BATCH, E), torch.randn(SRC, BATCH, kdim), torch.randn(SRC, BATCH, vdim)


def _structured_inputs() -> tuple[torch.Tensor, ...]:
    """Self-attention over sinusoidal position codes plus a few repeated 'tokens': peaked, structured attention."""
    positions = torch.arange(SRC, dtype=torch.float32).unsqueeze(1)
    freqs = torch.exp(torch.arange(0, E, 2, dtype=torch.float32) * (-math.log(100.0) / E))
    codes = torch.zeros(SRC, E)
    codes[:, 0::2], codes[:, 1::2] = torch.sin(positions * freqs), torch.cos(positions * freqs)
    tokens = torch.randn(3, E)
    ids = torch.randint(0, 3, (SRC, BATCH))
    x = codes.unsqueeze(1) + 2.0 * tokens[ids]
    return x[:TGT], x, x


def _both(mha: nn.MultiheadAttention, qconfigs: tuple[Any, Any], calibration: list, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    tq, config = _ao()
    ours = Model(copy.deepcopy(mha)).eval()
    ours.qconfig = qconfigs[0]
    prepared = qcore.prepare(ours)
    for inputs in calibration:
        prepared(*inputs, **kwargs)
    converted = qcore.convert(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = Model(copy.deepcopy(mha), tq.QuantStub, tq.DeQuantStub).eval()
        theirs.qconfig = qconfigs[1]
        theirs_prepared = tq.prepare(theirs, prepare_custom_config_dict=config)
        for inputs in calibration:
            theirs_prepared(*inputs, **kwargs)
        theirs_converted = tq.convert(theirs_prepared, convert_custom_config_dict=config)
    return converted, theirs_converted


def _qconfigs(kind: str) -> tuple[Any, Any]:
    tq, _ = _ao()
    if kind == "minmax":
        return qcore.default_qconfig, tq.default_qconfig
    return qcore.get_default_qconfig("fbgemm"), tq.get_default_qconfig("fbgemm")


def _steps(ours: torch.Tensor, theirs: torch.Tensor, scale: float) -> float:
    """Largest difference in quantization steps (rounded: values on one grid differ by whole steps)."""
    return round(float((ours - theirs).detach().abs().max()) / scale, 3)


# --- the flow ----------------------------------------------------------------------------------------------


def test_prepare_swaps_mha_for_the_observed_one_without_config():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(E, HEADS).eval()
    model = Model(mha).eval()
    model.qconfig = qcore.default_qconfig
    prepared = qcore.prepare(model)
    observed = prepared.mha
    assert type(observed) is nnqa.MultiheadAttention
    assert not hasattr(observed, "activation_post_process")
    for name in ("linear_Q", "linear_K", "linear_V", "out_proj", "quant_attn_output", "quant_attn_output_weights"):
        assert is_activation_post_process(getattr(observed, name).activation_post_process), name
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    torch.testing.assert_close(observed.linear_K.weight, w_k)
    torch.testing.assert_close(observed.linear_V.bias, mha.in_proj_bias.chunk(3)[2])
    inputs = _random_inputs()
    with torch.no_grad():
        out, weights = prepared(*inputs)
        ref_out, ref_weights = mha(*inputs)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=0)

    converted = qcore.convert(prepared)
    assert type(converted.mha) is nnq.MultiheadAttention
    q_out, q_weights = converted.mha(*(qcore.quantize_per_tensor(t, 0.02, 128, torch.quint8) for t in inputs))
    assert isinstance(q_out, QTensor) and isinstance(q_weights, QTensor)
    assert q_out.shape == (TGT, BATCH, E) and q_weights.shape == (BATCH, TGT, SRC)
    assert "QuantizedMultiheadAttention" in repr(converted) and "QuantizedLinear" in repr(converted)


OBSERVED_CASES = [
    ({}, {}),
    ({"batch_first": True}, {}),
    ({"add_bias_kv": True, "add_zero_attn": True}, {}),
    ({"bias": False, "kdim": 6, "vdim": 5}, {}),
    ({}, {"average_attn_weights": False}),
    ({}, {"need_weights": False}),
    ({}, {"attn_mask": "causal", "is_causal": True}),
    ({"batch_first": True}, {"attn_mask": "float", "key_padding_mask": "bool"}),
    ({"add_bias_kv": True}, {"attn_mask": "3d", "key_padding_mask": "float"}),
]


def _masks(call: dict) -> dict:
    call = dict(call)
    masks = {
        "causal": torch.triu(torch.ones(TGT, SRC, dtype=torch.bool), 1),
        "float": 0.3 * torch.randn(TGT, SRC),
        "3d": torch.rand(BATCH * HEADS, TGT, SRC) > 0.8,
    }
    if "attn_mask" in call:
        call["attn_mask"] = masks[call["attn_mask"]]
    if "key_padding_mask" in call:
        padding = torch.zeros(BATCH, SRC, dtype=torch.bool)
        padding[:, -2:] = True
        call["key_padding_mask"] = padding if call["key_padding_mask"] == "bool" else padding.float() * -1e4
    return call


@pytest.mark.parametrize("init, call", OBSERVED_CASES)
def test_observed_mha_matches_float(init, call):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(E, HEADS, **init).eval()
    mha.qconfig = qcore.default_qconfig
    observed = nnqa.MultiheadAttention.from_float(mha)
    call = _masks(call)
    q, k, v = _random_inputs(init.get("kdim", E), init.get("vdim", E))
    if init.get("batch_first"):
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Support for mismatched key_padding_mask and attn_mask", UserWarning)
        got = observed(q, k, v, **call)
        want = mha(q, k, v, **call)
    for a, b in zip(got, want):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_observed_mha_matches_float_for_unbatched_inputs():
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(E, HEADS, batch_first=True).eval()
    mha.qconfig = qcore.default_qconfig
    observed = nnqa.MultiheadAttention.from_float(mha)
    q, k, v = torch.randn(TGT, E), torch.randn(SRC, E), torch.randn(SRC, E)
    padding = torch.zeros(SRC, dtype=torch.bool)
    padding[-1] = True
    with torch.no_grad():
        for call in ({}, {"key_padding_mask": padding, "average_attn_weights": False}):
            for a, b in zip(observed(q, k, v, **call), mha(q, k, v, **call)):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    quantized = nnq.MultiheadAttention.from_observed(observed)
    out, weights = quantized(*(qcore.quantize_per_tensor(t, 0.02, 128, torch.quint8) for t in (q, k, v)))
    assert out.shape == (TGT, E) and weights.shape == (TGT, SRC)


DIFFERENTIAL_CASES = [
    ({}, {}),
    ({"add_zero_attn": True}, {}),
    ({"bias": False}, {}),
    ({"kdim": 6, "vdim": 5}, {}),
    ({}, {"attn_mask": "causal"}),
    ({}, {"key_padding_mask": "bool"}),
    ({}, {"average_attn_weights": False}),
]


@pytest.mark.parametrize("qconfig", ["minmax", "fbgemm"])
@pytest.mark.parametrize("init, call", DIFFERENTIAL_CASES)
def test_matches_torch_ao_on_random_inputs(init, call, qconfig):
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(E, HEADS, **init).eval()
    call = _masks(call)
    dims = (init.get("kdim", E), init.get("vdim", E))
    calibration = [_random_inputs(*dims) for _ in range(4)]
    ours, theirs = _both(mha, _qconfigs(qconfig), calibration, **call)
    inputs = _random_inputs(*dims)
    out, weights = ours(*inputs, **call)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_out, t_weights = theirs(*inputs, **call)
    # Measured: 0 steps (bit-exact) in every case here.
    assert _steps(out, t_out, float(ours.mha.out_proj.scale)) <= 1.0
    assert _steps(weights, t_weights, float(ours.mha.quant_attn_output_weights.scale)) <= 1.0


@pytest.mark.parametrize("qconfig", ["minmax", "fbgemm"])
def test_matches_torch_ao_on_structured_self_attention(qconfig):
    torch.manual_seed(4)
    mha = nn.MultiheadAttention(E, HEADS).eval()
    calibration = [_structured_inputs() for _ in range(4)]
    ours, theirs = _both(mha, _qconfigs(qconfig), calibration)
    inputs = _structured_inputs()
    out, weights = ours(*inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_out, t_weights = theirs(*inputs)
    scale = float(ours.mha.out_proj.scale)
    assert _steps(out, t_out, scale) <= 1.0
    assert _steps(weights, t_weights, float(ours.mha.quant_attn_output_weights.scale)) <= 1.0
    with torch.no_grad():
        ref_out, _ = mha(*inputs)
    assert float((out - ref_out).abs().mean()) / scale < 1.5


@pytest.mark.parametrize("qconfig", ["minmax", "fbgemm"])
def test_bias_kv_is_rounded_once(qconfig):
    """torch.ao quantizes bias_k / bias_v on a grid of their own (bias_v on bias_k's) and then again onto the
    key's / value's grid; qcore rounds them once, onto the key's / value's grid. Measured on this seed: up to
    4 steps from torch.ao (3 with fbgemm), and about half of torch.ao's mean error against float."""
    torch.manual_seed(3)
    mha = nn.MultiheadAttention(E, HEADS, add_bias_kv=True).eval()
    calibration = [_random_inputs() for _ in range(4)]
    ours, theirs = _both(mha, _qconfigs(qconfig), calibration)
    inputs = _random_inputs()
    out, weights = ours(*inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_out, t_weights = theirs(*inputs)
    with torch.no_grad():
        ref_out, ref_weights = mha(*inputs)
    scale = float(ours.mha.out_proj.scale)
    assert _steps(out, t_out, scale) <= 4.0
    assert float((out - ref_out).abs().mean()) <= float((t_out - ref_out).abs().mean())
    assert float((weights - ref_weights).abs().max()) <= float((t_weights - ref_weights).abs().max()) + 1e-6


def test_batch_first_matches_torch_ao_on_transposed_inputs():
    """torch.ao's quantizable MHA mixes heads up with batch_first=True; ours equals its batch-second result."""
    torch.manual_seed(5)
    mha = nn.MultiheadAttention(E, HEADS).eval()
    mha_bf = nn.MultiheadAttention(E, HEADS, batch_first=True).eval()
    mha_bf.load_state_dict(mha.state_dict())
    calibration = [_random_inputs() for _ in range(4)]
    _, theirs = _both(mha, _qconfigs("minmax"), calibration)
    ours, _ = _both(mha_bf, _qconfigs("minmax"), [tuple(t.transpose(0, 1) for t in c) for c in calibration])
    inputs = _random_inputs()
    out, weights = ours(*(t.transpose(0, 1) for t in inputs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_out, t_weights = theirs(*inputs)
    assert _steps(out.transpose(0, 1), t_out, float(ours.mha.out_proj.scale)) <= 1.0
    assert _steps(weights, t_weights, float(ours.mha.quant_attn_output_weights.scale)) <= 1.0


def test_dequantize_gives_back_a_float_mha():
    torch.manual_seed(6)
    mha = nn.MultiheadAttention(E, HEADS, add_bias_kv=True, kdim=6, vdim=5).eval()
    calibration = [_random_inputs(6, 5) for _ in range(3)]
    ours, _ = _both(mha, _qconfigs("minmax"), calibration)
    fp = ours.mha.dequantize()
    assert type(fp) is nn.MultiheadAttention and not fp.training
    torch.testing.assert_close(fp.k_proj_weight, ours.mha.linear_K.weight().dequantize())
    torch.testing.assert_close(fp.in_proj_bias[E:2 * E], ours.mha.linear_K.bias())
    torch.testing.assert_close(fp.bias_v, mha.bias_v)
    inputs = _random_inputs(6, 5)
    with torch.no_grad():
        assert float((fp(*inputs)[0] - mha(*inputs)[0]).abs().max()) < 0.05
        # the observed module dequantizes to its own (float) weights exactly
        mha.qconfig = qcore.default_qconfig
        again = nnqa.MultiheadAttention.from_float(mha).dequantize()
        torch.testing.assert_close(again(*inputs)[0], mha(*inputs)[0], atol=1e-6, rtol=0)


def test_calibration_through_need_weights_false_sets_every_observer():
    """nn.TransformerEncoderLayer calls attention with need_weights=False; no observer may stay empty."""
    torch.manual_seed(7)
    layer = nn.TransformerEncoderLayer(E, HEADS, dim_feedforward=16, batch_first=True).eval()
    layer.qconfig = None
    layer.self_attn.qconfig = qcore.default_qconfig
    prepared = qcore.prepare(layer)
    assert type(prepared.self_attn) is nnqa.MultiheadAttention
    x = torch.randn(BATCH, SRC, E)
    with torch.no_grad():
        # in_proj_bias is None, so the encoder layer's fused fast path (which would bypass the observers) stays off
        torch.testing.assert_close(prepared(x), layer(x), atol=1e-5, rtol=0)
    observers = [m for m in prepared.self_attn.modules() if is_activation_post_process(m)]
    assert observers and all(math.isfinite(float(o.min_val)) for o in observers)


class ScriptableModel(nn.Module):
    def __init__(self, mha: nn.Module) -> None:
        super().__init__()
        self.quant_q, self.quant_k, self.quant_v = qcore.QuantStub(), qcore.QuantStub(), qcore.QuantStub()
        self.mha = mha
        self.dequant, self.dequant_weights = qcore.DeQuantStub(), qcore.DeQuantStub()

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None, average_attn_weights: bool = True,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.mha(self.quant_q(q), self.quant_k(k), self.quant_v(v), attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, average_attn_weights=average_attn_weights)
        assert weights is not None
        return self.dequant(out), self.dequant_weights(weights)


@pytest.mark.parametrize(
    "init", [{}, {"add_bias_kv": True, "add_zero_attn": True}, {"batch_first": True}, {"kdim": 6, "vdim": 5, "bias": False}]
)
def test_torchscript_twin_equals_eager_and_saves(init):
    """On the reference backend the scripted model's outputs equal the eager ones dequantized, bit for bit."""
    torch.manual_seed(10)
    model = ScriptableModel(nn.MultiheadAttention(E, HEADS, **init)).eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = qcore.prepare(model)

    def inputs() -> list[torch.Tensor]:
        tensors = list(_random_inputs(init.get("kdim", E), init.get("vdim", E)))
        return [t.transpose(0, 1) for t in tensors] if init.get("batch_first") else tensors

    for _ in range(3):
        prepared(*inputs())
    with qcore.backend("reference"):
        converted = qcore.convert(prepared)
    scripted = torch.jit.script(converted)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    call = _masks({"attn_mask": "causal", "key_padding_mask": "bool"})
    x = inputs()
    for kwargs in ({}, call, {**call, "average_attn_weights": False}):
        eager = converted(*x, **kwargs)
        for other in (scripted(*x, **kwargs), loaded(*x, **kwargs)):
            for got, want in zip(other, eager):
                assert torch.equal(got, want)


# --- save / load, errors -----------------------------------------------------------------------------------


def _converted_model(calibrate: bool) -> nn.Module:
    model = Model(nn.MultiheadAttention(E, HEADS, add_bias_kv=True)).eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = qcore.prepare(model)
    if calibrate:
        for _ in range(3):
            prepared(*_random_inputs())
    return qcore.convert(prepared)


def test_state_dict_round_trip_into_a_fresh_converted_model():
    torch.manual_seed(8)
    original = _converted_model(calibrate=True)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    with pytest.warns(qcore.UncalibratedWarning):
        fresh = _converted_model(calibrate=False)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    inputs = _random_inputs()
    for got, want in zip(fresh(*inputs), original(*inputs)):
        assert torch.equal(got, want)
    keys = original.state_dict().keys()
    assert {"mha.bias_k", "mha.bias_v", "mha.linear_Q.weight", "mha.quant_attn_output.scale"} <= set(keys)
    assert "mha.in_proj_weight" not in keys


def test_errors_name_the_module_and_the_fix():
    torch.manual_seed(9)
    converted = _converted_model(calibrate=True)
    q, k, v = _random_inputs()
    qq = qcore.quantize_per_tensor(q, 0.02, 128, torch.quint8)
    with pytest.raises(QuantizationError, match=r"mha.*quantized key.*QuantStub"):
        converted.mha(qq, k, qq)
    with pytest.raises(QuantizationError, match="is_causal=True needs attn_mask"):
        converted.mha(qq, qq, qq, is_causal=True)
    with pytest.raises(QuantizationError, match="key_padding_mask must be"):
        converted.mha(qq, qq, qq, key_padding_mask=torch.zeros(BATCH, 3, dtype=torch.bool))
    with pytest.raises(QuantizationError, match="query has 6 features"):
        converted.mha(qcore.quantize_per_tensor(torch.randn(TGT, BATCH, 6), 0.02, 128, torch.quint8), qq, qq)

    with pytest.raises(ConfigError, match="expects a torch.nn.MultiheadAttention"):
        nnqa.MultiheadAttention.from_float(nn.Linear(E, E))
    with pytest.raises(ConfigError, match="no qconfig"):
        nnqa.MultiheadAttention.from_float(nn.MultiheadAttention(E, HEADS))
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        nnqa.MultiheadAttention(E, 3)
    with pytest.raises(ConfigError, match="from_observed"):
        nnq.MultiheadAttention.from_float(nn.MultiheadAttention(E, HEADS))
    with pytest.raises(ConfigError, match="no observers"):
        nnq.MultiheadAttention.from_observed(nnqa.MultiheadAttention(E, HEADS))
    with pytest.raises(ConfigError, match="from_observed"):
        nnqa.MultiheadAttention.from_observed(nnqa.MultiheadAttention(E, HEADS))
