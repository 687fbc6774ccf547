"""fbgemm's dynamic and weight-only kernel modules against qcore's reference modules and torch.ao's.

Bounds (see the kernel modules' docstrings): dynamic Linear within one input
quantization step on one element (``input_scale * max|W_row|``); recurrent
modules within 1e-5 (float32 summation order); 8-bit tables within float32
rounding; 4-bit tables within the float16 rounding of row scale and bias.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import subprocess
import sys
import textwrap
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
from qcore.nn.quantized import dynamic as qd
from qcore.nn.quantized.dynamic.functional import choose_dynamic_qparams
from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings
from qcore.nn.quantized.weight_only import weight_only_qconfig

from qcore_fbgemm import dynamic as fd

torch.set_num_threads(1)
SETTINGS = dict(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DYNAMIC_QCONFIGS = ["default_dynamic_qconfig", "per_channel_dynamic_qconfig", "float16_dynamic_qconfig"]
TABLE_QCONFIGS = {8: "float_qparams_weight_only_qconfig", 4: "float_qparams_weight_only_qconfig_4bit"}


def oracle(fn, *args, **kwargs):
    """torch.ao calls, their deprecation warnings silenced (tests only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def ao():
    """(torch.ao.nn.quantized, torch.ao.nn.quantized.dynamic, torch.ao.quantization), or skip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nnq = pytest.importorskip("torch.ao.nn.quantized")
        nnqd = pytest.importorskip("torch.ao.nn.quantized.dynamic")
        tq = pytest.importorskip("torch.ao.quantization")
    return nnq, nnqd, tq


def flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for item in value for t in flat(item)]


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(flat(a), flat(b)))


def reference_of(float_mod: nn.Module, qconfig, kind: str, package=qd) -> nn.Module:
    mod = copy.deepcopy(float_mod)
    mod.qconfig = qconfig
    return getattr(package, kind).from_float(mod)


def torch_ao_of(float_mod: nn.Module, qconfig_name: str, kind: str, package: str = "dynamic") -> nn.Module:
    nnq, nnqd, tq = ao()
    mod = copy.deepcopy(float_mod)
    mod.qconfig = getattr(tq, qconfig_name)
    return oracle((nnqd if package == "dynamic" else nnq).__dict__[kind].from_float, mod)


@functools.lru_cache(maxsize=None)
def digits_rows() -> torch.Tensor:
    datasets = pytest.importorskip("sklearn.datasets")
    return torch.tensor(datasets.load_digits().data, dtype=torch.float32).reshape(-1, 8, 8) / 16.0


# --- Linear ------------------------------------------------------------------------------------------------


@settings(**SETTINGS)
@given(
    st.integers(1, 6), st.integers(1, 48), st.integers(1, 24), st.sampled_from([1e-3, 0.5, 3.0, 200.0]),
    st.sampled_from([0.0, 1.0, -5.0]), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 2**16),
)
def test_dynamic_linear_within_one_input_step_of_the_reference(batch, k, n, spread, offset, per_channel, reduce_range, relu, seed):
    g = torch.Generator().manual_seed(seed)
    float_mod = nn.Linear(k, n)
    with torch.no_grad():
        float_mod.weight.copy_(torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g))
    qconfig = qcore.per_channel_dynamic_qconfig if per_channel else qcore.default_dynamic_qconfig
    ref = reference_of(float_mod, qconfig, "Linear")
    if relu:
        ref = qd.LinearReLU.from_float(_fused(float_mod, qconfig))
    ref.apply_settings(DynamicQuantSettings("int8", reduce_range=reduce_range))
    kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
    assert isinstance(kernel, type(ref)) and kernel._packed is not None
    x = torch.randn(batch, k, generator=g) * spread + offset * spread
    step, _ = choose_dynamic_qparams(float(x.min()), float(x.max()), 0, 255, reduce_range)
    bound = step * ref.weight().dequantize().abs().amax(dim=1)
    diff = (kernel(x) - ref(x)).abs()
    assert bool((diff <= bound).all()), (diff.max().item(), bound.min().item())


def _fused(linear: nn.Linear, qconfig) -> nn.Module:
    from qcore.nn.intrinsic import LinearReLU

    fused = LinearReLU(copy.deepcopy(linear), nn.ReLU())
    fused.qconfig = qconfig
    return fused


def test_float16_linear_matches_the_reference_to_summation_order():
    torch.manual_seed(0)
    ref = reference_of(nn.Linear(64, 32), qcore.float16_dynamic_qconfig, "Linear")
    kernel = fd.FbgemmDynamicLinear.from_reference(ref)
    x = torch.randn(16, 64) * 4
    magnitude = x.abs() @ ref.dequantized_weight().abs().T
    assert bool(((kernel(x) - ref(x)).abs() <= 1e-6 * magnitude + 1e-6).all())


@pytest.mark.parametrize("qconfig_name", DYNAMIC_QCONFIGS)
def test_dynamic_linear_equals_torch_ao_on_the_same_weights(qconfig_name):
    torch.manual_seed(1)
    float_mod = nn.Linear(37, 11)
    kernel = fd.FbgemmDynamicLinear.from_reference(reference_of(float_mod, getattr(qcore, qconfig_name), "Linear"))
    theirs = torch_ao_of(float_mod, qconfig_name, "Linear")
    rows = digits_rows().reshape(-1, 64)[:50, :37]
    for x in (torch.randn(64, 37) * 3, torch.randn(2, 5, 37), rows):
        assert torch.equal(kernel(x), oracle(theirs, x))


def test_dynamic_linear_inputs_and_errors():
    torch.manual_seed(2)
    kernel = fd.FbgemmDynamicLinear.from_reference(reference_of(nn.Linear(6, 3), qcore.default_dynamic_qconfig, "Linear"))
    kernel._qcore_name = "encoder.proj"
    x = torch.randn(4, 6)
    assert kernel(x.double()).dtype == torch.float64
    assert torch.equal(kernel(x.double()), kernel(x).double())
    assert torch.equal(kernel(x.T.contiguous().T), kernel(x))
    assert kernel(torch.randn(2, 3, 6)).shape == (2, 3, 3)
    empty = kernel(torch.zeros(0, 6))
    assert empty.shape == (0, 3)
    # fbgemm rejects a range it cannot quantize; the error names the module and the cause. (Not every NaN
    # makes fbgemm's min/max fail: like torch.ao, the kernels do not spend a pass over the input to look.)
    with pytest.raises(QuantizationError, match=r"encoder\.proj.*NaN or infinite"):
        kernel(torch.tensor([[float("nan"), 1.0, 0, 0, 0, 0]]))
    with pytest.raises(QuantizationError, match="DeQuantStub"):
        kernel(qcore.quantize_per_tensor(x, 0.1, 0, "uint8"))
    with pytest.raises(QuantizationError, match="float tensor"):
        kernel(torch.ones(2, 6, dtype=torch.long))


# --- recurrent layers and cells -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,qconfig_name,args",
    [
        ("LSTM", "default_dynamic_qconfig", dict(num_layers=2, bidirectional=True, batch_first=True)),
        ("LSTM", "per_channel_dynamic_qconfig", dict(num_layers=2)),
        ("LSTM", "float16_dynamic_qconfig", dict(bidirectional=True)),
        ("LSTM", "default_dynamic_qconfig", dict(bias=False, batch_first=True)),
        ("GRU", "default_dynamic_qconfig", dict(num_layers=2, batch_first=True)),
        ("GRU", "per_channel_dynamic_qconfig", dict(bidirectional=True)),
        ("GRU", "float16_dynamic_qconfig", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ],
)
def test_recurrent_layers_match_the_reference_and_torch_ao(kind, qconfig_name, args):
    """Within 1e-5 of both (observed ~1e-7): torch's recurrence sums in another order, nothing else."""
    torch.manual_seed(3)
    float_mod = getattr(nn, kind)(8, 12, **args)
    ref = reference_of(float_mod, getattr(qcore, qconfig_name), kind)
    kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
    theirs = torch_ao_of(float_mod, qconfig_name, kind) if args.get("bias", True) else None  # torch.ao needs biases
    batch_first = args.get("batch_first", False)
    rows = digits_rows()[:16]  # real data: 16 images, 8 rows of 8 pixels
    seq = rows if batch_first else rows.transpose(0, 1)
    layers = args.get("num_layers", 1) * (2 if args.get("bidirectional") else 1)
    h0 = torch.randn(layers, 16, 12) * 0.3
    state = (h0, h0 * 0.5) if kind == "LSTM" else h0
    for call in ((seq,), (seq, state), (rows[0],)):
        got = kernel(*call)
        assert max_diff(got, ref(*call)) <= 1e-5
        if theirs is not None and (len(call) == 2 or call[0].dim() == 3):
            assert max_diff(got, oracle(theirs, *call)) <= 1e-5


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
@pytest.mark.parametrize("qconfig_name", DYNAMIC_QCONFIGS)
def test_cells_match_the_reference_and_torch_ao(kind, qconfig_name):
    torch.manual_seed(4)
    float_mod = getattr(nn, kind)(5, 7)
    ref = reference_of(float_mod, getattr(qcore, qconfig_name), kind)
    kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
    theirs = torch_ao_of(float_mod, qconfig_name, kind)
    x, h, c = torch.randn(4, 5) * 2, torch.randn(4, 7), torch.randn(4, 7)
    state = (h, c) if kind == "LSTMCell" else h
    for call in ((x, state), (x,)):
        assert max_diff(kernel(*call), ref(*call)) <= 1e-5
        assert max_diff(kernel(*call), oracle(theirs, *call)) <= 1e-5
    single = kernel(x[0], (h[0], c[0]) if kind == "LSTMCell" else h[0])
    assert max_diff(single, ref(x[0], (h[0], c[0]) if kind == "LSTMCell" else h[0])) <= 1e-5


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell", "LSTM", "GRU"])
def test_full_range_activations_follow_the_reference(kind):
    """reduce_range=False: the layers pass it to torch's recurrence, the cells run their gates in Python."""
    torch.manual_seed(5)
    float_mod = nn.RNNCell(5, 7, nonlinearity="relu") if kind == "RNNCell" else getattr(nn, kind)(5, 7)
    ref = reference_of(float_mod, qcore.per_channel_dynamic_qconfig, kind)
    kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
    for module in (ref, kernel):
        module.apply_settings(DynamicQuantSettings("int8", reduce_range=False))
    x = torch.randn(3, 5) * 2 if "Cell" in kind else torch.randn(6, 3, 5) * 2
    assert max_diff(kernel(x), ref(x)) <= 1e-5
    reduced = copy.deepcopy(ref)
    reduced.apply_settings(DynamicQuantSettings("int8", reduce_range=True))
    assert max_diff(kernel(x), reduced(x)) > 1e-4  # the setting is honoured, not ignored


# --- embedding tables ----------------------------------------------------------------------------------------


def _table_bound(ref: nn.Module, bits: int) -> torch.Tensor:
    """Per-row bound on |kernel row - reference row|: float32 rounding (8-bit), float16 scale and bias (4-bit)."""
    w = ref.weight()
    scale = w.q_per_channel_scales().float()
    bias = (w.q_per_channel_zero_points().float() - ref.weight_dtype.quant_min) * scale
    if bits == 4:
        return 2.0**-11 * (15 * scale + bias.abs()) + 1e-6
    return 1e-6 * (255 * scale + bias.abs()) + 1e-7


@settings(**SETTINGS)
@given(
    st.sampled_from([8, 4]), st.booleans(), st.sampled_from([1, 7, 16]), st.sampled_from(["sum", "mean"]),
    st.booleans(), st.booleans(), st.integers(0, 2**16),
)
def test_embedding_bag_within_its_bound_of_the_reference(bits, signed, dim, mode, last_offset, weighted, seed):
    g = torch.Generator().manual_seed(seed)
    float_mod = nn.EmbeddingBag(30, dim, mode=mode, include_last_offset=last_offset)
    with torch.no_grad():
        float_mod.weight.copy_(torch.randn(30, dim, generator=g) * 2 + torch.rand(30, 1, generator=g))
    qconfig = weight_only_qconfig(f"int{bits}") if signed else getattr(qcore, TABLE_QCONFIGS[bits])
    ref = reference_of(float_mod, qconfig, "EmbeddingBag", package=qcore.nn.quantized)
    kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
    idx = torch.randint(0, 30, (25,), generator=g)
    offsets = torch.tensor([0, 4, 4, 11, 24] + ([25] if last_offset else []))
    psw = torch.rand(25, generator=g) if weighted and mode == "sum" else None
    got, want = kernel(idx, offsets, psw), ref(idx, offsets, psw)
    # A bag's error is at most the sum of its rows' bounds (times their weights), then the mean divides it.
    row_bound = _table_bound(ref, bits)[idx] * (psw if psw is not None else 1.0)
    bound = F.embedding_bag(torch.arange(25), row_bound.unsqueeze(1), offsets, mode=mode,
                            include_last_offset=last_offset)
    assert bool(((got - want).abs() <= bound + 1e-5 * want.abs()).all())
    two_d = torch.randint(0, 30, (3, 4), generator=g)
    expected = reference_of(float_mod, qconfig, "EmbeddingBag", package=qcore.nn.quantized)
    expected.include_last_offset = False
    kernel.include_last_offset = False
    assert (kernel(two_d) - expected(two_d)).abs().max().item() <= 4 * _table_bound(ref, bits).max().item() + 1e-5


@pytest.mark.parametrize("bits", [8, 4])
def test_tables_match_torch_ao(bits):
    torch.manual_seed(6)
    bag = nn.EmbeddingBag(50, 16, mode="sum")
    kernel = fd.FbgemmEmbeddingBag.from_reference(
        reference_of(bag, getattr(qcore, TABLE_QCONFIGS[bits]), "EmbeddingBag", package=qcore.nn.quantized))
    theirs = torch_ao_of(bag, TABLE_QCONFIGS[bits], "EmbeddingBag", package="static")
    idx, offsets, psw = torch.randint(0, 50, (30,)), torch.tensor([0, 5, 5, 12, 29]), torch.rand(30)
    for call in ((idx, offsets), (idx, offsets, psw)):
        assert torch.allclose(kernel(*call), oracle(theirs, *call), rtol=0, atol=1e-5)
    if bits == 8:
        emb = nn.Embedding(50, 16)
        kernel = fd.FbgemmEmbedding.from_reference(
            reference_of(emb, qcore.float_qparams_weight_only_qconfig, "Embedding", package=qcore.nn.quantized))
        theirs = torch_ao_of(emb, TABLE_QCONFIGS[8], "Embedding", package="static")
        ids = torch.randint(0, 50, (4, 7))
        assert torch.allclose(kernel(ids), oracle(theirs, ids), rtol=0, atol=1e-6)


def test_embedding_lookup_equals_the_reference():
    torch.manual_seed(7)
    emb = nn.Embedding(40, 12, padding_idx=0)
    for qconfig, atol in ((qcore.float_qparams_weight_only_qconfig, 1e-6), (qcore.float_qparams_weight_only_qconfig_4bit, 4e-3)):
        ref = reference_of(emb, qconfig, "Embedding", package=qcore.nn.quantized)
        kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
        ids = torch.tensor([[0, 3, 39], [5, 5, 0]])
        assert kernel(ids).shape == (2, 3, 12)
        assert torch.allclose(kernel(ids), ref(ids), rtol=0, atol=atol)
        with pytest.raises(QuantizationError, match="outside the table"):
            kernel(torch.tensor([40]))


# --- what is not lowered ------------------------------------------------------------------------------------


def test_configurations_the_kernels_cannot_compute_keep_the_reference():
    cases = []
    bag = nn.EmbeddingBag(10, 4, mode="max")
    cases.append((reference_of(bag, qcore.float_qparams_weight_only_qconfig, "EmbeddingBag", qcore.nn.quantized), "max"))
    bag = nn.EmbeddingBag(10, 4, padding_idx=2)
    cases.append((reference_of(bag, qcore.float_qparams_weight_only_qconfig, "EmbeddingBag", qcore.nn.quantized), "padding_idx"))
    emb = nn.Embedding(10, 4, max_norm=1.0)
    cases.append((reference_of(emb, qcore.float_qparams_weight_only_qconfig, "Embedding", qcore.nn.quantized), "max_norm"))
    linear = reference_of(nn.Linear(4, 3), qcore.default_dynamic_qconfig, "Linear")
    linear.apply_settings(DynamicQuantSettings("int8", act_dtype="int8"))
    cases.append((linear, "uint8"))
    for ref, reason in cases:
        assert reason in fd.unsupported_reason(ref)
        assert fd.DYNAMIC_LOWERINGS[type(ref)](ref) is None
        with pytest.raises(ConfigError, match=reason):
            fd.KERNEL_MODULES[type(ref)].from_reference(ref)
    assert "no dynamic or weight-only kernel" in fd.unsupported_reason(nn.Linear(2, 2))
    kernel = fd.FbgemmDynamicLinear.from_reference(reference_of(nn.Linear(4, 3), qcore.default_dynamic_qconfig, "Linear"))
    with pytest.raises(ConfigError, match="uint8"):
        kernel.apply_settings(DynamicQuantSettings("int8", act_dtype="int8"))


# --- module behaviour: state dict, repr, TorchScript, checkpoints, the flow --------------------------------------


def _zoo():
    """(reference, kernel, input) for each kernel class."""
    torch.manual_seed(8)
    q8, emb8 = qcore.per_channel_dynamic_qconfig, qcore.float_qparams_weight_only_qconfig
    pairs = [
        (reference_of(nn.Linear(6, 4), q8, "Linear"), torch.randn(3, 6)),
        (qd.LinearReLU.from_float(_fused(nn.Linear(6, 4), qcore.float16_dynamic_qconfig)), torch.randn(3, 6)),
        (reference_of(nn.LSTM(6, 4, num_layers=2, batch_first=True), q8, "LSTM"), torch.randn(3, 5, 6)),
        (reference_of(nn.GRU(6, 4, bidirectional=True), qcore.float16_dynamic_qconfig, "GRU"), torch.randn(5, 3, 6)),
        (reference_of(nn.RNNCell(6, 4), q8, "RNNCell"), torch.randn(3, 6)),
        (reference_of(nn.LSTMCell(6, 4), q8, "LSTMCell"), torch.randn(3, 6)),
        (reference_of(nn.GRUCell(6, 4), q8, "GRUCell"), torch.randn(3, 6)),
        (reference_of(nn.EmbeddingBag(20, 6, mode="mean"), emb8, "EmbeddingBag", qcore.nn.quantized), torch.randint(0, 20, (3, 4))),
        (reference_of(nn.Embedding(20, 6), emb8, "Embedding", qcore.nn.quantized), torch.randint(0, 20, (3, 4))),
    ]
    return [(ref, fd.DYNAMIC_LOWERINGS[type(ref)](ref), x) for ref, x in pairs]


def test_kernel_modules_keep_the_reference_state_dict_and_repack_on_load():
    for ref, kernel, x in _zoo():
        name = type(kernel).__name__
        want, got = ref.state_dict(), kernel.state_dict()
        assert list(got) == list(want), name
        assert all(torch.equal(got[k], want[k]) for k in want if isinstance(want[k], torch.Tensor)), name
        # Another reference's weights load into the kernel module, which repacks and follows them.
        other = copy.deepcopy(ref)
        for key, value in other.state_dict().items():
            if key.endswith("weight") and value.dtype == torch.int8:
                value.copy_(value.flip(-1))
            elif key.endswith("weight") and value.dtype == torch.float16:
                value.mul_(-1)
            elif key.endswith("weight") and value.dtype == torch.uint8:
                value.copy_(255 - value)
        other.load_state_dict(other.state_dict())  # refresh the reference's own caches
        kernel.load_state_dict(other.state_dict())
        assert max_diff(kernel(x), other(x)) <= 1e-5, name
        assert max_diff(kernel(x), ref(x)) > 1e-4, name
        back = copy.deepcopy(ref)
        back.load_state_dict(kernel.state_dict())
        assert max_diff(back(x), other(x)) == 0, name


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_repr_scripting_and_jit_save_load():
    for ref, kernel, x in _zoo():
        name = type(kernel).__name__
        assert repr(kernel).replace(", kernel=fbgemm", "") == repr(ref), name
        assert "kernel=fbgemm" in repr(kernel)
        scripted = torch.jit.script(kernel)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
        eager = kernel(x)
        assert max_diff(scripted(x), eager) == 0, name
        assert max_diff(loaded(x), eager) == 0, name
        assert max_diff(copy.deepcopy(kernel)(x), eager) == 0, name


def test_to_reference_and_qcore_checkpoints(tmp_path):
    for ref, kernel, x in _zoo():
        back = kernel.to_reference()
        assert type(back) is type(ref) and max_diff(back(x), ref(x)) == 0
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(8, 8), nn.LSTM(8, 4, num_layers=2))
    with qcore.backend("reference"):
        reference_model = qcore.quantize_dynamic(model)
        path = tmp_path / "model.qcore"
        qcore.save(reference_model, path)
    loaded = qcore.load(path, backend="fbgemm")
    assert [type(m) for m in loaded] == [fd.FbgemmDynamicLinear, fd.FbgemmDynamicLSTM]
    x = torch.randn(5, 3, 8)
    assert max_diff(loaded[1](loaded[0](x)), reference_model[1](reference_model[0](x))) <= 1e-5
    qcore.save(loaded, tmp_path / "lowered.qcore")  # a lowered model saves as its reference form
    with qcore.backend("reference"):
        again = qcore.load(tmp_path / "lowered.qcore")
    assert [type(m) for m in again] == [qd.Linear, qd.LSTM]


def test_quantize_dynamic_lowers_on_fbgemm_only():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.GRU(8, 4))
    with qcore.backend("fbgemm"):
        lowered = qcore.quantize_dynamic(model)
    with qcore.backend("reference"):
        kept = qcore.quantize_dynamic(model)
    assert [type(m) for m in lowered] == [fd.FbgemmDynamicLinear, nn.ReLU, fd.FbgemmDynamicGRU]
    assert [type(m) for m in kept] == [qd.Linear, nn.ReLU, qd.GRU]
    assert lowered[0]._qcore_name == "0"
    x = torch.randn(5, 2, 8)
    assert max_diff(lowered(x), kept(x)) <= 1e-5


# --- the recommended configuration -----------------------------------------------------------------------------


def test_recommended_configuration():
    torch.manual_seed(11)
    model = nn.Sequential(nn.EmbeddingBag(100, 16), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    model[1].weight.data[0, 0] = 5.0  # one outlier: per-channel scales keep the other rows fine
    spec = fd.recommended_dynamic_qconfig_spec()
    assert spec[nn.Linear] is fd.recommended_dynamic_qconfig and spec[nn.EmbeddingBag] is fd.recommended_embedding_qconfig
    assert spec[nn.LSTM] is fd.recommended_recurrent_qconfig and spec[nn.GRUCell] is fd.recommended_recurrent_qconfig
    with qcore.backend("fbgemm"):
        q = fd.quantize_dynamic_recommended(model)
    with qcore.backend("reference"):
        ref = fd.quantize_dynamic_recommended(model)
    assert isinstance(q[0], fd.FbgemmEmbeddingBag) and q[0].weight_dtype is dtypes.uint8
    for linear in (q[1], q[3]):
        assert isinstance(linear, fd.FbgemmDynamicLinear) and linear.per_token and not linear.reduce_range
        w = linear.weight()
        assert w.qscheme() is qcore.per_channel_symmetric
        assert w.int_repr().abs().max().item() == 63
    assert isinstance(ref[1], qd.Linear) and ref[1].per_token and not ref[1].reduce_range
    ids = torch.randint(0, 100, (8, 5))
    assert max_diff(q(ids), ref(ids)) <= 1e-4  # the tables differ by float32 rounding; the per-token Linears are exact
    assert torch.equal(q[1](ref[0](ids)), ref[1](ref[0](ids)))
    assert model[1].weight.dtype == torch.float32  # the float model is untouched


_AVX2_CHECK = textwrap.dedent(
    """
    import torch, qcore
    from torch import nn
    from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings
    from qcore_fbgemm import dynamic as fd

    def worst_case(weight_qconfig):
        linear = nn.Linear(64, 4, bias=False)
        with torch.no_grad():
            linear.weight.fill_(1.0)  # every pair of products at its largest
        linear.qconfig = weight_qconfig
        ref = qcore.nn.quantized.dynamic.Linear.from_float(linear)
        ref.apply_settings(DynamicQuantSettings("int8", reduce_range=False))
        kernel = fd.FbgemmDynamicLinear.from_reference(ref)
        x = torch.full((2, 64), 3.0)
        x[:, 0] = 0.0  # uint8 255 everywhere else
        return (kernel(x) - ref(x)).abs().max().item() / ref(x).abs().max().item()

    print(worst_case(fd.recommended_recurrent_qconfig), worst_case(qcore.per_channel_dynamic_qconfig))
    """
)


def test_recommended_weights_are_exact_on_avx2_without_vnni():
    """fbgemm's AVX2 kernel adds pairs of uint8 x int8 products in int16: 7-bit weights never overflow, 8-bit do.

    (The per-tensor kernels the recommended recurrent modules use; the per-token Linear: test_fbgemm_per_token.py.)
    """
    env = dict(os.environ, FBGEMM_ENABLE_INSTRUCTIONS="AVX2")
    out = subprocess.run([sys.executable, "-c", _AVX2_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seven_bit, eight_bit = map(float, out.stdout.split())
    assert seven_bit < 1e-6
    assert eight_bit > 0.1  # the check would see an overflow


def test_torch_deprecation_warnings_stay_inside_the_plugin():
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("error")
        import torch, qcore
        from torch import nn
        from qcore_fbgemm import dynamic as fd
        model = nn.Sequential(nn.EmbeddingBag(10, 8), nn.Linear(8, 8), nn.LSTM(8, 4))
        q = fd.quantize_dynamic_recommended(model)
        q16 = qcore.quantize_dynamic(nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 4)), dtype=torch.float16)
        q[1](q[0](torch.randint(0, 10, (2, 3))))
        q16(torch.randn(3, 2, 4))
        print(type(q[2]).__name__)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "FbgemmDynamicLSTM"
    assert "deprecat" not in out.stderr.lower()
