"""qcore.affine against torch's quantized kernels, bit for bit (torch is only the oracle here)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcore import dtypes
from qcore.affine import (
    dequantize_affine,
    fake_quantize_affine,
    fake_quantize_affine_cachemask,
    quantize_affine,
    quantize_float16,
)
from qcore.errors import QuantizationError

torch.set_num_threads(1)

# The oracle: torch's quantized kernels as built with fbgemm (x86); other builds round some ties
# differently (docs/numerics.md), so the bit-exact comparisons need that build.
HAVE_ORACLE = (
    hasattr(torch, "quantize_per_tensor")
    and hasattr(torch, "quint8")
    and "fbgemm" in getattr(torch.backends.quantized, "supported_engines", ())
)
torch_oracle = pytest.mark.skipif(not HAVE_ORACLE, reason="needs torch's quantized kernels built with fbgemm (the oracle)")

SETTINGS = dict(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# (torch quantized dtype, storage dtype, quant_min, quant_max)
DTYPES = [
    (getattr(torch, "quint8", None), torch.uint8, 0, 255),
    (getattr(torch, "qint8", None), torch.int8, -128, 127),
    (getattr(torch, "qint32", None), torch.int32, -(2**31), 2**31 - 1),
]


def oracle(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (so -0.0 != 0.0 and NaN == NaN of the same payload)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        view = {torch.float32: torch.int32, torch.float64: torch.int64, torch.float16: torch.int16, torch.bfloat16: torch.int16}[a.dtype]
        return torch.equal(a.contiguous().view(view), b.contiguous().view(view))
    return torch.equal(a, b)


shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
# Positive float32 scales across the whole normal range (tiny ones overflow 1/scale * x to inf).
scales = st.one_of(
    st.floats(min_value=2.0**-20, max_value=2.0**14, width=32),
    st.floats(min_value=float(torch.finfo(torch.float32).tiny), max_value=float(torch.finfo(torch.float32).max), width=32),
    st.sampled_from([float(torch.finfo(torch.float32).eps), 1.0, 0.5, 2.0**-10, 0.1]),
).filter(lambda s: s > 0)


@st.composite
def values_for(draw, shape, scale: torch.Tensor, *, ties=True, inf=True, spread=300):
    """float32 data with exact .5 ties ((k + 0.5) * scale), grid points, arbitrary floats and ±inf."""
    n = math.prod(shape)
    k = torch.tensor(draw(st.lists(st.integers(-spread, spread), min_size=n, max_size=n)), dtype=torch.float32)
    kind = torch.tensor(draw(st.lists(st.integers(0, 5 if inf else 3), min_size=n, max_size=n)), dtype=torch.int64)
    noise = torch.tensor(draw(st.lists(st.floats(-1.0, 1.0, width=32), min_size=n, max_size=n)), dtype=torch.float32)
    scale = scale.expand(shape).reshape(-1).to(torch.float32) if n else scale.reshape(-1)[:0].to(torch.float32)
    x = torch.where(kind == 0, (k + 0.5) * scale if ties else k * scale, (k + noise) * scale)
    x = torch.where(kind == 1, k * scale, x)
    x = torch.where(kind == 4, torch.full_like(x, math.inf), x)
    x = torch.where(kind == 5, torch.full_like(x, -math.inf), x)
    return x.reshape(shape)


def channel_view(v: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


# --- quantize / dequantize ---------------------------------------------------------


@torch_oracle
@pytest.mark.parametrize("qdtype,storage,qmin,qmax", DTYPES)
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes, scale=scales)
def test_quantize_per_tensor_matches_torch(qdtype, storage, qmin, qmax, data, shape, scale):
    lo, hi = (qmin, qmax) if storage != torch.int32 else (-(2**31), 2**31 - 1)
    zp = data.draw(st.integers(lo, hi), label="zero_point")
    x = data.draw(values_for(shape, torch.tensor(scale)), label="x")
    ref = oracle(torch.quantize_per_tensor, x, scale, zp, qdtype)
    q = quantize_affine(x, scale, zp, qmin, qmax, storage)
    assert q.dtype == storage
    assert torch.equal(q, ref.int_repr())
    diff = q.to(torch.int64) - zp
    if storage != torch.int32 or bool(((diff >= -(2**31)) & (diff < 2**31)).all()):
        # torch subtracts int32 zero points with wrap-around; qcore does not (docs/numerics.md).
        assert same_bits(dequantize_affine(q, scale, zp), oracle(ref.dequantize))


@torch_oracle
@pytest.mark.parametrize("qdtype,storage,qmin,qmax", DTYPES)
@settings(**SETTINGS)
@given(data=st.data(), shape=nonempty_shapes)
def test_quantize_per_channel_matches_torch(qdtype, storage, qmin, qmax, data, shape):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    channels = shape[axis]
    chan_scales = torch.tensor(data.draw(st.lists(scales, min_size=channels, max_size=channels)), dtype=torch.float64)
    if data.draw(st.booleans(), label="float64 scales"):
        chan_scales = chan_scales * (1 + 1e-12)  # not float32-representable: torch keeps float64 for dequantize
    lo, hi = (qmin, qmax) if storage != torch.int32 else (-(2**20), 2**20)
    zps = torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=channels, max_size=channels)), dtype=torch.int64)
    x = data.draw(values_for(shape, channel_view(chan_scales.float(), axis % len(shape), len(shape))), label="x")
    ref = oracle(torch.quantize_per_channel, x, chan_scales, zps, axis % len(shape), qdtype)
    q = quantize_affine(x, chan_scales, zps, qmin, qmax, storage, axis=axis)
    assert torch.equal(q, ref.int_repr())
    assert same_bits(dequantize_affine(q, chan_scales, zps, axis=axis), oracle(ref.dequantize))


@torch_oracle
@settings(**SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), scale=scales)
def test_quantize_uint4_matches_torch_quint4x2(data, shape, scale):
    zp = data.draw(st.integers(0, 15))
    x = data.draw(values_for(shape, torch.tensor(scale), spread=20))
    # torch's quint4x2 kernel casts x / scale >= 2**63 (and +inf) to int64 with undefined
    # behaviour (0 on x86); qcore saturates, see test_infinities_saturate_and_nan_raises.
    x = torch.where(x * (1 / torch.tensor(scale)) < 2.0**62, x, torch.zeros_like(x))
    ref = oracle(torch.quantize_per_tensor, x, scale, zp, torch.quint4x2)
    packed = ref.int_repr()  # torch packs the flattened tensor, low nibble first
    unpacked = torch.stack((packed & 0xF, packed >> 4), -1).reshape(-1)[: x.numel()].reshape(shape)
    q = quantize_affine(x, scale, zp, 0, 15, dtypes.uint4)
    assert torch.equal(q, unpacked)
    assert same_bits(dequantize_affine(q, scale, zp), oracle(ref.dequantize))


@torch_oracle
@settings(**SETTINGS)
@given(data=st.data(), shape=nonempty_shapes)
def test_float_qparams_per_channel_matches_torch(data, shape):
    axis = data.draw(st.integers(0, len(shape) - 1))
    channels = shape[axis]
    chan_scales = torch.tensor(data.draw(st.lists(st.floats(2.0**-13, 10.0, width=32), min_size=channels, max_size=channels)))
    zps = torch.tensor(data.draw(st.lists(st.floats(-300, 300, width=32), min_size=channels, max_size=channels)))
    x = data.draw(values_for(shape, channel_view(chan_scales, axis, len(shape)), inf=False))
    ref = oracle(torch.quantize_per_channel, x, chan_scales, zps, axis, torch.quint8)
    q = quantize_affine(x, chan_scales, zps, 0, 255, torch.uint8, axis=axis)
    assert torch.equal(q, ref.int_repr())
    assert same_bits(dequantize_affine(q, chan_scales, zps, axis=axis), oracle(ref.dequantize))


def test_ties_round_to_even_and_custom_range_clamps():
    scale = 0.25  # a power of two: x / scale is exactly k + 0.5
    x = torch.tensor([0.125, 0.375, 0.625, -0.125, -0.375, 100.0, -100.0])
    assert quantize_affine(x, scale, 0, -128, 127, torch.int8).tolist() == [0, 2, 2, 0, -2, 127, -128]
    # torch's 8-bit, int32 and per-channel kernels add the zero point before rounding, so an
    # odd zero point moves which way ties go; fake quantization and quint4x2 add it after.
    assert quantize_affine(x, scale, 3, 0, 15, torch.uint8).tolist() == [4, 4, 6, 2, 2, 15, 0]
    assert quantize_affine(x, scale, 3, 0, 15, dtypes.uint4).tolist() == [3, 5, 5, 3, 1, 15, 0]
    fake = fake_quantize_affine(x, scale, 3, 0, 15)
    assert (fake / scale + 3).tolist() == [3, 5, 5, 3, 1, 15, 0]


def test_infinities_saturate_and_nan_raises():
    x = torch.tensor([math.inf, -math.inf, 1.0])
    assert quantize_affine(x, 0.1, 10, 0, 255, torch.uint8).tolist() == [255, 0, 20]
    assert quantize_affine(x, 0.1, 0, -(2**31), 2**31 - 1, torch.int32).tolist()[:2] == [2**31 - 1, -(2**31)]
    assert quantize_affine(x, 0.1, 0, -8, 7, dtypes.int4).tolist() == [7, -8, 7]
    assert quantize_affine(x[None], torch.tensor([0.1]), torch.tensor([1]), -128, 127, torch.int8, axis=-2).tolist() == [[127, -128, 11]]
    with pytest.raises(QuantizationError, match="quantize_affine.*NaN"):
        quantize_affine(torch.tensor([1.0, math.nan]), 0.1, 0, 0, 255, torch.uint8)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(scale=0.0), "scale must be a finite positive"),
        (dict(scale=-1.0), "scale must be a finite positive"),
        (dict(scale=math.nan), "scale must be a finite positive"),
        (dict(scale=1e-300), "scale must be a finite positive"),
        (dict(zero_point=300), "zero points"),
        (dict(zero_point=1.5), "must be an integer"),
        (dict(quant_min=10, quant_max=5), "greater than quant_max"),
        (dict(quant_min=0, quant_max=300), "does not fit the storage range"),
        (dict(storage_dtype=torch.int16), "unsupported storage dtype"),
        (dict(storage_dtype=torch.float32), "float dtype, not integer storage"),
        (dict(storage_dtype="float16"), "float dtype"),
        (dict(scale=torch.tensor([0.1, 0.2])), "per-tensor scale must be a number"),
        (dict(axis=2, scale=torch.tensor([0.1, 0.2]), zero_point=torch.tensor([0, 0])), "axis 2 is out of range"),
        (dict(axis=0, scale=torch.tensor([0.1, 0.2, 0.3]), zero_point=torch.tensor([0, 0])), "one value per channel"),
        (dict(axis=0, scale=torch.tensor([0.1, -1.0]), zero_point=torch.tensor([0, 0])), r"bad channel\(s\) \[1\]"),
    ],
)
def test_quantize_affine_rejects_bad_arguments(kwargs, message):
    args = dict(x=torch.ones(2, 2), scale=0.1, zero_point=0, quant_min=0, quant_max=255, storage_dtype=torch.uint8)
    args.update(kwargs)
    with pytest.raises(QuantizationError, match=message):
        quantize_affine(**args)


def test_quantize_rejects_integer_input_and_dequantize_rejects_float():
    with pytest.raises(QuantizationError, match="floating-point"):
        quantize_affine(torch.ones(2, dtype=torch.int32), 0.1, 0, 0, 255, torch.uint8)
    with pytest.raises(QuantizationError, match="integer tensor"):
        dequantize_affine(torch.ones(2), 0.1, 0)


def test_quantize_float16_is_a_plain_non_saturating_cast():
    x = torch.tensor([1.0, 65504.0, 65519.0, 65520.0, -1e6, math.inf, math.nan, 1e-8])
    assert same_bits(quantize_float16(x), x.to(torch.float16))
    assert quantize_float16(x)[3].item() == math.inf


# --- fake quantization -----------------------------------------------------------------

FQ_RANGES = [(0, 255), (-128, 127), (0, 127), (-64, 63), (0, 15), (-8, 7), (-(2**31), 2**31 - 1)]


def run_backward(fn, x, grad):
    x = x.clone().requires_grad_(True)
    out = fn(x)
    out.backward(grad)
    return out.detach(), x.grad


@torch_oracle
@pytest.mark.parametrize("qmin,qmax", FQ_RANGES)
@settings(**SETTINGS)
@given(data=st.data(), shape=shapes, scale=scales, tensor_qparams=st.booleans())
def test_fake_quantize_per_tensor_matches_torch(qmin, qmax, data, shape, scale, tensor_qparams):
    lo, hi = (qmin, qmax) if qmax < 2**31 - 1 else (-(2**20), 2**20)
    zp = data.draw(st.integers(lo, hi))
    x = data.draw(values_for(shape, torch.tensor(scale)))
    grad = torch.randn(shape)
    s, z = (torch.tensor([scale]), torch.tensor([zp], dtype=torch.int32)) if tensor_qparams else (scale, zp)
    ref_out, ref_grad = run_backward(lambda t: oracle(torch.fake_quantize_per_tensor_affine, t, s, z, qmin, qmax), x, grad)
    out, out_grad = run_backward(lambda t: fake_quantize_affine(t, s, z, qmin, qmax), x, grad)
    assert same_bits(out, ref_out)
    assert same_bits(out_grad, ref_grad)
    _, mask = fake_quantize_affine_cachemask(x, s, z, qmin, qmax)
    assert torch.equal(mask, ref_grad != 0) or bool((grad == 0).any())


@torch_oracle
@pytest.mark.parametrize("qmin,qmax", FQ_RANGES)
@settings(**SETTINGS)
@given(data=st.data(), shape=nonempty_shapes, float_zero_points=st.booleans())
def test_fake_quantize_per_channel_matches_torch(qmin, qmax, data, shape, float_zero_points):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    channels = shape[axis]
    chan_scales = torch.tensor(data.draw(st.lists(scales, min_size=channels, max_size=channels)), dtype=torch.float32)
    lo, hi = (qmin, qmax) if qmax < 2**31 - 1 else (-(2**20), 2**20)
    if float_zero_points and qmax < 2**31 - 1:
        zps = torch.tensor(data.draw(st.lists(st.floats(lo, hi, width=32), min_size=channels, max_size=channels)))
    else:
        zps = torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=channels, max_size=channels)), dtype=torch.int32)
    view = channel_view(chan_scales, axis % len(shape), len(shape))
    x = data.draw(values_for(shape, view))
    # torch casts x / scale >= 2**63 (and +inf) to int64 with undefined behaviour (on x86: the
    # minimum); qcore saturates instead, see test_fake_quantize_per_channel_saturates_overflow.
    x = torch.where(x * (1 / view) < 2.0**62, x, torch.zeros_like(x))
    grad = torch.randn(shape)
    ax = axis % len(shape)
    ref_out, ref_grad = run_backward(lambda t: oracle(torch.fake_quantize_per_channel_affine, t, chan_scales, zps, ax, qmin, qmax), x, grad)
    out, out_grad = run_backward(lambda t: fake_quantize_affine(t, chan_scales, zps, qmin, qmax, axis=axis), x, grad)
    assert same_bits(out, ref_out)
    assert same_bits(out_grad, ref_grad)


@torch_oracle
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_fake_quantize_other_float_dtypes_match_torch(dtype):
    gen = torch.Generator().manual_seed(0)
    k = torch.randint(-200, 200, (4, 64), generator=gen).float()
    x = torch.where(torch.rand(4, 64, generator=gen) < 0.5, (k + 0.5) * 0.037, k * 0.037 * torch.rand(4, 64, generator=gen)).to(dtype)
    ref = oracle(torch.fake_quantize_per_tensor_affine, x, 0.037, 100, 0, 255)
    assert same_bits(fake_quantize_affine(x, 0.037, 100, 0, 255), ref)
    chan = torch.tensor([0.037, 0.05, 0.011, 0.2])
    zps = torch.tensor([100, 3, 250, 0], dtype=torch.int32)
    ref = oracle(torch.fake_quantize_per_channel_affine, x, chan, zps, 0, 0, 255)
    assert same_bits(fake_quantize_affine(x, chan, zps, 0, 255, axis=0), ref)


def test_fake_quantize_nan_propagates_with_zero_gradient():
    x = torch.tensor([math.nan, 1.0, math.inf, -math.inf], requires_grad=True)
    out = fake_quantize_affine(x, 0.1, 3, 0, 255)
    out.backward(torch.ones(4))
    assert math.isnan(out[0].item())
    assert out[1:].tolist() == pytest.approx([1.0, 25.2, -0.3])
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 0.0]
    out_pc, mask = fake_quantize_affine_cachemask(x.detach()[None], torch.tensor([0.1]), torch.tensor([3]), 0, 255, axis=0)
    assert math.isnan(out_pc[0, 0].item()) and mask.tolist() == [[False, True, False, False]]


def test_fake_quantize_per_channel_saturates_overflow():
    x = torch.tensor([[math.inf, 1e30, -1e30, 1.0]])
    out, mask = fake_quantize_affine_cachemask(x, torch.tensor([0.5]), torch.tensor([1], dtype=torch.int32), 0, 255, axis=0)
    assert out.tolist() == [[127.0, 127.0, -0.5, 1.0]]
    assert mask.tolist() == [[False, False, False, True]]


def test_fake_quantize_rejects_zero_point_outside_range_and_empty_input_works():
    with pytest.raises(QuantizationError, match="zero points"):
        fake_quantize_affine(torch.ones(3), 0.1, 300, 0, 255)
    empty = torch.ones(0, 3, requires_grad=True)
    out = fake_quantize_affine(empty, torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0, 0, 0]), 0, 255, axis=1)
    assert out.shape == (0, 3)


# --- the exact fused multiply-add behind the 8-bit per-tensor kernel ----------------------------


def exact_fma_f32(a: float, b: float, c: float) -> float:
    """a * b + c rounded once to float32 (round half to even), computed with exact rationals."""
    from fractions import Fraction

    exact = Fraction(a) * Fraction(b) + Fraction(c)
    guess = torch.tensor(float(exact), dtype=torch.float64).to(torch.float32)
    candidates = [guess, torch.nextafter(guess, torch.tensor(math.inf)), torch.nextafter(guess, torch.tensor(-math.inf))]
    finite = [float(v) for v in candidates if math.isfinite(float(v))]
    best = min(finite, key=lambda v: (abs(Fraction(v) - exact), int(torch.tensor(v).view(torch.int32)) & 1))
    return best


f32s = st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**60), max_value=2.0**60)


@settings(max_examples=200, deadline=None)
@given(a=f32s, b=f32s, c=st.one_of(f32s, st.integers(-255, 255).map(float)))
def test_fma_emulation_rounds_once(a, b, c):
    from qcore.affine import _fma_f32

    got = float(_fma_f32(torch.tensor([a]), torch.tensor([b]), torch.tensor([c]))[0])
    assert got == exact_fma_f32(a, b, c) or (got == 0.0 and exact_fma_f32(a, b, c) == 0.0)


def test_fma_emulation_avoids_double_rounding():
    from qcore.affine import _fma_f32

    # a * b = 3 * 2**-17 * (1 - 2**-44): 128 + a * b lies just below the float32 midpoint
    # 128 + 3 * 2**-17. Rounding through float64 lands on the midpoint, which then rounds
    # to even (up); the single rounding of an FMA goes down.
    a, b, c = (3 + 3 * 2.0**-22) * 2.0**-17, 1 - 2.0**-22, 128.0
    through_float64 = float(torch.tensor(a * b + c, dtype=torch.float64).to(torch.float32))
    got = float(_fma_f32(torch.tensor([a]), torch.tensor([b]), torch.tensor([c]))[0])
    assert got == exact_fma_f32(a, b, c) == 128 + 2.0**-16
    assert through_float64 == 128 + 2.0**-15
