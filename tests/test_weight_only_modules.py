"""Weight-only modules: quantized Embedding/EmbeddingBag (vs torch.ao) and int8/int4 weight-only Linear."""

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
from qcore.int4_packing import pack_int4, unpack_int4
from qcore.qtensor import quantize_per_channel, quantize_per_tensor
from qcore.nn.quantized import Embedding, EmbeddingBag
from qcore.nn.quantized import weight_only as wo
from qcore.nn.quantized.weight_only.functional import dequantize_weight, unpack_4bit

import _helpers
from _helpers import digits, digits_split, fit, oracle

torch.set_num_threads(1)
SETTINGS = dict(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QCONFIGS = {8: "float_qparams_weight_only_qconfig", 4: "float_qparams_weight_only_qconfig_4bit"}


def ao():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nnq = pytest.importorskip("torch.ao.nn.quantized")
        tq = pytest.importorskip("torch.ao.quantization")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch.ao's embedding kernels need fbgemm")
    return nnq, tq


def pair(float_mod: nn.Module, bits: int):
    """(qcore module, torch.ao module) from the same float table and the same named qconfig."""
    nnq, tq = ao()
    mod = copy.deepcopy(float_mod)
    mod.qconfig = getattr(qcore, QCONFIGS[bits])
    kind = type(float_mod).__name__
    ours = getattr(qcore.nn.quantized, kind).from_float(mod)
    mod.qconfig = getattr(tq, QCONFIGS[bits])
    theirs = oracle(getattr(nnq, kind).from_float, mod)
    return ours, theirs


def table(rows: int = 50, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


# --- the scriptable kernels equal qcore's eager ones ----------------------------------------------------


@settings(**SETTINGS)
@given(st.integers(1, 9), st.integers(1, 6), st.sampled_from(["uint4", "int4"]), st.integers(0, 2**31 - 1))
def test_unpack_4bit_equals_int4_module(length, rows, qdtype, seed):
    d = dtypes.qdtype(qdtype)
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(d.quant_min, d.quant_max + 1, (rows, length), generator=g)
    packed = pack_int4(values, d)
    got = unpack_4bit(packed, length, d.is_signed)
    assert torch.equal(got, unpack_int4(packed, length, d))
    assert torch.equal(torch.jit.script(unpack_4bit)(packed, length, d.is_signed), got)


@settings(**SETTINGS)
@given(st.sampled_from(["uint8", "int8", "uint4", "int4"]), st.sampled_from(["tensor", "channel", "float_qparams"]), st.integers(0, 2**31 - 1))
def test_dequantize_weight_equals_qtensor_dequantize(qdtype, kind, seed):
    d = dtypes.qdtype(qdtype)
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(5, 7, generator=g) * 3
    if kind == "tensor":
        q = quantize_per_tensor(w, 0.037, (d.quant_min + d.quant_max + 1) // 2, d)
        scale, zp, axis = torch.tensor(q.q_scale(), dtype=torch.float64), torch.tensor(q.q_zero_point()), -1
    else:
        scale = torch.rand(5, generator=g, dtype=torch.float64) * 0.1 + 0.01
        if kind == "float_qparams":
            zp = torch.rand(5, generator=g) * (d.quant_max - d.quant_min) + d.quant_min
        else:
            zp = torch.randint(d.quant_min, d.quant_max + 1, (5,), generator=g)
        q = quantize_per_channel(w, scale, zp, 0, d)
        scale, zp, axis = q.q_per_channel_scales(), q.q_per_channel_zero_points(), 0
    stored = pack_int4(q.int_repr(), d) if d.bits == 4 else q.int_repr()
    got = dequantize_weight(stored, scale, zp, axis, 0, d.bits, d.is_signed, 7)
    assert torch.equal(got, q.dequantize())


def test_groupwise_dequantize_equals_per_channel_on_rows():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 12, generator=g)
    scale = torch.rand(12, generator=g, dtype=torch.float64) * 0.1 + 0.01
    zp = torch.randint(-8, 8, (12,), generator=g)
    rows = quantize_per_channel(w.reshape(12, 4), scale, zp, 0, "int4")
    got = dequantize_weight(
        pack_int4(rows.int_repr().reshape(4, 12), "int4"), scale.reshape(4, 3), zp.reshape(4, 3), -1, 4, 4, True, 12
    )
    assert torch.equal(got, rows.dequantize().reshape(4, 12))


# --- Embedding / EmbeddingBag against torch.ao ------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("kind", ["Embedding", "EmbeddingBag"])
def test_tables_equal_torch_ao(bits, kind):
    float_mod = getattr(nn, kind)(50, 16)
    with torch.no_grad():
        float_mod.weight.copy_(table())
    ours, theirs = pair(float_mod, bits)
    w_ours, w_theirs = ours.weight(), oracle(theirs.weight)
    assert torch.equal(w_ours.dequantize(), w_theirs.dequantize())
    assert torch.equal(w_ours.q_per_channel_scales().float(), w_theirs.q_per_channel_scales().float())
    assert torch.equal(w_ours.q_per_channel_zero_points(), w_theirs.q_per_channel_zero_points())
    if bits == 8:
        assert torch.equal(w_ours.int_repr(), w_theirs.int_repr())
    else:  # torch.ao's quint4x2 int_repr is the packed bytes, in qcore's nibble order
        assert torch.equal(ours._qweight.reshape(-1), w_theirs.int_repr().reshape(-1))
        assert ours._qweight.shape == (50, 8) and ours._qweight.dtype == torch.uint8


def test_embedding_8bit_outputs_equal_torch_ao():
    """torch.ao computes q * scale + (-zero_point * scale); qcore dequantizes exactly: equal to float32 rounding."""
    float_mod = nn.Embedding(50, 16)
    with torch.no_grad():
        float_mod.weight.copy_(table())
    ours, theirs = pair(float_mod, 8)
    for idx in (torch.randint(0, 50, (9,)), torch.randint(0, 50, (4, 3))):
        got, want = ours(idx), oracle(theirs, idx)
        assert got.shape == want.shape
        assert torch.allclose(got, want, rtol=0, atol=1e-6)
        assert torch.equal(got, F.embedding(idx, ours.weight().dequantize()))


@pytest.mark.parametrize("bits", [8, 4])
def test_embedding_bag_outputs_match_torch_ao(bits):
    float_mod = nn.EmbeddingBag(50, 16, mode="sum")
    with torch.no_grad():
        float_mod.weight.copy_(table())
    ours, theirs = pair(float_mod, bits)
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, 50, (30,), generator=g)
    offsets = torch.tensor([0, 5, 5, 12, 29])
    psw = torch.rand(30, generator=g)
    w = ours.weight()
    q, scale, zp = w.int_repr().float(), w.q_per_channel_scales().float(), w.q_per_channel_zero_points()
    for args in ((idx, offsets), (idx, offsets, psw)):
        got, want = ours(*args), oracle(theirs, *args)
        # qcore: the float op on the exactly dequantized table.
        assert torch.equal(got, F.embedding_bag(idx, w.dequantize(), offsets, mode="sum", per_sample_weights=args[2] if len(args) > 2 else None))
        if bits == 8:
            assert torch.allclose(got, want, rtol=0, atol=1e-5)
        else:
            # fbgemm keeps 4-bit row scales and offsets in float16: torch.ao's output is the float op
            # on q * fp16(scale) + fp16(-zero_point * scale); the gap to qcore is that rounding only.
            rounded = q * scale.half().float()[:, None] + (-zp * scale).half().float()[:, None]
            per = args[2] if len(args) > 2 else None
            assert torch.allclose(want, F.embedding_bag(idx, rounded, offsets, mode="sum", per_sample_weights=per), rtol=0, atol=1e-5)
            assert (got - want).abs().max().item() < 0.02


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("bits", [8, 4])
def test_embedding_bag_modes_padding_and_last_offset_follow_nn(mode, bits):
    g = torch.Generator().manual_seed(3)
    float_mod = nn.EmbeddingBag(40, 9, mode=mode, include_last_offset=True, padding_idx=3)
    float_mod.qconfig = getattr(qcore, QCONFIGS[bits])
    q = EmbeddingBag.from_float(float_mod)
    assert q.mode == mode and q.padding_idx == 3 and q._qweight.shape == (40, 9 if bits == 8 else 5)
    reference = nn.EmbeddingBag(40, 9, mode=mode, include_last_offset=True, padding_idx=3)
    with torch.no_grad():
        reference.weight.copy_(q.weight().dequantize())
    idx = torch.cat([torch.randint(0, 40, (20,), generator=g), torch.tensor([3, 3])])
    offsets = torch.tensor([0, 4, 4, 10, 20, 22])
    assert torch.equal(q(idx, offsets), reference(idx, offsets))
    two_d = torch.randint(0, 40, (3, 5), generator=g)
    q2 = EmbeddingBag(40, 9, mode=mode, _weight=q.weight(), dtype=q.weight_dtype)
    reference2 = nn.EmbeddingBag(40, 9, mode=mode, _weight=q.weight().dequantize())
    assert torch.equal(q2(two_d), reference2(two_d))


def test_embedding_max_norm_renormalizes_a_copy():
    float_mod = nn.Embedding(20, 6, max_norm=1.0)
    with torch.no_grad():
        float_mod.weight.copy_(table(20, 6) * 3)
    float_mod.qconfig = qcore.float_qparams_weight_only_qconfig
    q = Embedding.from_float(float_mod)
    stored = q.weight().dequantize()
    reference = nn.Embedding(20, 6, max_norm=1.0, _weight=stored.clone())
    idx = torch.tensor([1, 5, 5, 7])
    assert torch.equal(q(idx), reference(idx))
    assert torch.equal(q.weight().dequantize(), stored)  # the quantized table is untouched
    q.set_cache_dequantized(True)
    assert torch.equal(q(idx), reference(idx)) and torch.equal(q._weight_float, stored)


@pytest.mark.parametrize("bits", [8, 4])
def test_tables_cache_state_dict_and_scripting(bits):
    float_mod = nn.EmbeddingBag(30, 7, mode="mean")  # odd width: the 4-bit rows carry a padding nibble
    float_mod.qconfig = getattr(qcore, QCONFIGS[bits])
    q = EmbeddingBag.from_float(float_mod)
    idx, offsets = torch.randint(0, 30, (12,), generator=torch.Generator().manual_seed(4)), torch.tensor([0, 3, 8])
    out = q(idx, offsets)
    cached = copy.deepcopy(q)
    cached.set_cache_dequantized(True)
    assert torch.equal(cached(idx, offsets), out)
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    fresh = EmbeddingBag(30, 7, mode="mean", dtype=q.weight_dtype)
    fresh.load_state_dict(torch.load(buffer))
    assert torch.equal(fresh(idx, offsets), out)
    assert repr(fresh) == repr(q)
    scripted = torch.jit.script(q)
    assert torch.equal(scripted(idx, offsets), out)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    assert torch.equal(torch.jit.load(buffer)(idx, offsets), out)
    emb = nn.Embedding(30, 7, padding_idx=0)
    emb.qconfig = getattr(qcore, QCONFIGS[bits])
    qe = Embedding.from_float(emb)
    assert torch.equal(torch.jit.script(qe)(idx.reshape(3, 4)), qe(idx.reshape(3, 4)))


def test_tables_repr_and_errors():
    float_mod = nn.Embedding(10, 4)
    float_mod.qconfig = qcore.float_qparams_weight_only_qconfig_4bit
    q = Embedding.from_float(float_mod)
    text = repr(q)
    assert "QuantizedEmbedding" in text and "uint4" in text and "per_channel_affine_float_qparams" in text
    with pytest.raises(QuantizationError, match="outside"):
        q(torch.tensor([10]))
    with pytest.raises(QuantizationError, match="integer indices"):
        q(torch.tensor([1.0]))
    bad = nn.Embedding(10, 4)
    bad.qconfig = qcore.default_qconfig
    with pytest.raises(ConfigError, match="float_qparams_weight_only_qconfig"):
        Embedding.from_float(bad)
    with pytest.raises(ConfigError, match="qconfig"):
        Embedding.from_float(nn.Embedding(10, 4))
    with pytest.raises(ConfigError, match="mode"):
        EmbeddingBag(10, 4, mode="median")
    with pytest.raises(QuantizationError, match="per row"):
        q.set_weight(quantize_per_tensor(torch.randn(10, 4), 0.1, 0, "uint8"))
    none = nn.EmbeddingBag(10, 4)
    none.qconfig = None  # torch.ao: None means float_qparams_weight_only_qconfig
    assert EmbeddingBag.from_float(none).weight_dtype is dtypes.uint8


# --- weight-only Linear ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "qconfig,packed_cols",
    [("weight_only_int8_qconfig", 64), ("weight_only_int4_qconfig", 32), (("int4", 16), 32), (("uint4", 8, False), 32)],
)
def test_weight_only_linear_numerics_and_size(qconfig, packed_cols):
    torch.manual_seed(5)
    lin = nn.Linear(64, 10)
    lin.qconfig = getattr(wo, qconfig) if isinstance(qconfig, str) else wo.weight_only_qconfig(*qconfig)
    q = wo.Linear.from_float(lin)
    assert q._qweight.shape == (10, packed_cols) and q._qweight.element_size() == 1
    x = torch.randn(6, 64)
    w = q.weight().dequantize().reshape(10, 64)
    assert torch.equal(q(x), F.linear(x, w, lin.bias))
    step = (lin.weight - w).abs().max().item()
    assert step <= q.weight_scale.max().item() * 0.5 + 1e-6  # every weight within half a step
    q_cached = wo.Linear.from_float(lin, cache_dequantized=True)
    assert torch.equal(q_cached(x), q(x))
    assert torch.equal(torch.jit.script(q)(x), q(x))
    assert torch.equal(torch.jit.script(q_cached)(x), q(x))


def test_weight_only_int4_weights_equal_per_channel_quantization():
    torch.manual_seed(6)
    lin = nn.Linear(9, 4)  # odd in_features: one padding nibble per row
    lin.qconfig = wo.weight_only_int4_qconfig
    q = wo.Linear.from_float(lin)
    observer = qcore.PerChannelMinMaxObserver(dtype="int4", qscheme="per_channel_symmetric")
    observer(lin.weight.detach())
    scale, zp = observer.calculate_qparams()
    expected = quantize_per_channel(lin.weight.detach(), scale.double(), zp, 0, "int4")
    assert torch.equal(q.weight().int_repr(), expected.int_repr())
    assert torch.equal(q.weight().dequantize(), expected.dequantize())
    assert q._qweight.shape == (4, 5)
    big = nn.Linear(256, 256)
    big.qconfig = wo.weight_only_int4_qconfig
    float_bytes = big.weight.numel() * 4
    assert wo.Linear.from_float(big).weight_bytes() == float_bytes // 8 + 256 * (8 + 8)  # + a scale, zero point per row


def test_groupwise_int4_beats_per_channel_with_outliers():
    g = torch.Generator().manual_seed(7)
    lin = nn.Linear(128, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(16, 128, generator=g) * 0.05)
        lin.weight[:, ::32] *= 40  # one outlier per group of 32 stretches the row's range
    per_channel, grouped = copy.deepcopy(lin), copy.deepcopy(lin)
    per_channel.qconfig = wo.weight_only_int4_qconfig
    grouped.qconfig = wo.weight_only_qconfig("int4", group_size=16)
    err_pc = (wo.Linear.from_float(per_channel).dequantized_weight() - lin.weight).abs().mean()
    q = wo.Linear.from_float(grouped)
    err_g = (q.dequantized_weight() - lin.weight).abs().mean()
    assert err_g < err_pc / 2
    assert "group_size=16" in repr(q)
    assert q.weight().shape == (16 * 8, 16)  # one row per group


@pytest.mark.parametrize("qconfig", [("int8",), ("int4",), ("int4", 32)])
def test_weight_only_linear_state_dict_round_trip(qconfig):
    torch.manual_seed(8)
    lin = nn.Linear(64, 12)
    lin.qconfig = wo.weight_only_qconfig(*qconfig)
    q = wo.Linear.from_float(lin)
    buffer = io.BytesIO()
    torch.save(q.state_dict(), buffer)
    buffer.seek(0)
    fresh = wo.Linear(64, 12, dtype=qconfig[0])  # per tensor: the saved qparams' shapes differ
    fresh.load_state_dict(torch.load(buffer))
    x = torch.randn(3, 64)
    assert torch.equal(fresh(x), q(x)) and repr(fresh) == repr(q)


def test_weight_only_linear_errors_and_mappings():
    with pytest.raises(ConfigError, match="group_size"):
        wo.Linear(10, 4, dtype="int4", group_size=3)
    with pytest.raises(ConfigError, match="qconfig"):
        wo.Linear.from_float(nn.Linear(4, 2))
    bad = nn.Linear(4, 2)
    bad.qconfig = qcore.float16_dynamic_qconfig
    with pytest.raises(ConfigError, match="float16"):
        wo.Linear.from_float(bad)
    q = wo.Linear(4, 2)
    with pytest.raises(QuantizationError, match="DeQuantStub"):
        q(quantize_per_tensor(torch.randn(1, 4), 0.1, 0, "uint8"))
    table = wo.WEIGHT_ONLY_MAPPINGS
    assert table[nn.Linear] is wo.Linear and table[nn.Embedding] is Embedding and table[nn.EmbeddingBag] is EmbeddingBag
    assert wo.Embedding is Embedding and wo.EmbeddingBag is EmbeddingBag


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_digits_classifier_weight_only_accuracy(dtype):
    """A small MLP on the digits: int8 weight-only within 0.5 point of fp32, int4 (groups of 16) within 2."""
    x, y = digits()
    train, test = digits_split(len(x))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    fit(model, x, y, train, epochs=20)

    def accuracy(m: nn.Module) -> float:
        return _helpers.accuracy(m, x[test], y[test])

    fp32 = accuracy(model)
    quantized = copy.deepcopy(model)
    qconfig = wo.weight_only_qconfig(dtype, group_size=16 if dtype == "int4" else None)
    for index in (0, 2):
        quantized[index].qconfig = qconfig
        quantized[index] = wo.WEIGHT_ONLY_MAPPINGS[nn.Linear].from_float(quantized[index])
    assert accuracy(quantized) >= fp32 - (0.5 if dtype == "int8" else 2.0)


def test_loading_a_weight_of_another_shape_is_an_error():
    lin = nn.Linear(8, 4)
    lin.qconfig = wo.weight_only_int4_qconfig
    state = wo.Linear.from_float(lin).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch for weight"):
        wo.Linear(6, 4, dtype="int4").load_state_dict(state)
    with pytest.raises(RuntimeError, match="size mismatch"):
        wo.Linear(8, 5, dtype="int4").load_state_dict(state)
    fresh = wo.Linear(8, 4, dtype="int8")  # another dtype, same shape: the checkpoint's dtype wins
    fresh.load_state_dict(state)
    assert fresh.weight_dtype is dtypes.int4 and fresh._qweight.shape == (4, 4)
