"""QTensor: torch's quantized-tensor API over plain integer storage, checked against torch's own."""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcore import dtypes
from qcore.dtypes import QScheme
from qcore.errors import QuantizationError
from qcore.qtensor import QTensor, dequantize, quantize_per_channel, quantize_per_tensor, quantize_per_tensor_dynamic

from _helpers import needs_torch_q

torch.set_num_threads(1)

# torch's deprecated quantized dtypes, where torch still has them (qcore takes the names too).
QUINT8, QINT8, QINT32, QUINT4X2 = (getattr(torch, name, name) for name in ("quint8", "qint8", "qint32", "quint4x2"))
SETTINGS = dict(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


def sample(seed: int = 0, shape=(2, 3, 4, 4)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


def per_tensor(qdtype="uint8") -> QTensor:
    d = dtypes.qdtype(qdtype)
    return quantize_per_tensor(sample(), 0.05, (d.quant_min + d.quant_max + 1) // 2 - 3, d)


def per_channel(qdtype="int8") -> QTensor:
    d = dtypes.qdtype(qdtype)
    zps = torch.tensor([0, 1, -2]) + (d.quant_min + d.quant_max + 1) // 2
    return quantize_per_channel(sample(), torch.tensor([0.02, 0.05, 0.11], dtype=torch.float64), zps, 1, d)


# --- building QTensors ----------------------------------------------------------------------


@needs_torch_q
@pytest.mark.parametrize("dtype", [QUINT8, "uint8", dtypes.uint8, QINT8, "int8", QINT32, "int32"])
@settings(**SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(0, 4), max_size=4).map(tuple), scale=st.floats(2.0**-12, 8.0))
def test_quantize_per_tensor_matches_torch(dtype, data, shape, scale):
    d = dtypes.qdtype(dtype)
    zp = data.draw(st.integers(max(d.quant_min, -1000), min(d.quant_max, 1000)))
    x = torch.randn(shape) * scale * data.draw(st.sampled_from([1, 30, 300]))
    ref = oracle(torch.quantize_per_tensor, x, scale, zp, dtypes.to_torch_dtype(d))
    q = quantize_per_tensor(x, scale, zp, dtype)
    assert isinstance(q, QTensor) and q.is_quantized and q.qdtype is d
    assert q.q_scale() == ref.q_scale() and q.q_zero_point() == ref.q_zero_point()
    assert q.qscheme() is QScheme.PER_TENSOR_AFFINE
    assert torch.equal(q.int_repr(), ref.int_repr())
    assert same_bits(q.dequantize(), oracle(ref.dequantize))


@needs_torch_q
@pytest.mark.parametrize("dtype", [QUINT8, QINT8, QINT32])
@settings(**SETTINGS)
@given(data=st.data(), shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple))
def test_quantize_per_channel_matches_torch(dtype, data, shape):
    d = dtypes.qdtype(dtype)
    axis = data.draw(st.integers(0, len(shape) - 1))
    channels = shape[axis]
    scales = torch.tensor(data.draw(st.lists(st.floats(2.0**-12, 4.0), min_size=channels, max_size=channels)), dtype=torch.float64)
    zps = torch.tensor(data.draw(st.lists(st.integers(max(d.quant_min, -500), min(d.quant_max, 500)), min_size=channels, max_size=channels)))
    x = torch.randn(shape) * 20
    ref = oracle(torch.quantize_per_channel, x, scales, zps, axis, dtype)
    q = quantize_per_channel(x, scales, zps, axis - len(shape), dtype)
    assert q.q_per_channel_axis() == axis and q.qscheme() is QScheme.PER_CHANNEL_AFFINE
    assert torch.equal(q.q_per_channel_scales(), ref.q_per_channel_scales())
    assert torch.equal(q.q_per_channel_zero_points(), ref.q_per_channel_zero_points())
    assert torch.equal(q.int_repr(), ref.int_repr())
    assert same_bits(q.dequantize(), oracle(ref.dequantize))


@needs_torch_q
def test_float_zero_points_give_float_qparams_like_torch():
    x = sample(1, (3, 8))
    scales, zps = torch.tensor([0.1, 0.02, 0.3]), torch.tensor([10.5, -3.25, 100.0])
    ref = oracle(torch.quantize_per_channel, x, scales, zps, 0, QUINT8)
    q = quantize_per_channel(x, scales, zps, 0, "uint8")
    assert q.qscheme() is QScheme.PER_CHANNEL_AFFINE_FLOAT_QPARAMS
    assert torch.equal(q.int_repr(), ref.int_repr())
    assert same_bits(q.dequantize(), oracle(ref.dequantize))


@needs_torch_q
def test_uint4_holds_unpacked_values_matching_torch_quint4x2():
    x = sample(2, (3, 5))
    ref = oracle(torch.quantize_per_tensor, x, 0.5, 7, QUINT4X2)
    q = quantize_per_tensor(x, 0.5, 7, QUINT4X2)
    packed = ref.int_repr()
    unpacked = torch.stack((packed & 0xF, packed >> 4), -1).reshape(-1)[: x.numel()].reshape(x.shape)
    assert q.qdtype is dtypes.uint4 and q.dtype == torch.uint8
    assert torch.equal(q.int_repr(), unpacked)
    assert same_bits(q.dequantize(), oracle(ref.dequantize))
    assert quantize_per_tensor(x, 0.5, 0, "int4").int_repr().min() >= -8


@needs_torch_q
def test_list_form_matches_torch():
    xs = [sample(3, (4,)), sample(4, (2, 2))]
    scales, zps = torch.tensor([0.1, 0.2]), torch.tensor([3, 128])
    refs = oracle(torch.quantize_per_tensor, xs, scales, zps, QUINT8)
    qs = quantize_per_tensor(xs, scales, zps, QUINT8)
    assert [torch.equal(q.int_repr(), r.int_repr()) for q, r in zip(qs, refs)] == [True, True]


@needs_torch_q
@pytest.mark.parametrize("dtype", [QUINT8, QINT8])
@pytest.mark.parametrize("reduce_range", [False, True])
@settings(**SETTINGS)
@given(
    low=st.floats(-1e4, 1e4, width=32),
    width=st.one_of(st.floats(0, 2.0**-10, width=32), st.floats(0, 1e4, width=32)),
    n=st.integers(1, 20),
)
def test_quantize_per_tensor_dynamic_matches_torch(dtype, reduce_range, low, width, n):
    x = torch.linspace(0, 1, n) * width + low
    ref = oracle(torch.quantize_per_tensor_dynamic, x, dtype, reduce_range)
    q = quantize_per_tensor_dynamic(x, dtype, reduce_range)
    assert (q.q_scale(), q.q_zero_point()) == (ref.q_scale(), ref.q_zero_point())
    assert torch.equal(q.int_repr(), ref.int_repr())


def test_quantize_per_tensor_dynamic_float16_and_errors():
    x = torch.tensor([1.0, 70000.0])
    assert torch.equal(quantize_per_tensor_dynamic(x, torch.float16, False), x.to(torch.float16))
    for bad, message in [
        (torch.tensor([1.0, math.nan]), "NaN"),
        (torch.tensor([1.0, math.inf]), "infinite"),
        (torch.ones(0), "empty"),
    ]:
        with pytest.raises(QuantizationError, match=f"quantize_per_tensor_dynamic.*{message}"):
            quantize_per_tensor_dynamic(bad, QUINT8, False)
    with pytest.raises(QuantizationError, match="uint8, int8 or float16"):
        quantize_per_tensor_dynamic(x, QINT32, False)


def test_dequantize_function():
    q = per_tensor()
    assert same_bits(dequantize(q), q.dequantize())
    half = torch.tensor([1.5, -2.0], dtype=torch.float16)
    assert dequantize(half).dtype == torch.float32
    out = dequantize([q, half])
    assert same_bits(out[0], q.dequantize()) and out[1].tolist() == [1.5, -2.0]
    with pytest.raises(QuantizationError, match="QTensor or a float tensor"):
        dequantize(torch.ones(2, dtype=torch.int32))


def test_from_int_wraps_integers_and_checks_them():
    q = QTensor.from_int(torch.tensor([[0, 5], [250, 255]], dtype=torch.int32), 0.5, 4, "uint8")
    assert q.dtype == torch.uint8 and q.dequantize().tolist() == [[-2.0, 0.5], [123.0, 125.5]]
    sym = QTensor.from_int(torch.tensor([[-3, 3]]), torch.tensor([0.1]), torch.tensor([0]), "int8", axis=0, qscheme="per_channel_symmetric")
    assert sym.qscheme() is QScheme.PER_CHANNEL_SYMMETRIC and sym.q_per_channel_axis() == 0
    with pytest.raises(QuantizationError, match=r"values span \[-1, 3\], outside uint8's range"):
        QTensor.from_int(torch.tensor([-1, 3]), 0.1, 0, "uint8")
    with pytest.raises(QuantizationError, match="integer tensor"):
        QTensor.from_int(torch.tensor([1.0]), 0.1, 0, "uint8")
    with pytest.raises(QuantizationError, match="does not match the per-tensor"):
        QTensor.from_int(torch.tensor([1]), 0.1, 0, "uint8", qscheme="per_channel_affine")
    with pytest.raises(QuantizationError, match="not an integer dtype"):
        QTensor.from_int(torch.tensor([1]), 0.1, 0, torch.float16)
    with pytest.raises(TypeError, match="from_int"):
        QTensor(torch.ones(2))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: quantize_per_tensor(torch.ones(2), 0.1, 256, QUINT8), r"zero_point 256 is outside uint8's range"),
        (lambda: quantize_per_tensor(torch.ones(2), 0.0, 0, QUINT8), "quantize_per_tensor: scale must be a finite positive"),
        (lambda: quantize_per_tensor(torch.tensor([math.nan]), 0.1, 0, QUINT8), "quantize_per_tensor: the input has NaN"),
        (lambda: quantize_per_tensor(torch.ones(2, dtype=torch.int64), 0.1, 0, QUINT8), "floating-point"),
        (lambda: quantize_per_tensor(torch.ones(2), 0.1, 0, torch.float16), r"x.to\(torch.float16\)"),
        (lambda: quantize_per_tensor(torch.ones(2), 0.1, 0, "int16"), "unsupported quantized dtype"),
        (lambda: quantize_per_channel(torch.ones(2, 3), torch.ones(2), torch.zeros(2), 1, "uint8"), "one value per channel"),
        (lambda: quantize_per_channel(torch.ones(2, 3), torch.ones(2), torch.zeros(2), 2, "uint8"), "axis 2 is out of range"),
    ],
)
def test_bad_quantize_arguments_raise(call, message):
    with pytest.raises(QuantizationError, match=message):
        call()


# --- the quantized-tensor API ----------------------------------------------------------------------


def test_accessors_and_scheme_checks():
    q, qc = per_tensor(), per_channel()
    assert q.dtype == torch.uint8 and qc.dtype == torch.int8
    assert qc.q_per_channel_scales().dtype == torch.float64 and qc.q_per_channel_zero_points().dtype == torch.int64
    with pytest.raises(QuantizationError, match="q_scale.*per-tensor"):
        qc.q_scale()
    with pytest.raises(QuantizationError, match="q_per_channel_axis.*per-channel"):
        q.q_per_channel_axis()
    ints = q.int_repr()
    ints.zero_()  # int_repr is a copy, as torch's
    assert type(ints) is torch.Tensor and q.int_repr().any()


def test_repr_shows_values_and_qparams():
    q = QTensor.from_int(torch.tensor([0, 10]), 0.5, 2, "uint8")
    assert repr(q) == "QTensor([-1.,  4.], size=(2,), qdtype=qcore.uint8, qscheme=qcore.per_tensor_affine, scale=0.5, zero_point=2)"
    text = repr(per_channel())
    assert text.startswith("QTensor([[[[") and "scales=[0.02" in text and "axis=1" in text
    assert f"{q}" == repr(q)


# Operations exact on quantized values: each must commute with dequantize, per tensor and per
# channel (channel axis 1 of a (2, 3, 4, 4) tensor).
PASS_THROUGH = {
    "view": lambda t: t.view(2, 3, 16),
    "reshape": lambda t: t.reshape(2, 3, 4, 2, 2),
    "torch.reshape": lambda t: torch.reshape(t, (1, 2, 3, 16)),
    "flatten": lambda t: t.flatten(2),
    "torch.flatten": lambda t: torch.flatten(t, 2),
    "permute": lambda t: t.permute(0, 2, 3, 1),
    "torch.permute": lambda t: torch.permute(t, (3, 1, 0, 2)),
    "transpose": lambda t: t.transpose(1, 3),
    "torch.transpose": lambda t: torch.transpose(t, 0, 1),
    "swapaxes": lambda t: t.swapaxes(1, 2),
    "movedim": lambda t: t.movedim(1, -1),
    "t": lambda t: t[:, :, 0, 0].t(),
    "mT": lambda t: t.mT,
    "contiguous": lambda t: t.permute(0, 2, 3, 1).contiguous(),
    "unsqueeze": lambda t: t.unsqueeze(0),
    "torch.unsqueeze": lambda t: torch.unsqueeze(t, -1),
    "squeeze": lambda t: t[:, :, :1].squeeze(2),
    "expand": lambda t: t.expand(5, 2, 3, 4, 4),
    "getitem int": lambda t: t[0],
    "getitem slice": lambda t: t[:, 1:],
    "getitem step": lambda t: t[None, :, ::2, ..., 1],
    "getitem ellipsis": lambda t: t[..., 1:3, 0],
    "chunk": lambda t: t.chunk(2, 2)[1],
    "torch.chunk on channels": lambda t: torch.chunk(t, 3, 1)[2],
    "split": lambda t: t.split(1, 1)[0],
    "torch.split sections": lambda t: torch.split(t, [1, 2], 1)[1],
    "unbind": lambda t: t.unbind(0)[1],
    "tensor_split": lambda t: torch.tensor_split(t, 2, dim=3)[1],
    "iter": lambda t: list(t)[1],
    "cat": lambda t: torch.cat([t, t], 0),
    "cat on channels": lambda t: torch.cat([t, t[:, :2]], 1),
    "clone": lambda t: t.clone(),
    "detach": lambda t: t.detach(),
    "to": lambda t: t.to("cpu"),
    "cpu": lambda t: t.cpu(),
    "max_pool2d": lambda t: F.max_pool2d(t, 2),
    "max_pool2d padded": lambda t: F.max_pool2d(t, 3, stride=1, padding=1, ceil_mode=True),
    "max_pool2d indices": lambda t: F.max_pool2d(t, 2, return_indices=True)[0],
    "MaxPool2d": lambda t: torch.nn.MaxPool2d(2)(t),
    "max_pool1d": lambda t: F.max_pool1d(t[0], 2),
    "max_pool3d": lambda t: F.max_pool3d(t.unsqueeze(2), (1, 2, 2)),
    "adaptive_max_pool2d": lambda t: F.adaptive_max_pool2d(t, (2, 1)),
    "adaptive_max_pool1d": lambda t: F.adaptive_max_pool1d(t[0], 3),
    "relu": lambda t: F.relu(t),
    "torch.relu": lambda t: torch.relu(t),
    "Tensor.relu": lambda t: t.relu(),
    "ReLU": lambda t: torch.nn.ReLU()(t),
    "Identity": lambda t: torch.nn.Identity()(t),
    "Flatten": lambda t: torch.nn.Flatten(2)(t),
    "Unflatten": lambda t: torch.nn.Unflatten(3, (2, 2))(t),
    "AdaptiveMaxPool3d": lambda t: torch.nn.AdaptiveMaxPool3d((1, 2, 3))(t.unsqueeze(2)),
}


@pytest.mark.parametrize("make", [per_tensor, per_channel, lambda: per_tensor("int32"), lambda: per_channel("uint4")], ids=["pt-uint8", "pc-int8", "pt-int32", "pc-uint4"])
@pytest.mark.parametrize("name", list(PASS_THROUGH))
def test_pass_through_ops_commute_with_dequantize(make, name):
    op = PASS_THROUGH[name]
    q = make()
    out = op(q)
    assert isinstance(out, QTensor), f"{name} returned {type(out).__name__}"
    assert out.qdtype is q.qdtype and out.dtype == q.dtype
    expected = op(q.dequantize())
    assert same_bits(out.dequantize(), expected), name


@needs_torch_q
@pytest.mark.parametrize("name", ["view", "reshape", "permute", "transpose", "getitem slice", "getitem step", "chunk", "cat", "max_pool2d", "max_pool2d padded", "relu", "unsqueeze", "squeeze", "expand", "flatten"])
def test_per_tensor_ops_match_torch_quantized_tensors(name):
    x = sample(5)
    ours = PASS_THROUGH[name](quantize_per_tensor(x, 0.05, 120, QUINT8))
    ref = oracle(PASS_THROUGH[name], oracle(torch.quantize_per_tensor, x, 0.05, 120, QUINT8))
    assert torch.equal(ours.int_repr(), ref.int_repr())
    assert (ours.q_scale(), ours.q_zero_point()) == (ref.q_scale(), ref.q_zero_point())


def test_per_channel_qparams_follow_the_channel_axis():
    qc = per_channel()
    assert qc.permute(0, 2, 3, 1).q_per_channel_axis() == 3
    assert qc.transpose(0, 1).q_per_channel_axis() == 0
    assert qc.unsqueeze(0).q_per_channel_axis() == 2
    assert qc[0].q_per_channel_axis() == 0
    assert qc[:, 1:].q_per_channel_scales().tolist() == [0.05, 0.11]
    pieces = torch.split(qc, [2, 1], dim=1)
    assert [p.q_per_channel_zero_points().tolist() for p in pieces] == [[0, 1], [-2]]
    merged = torch.cat(pieces, 1)
    assert torch.equal(merged.q_per_channel_scales(), qc.q_per_channel_scales())


@pytest.mark.parametrize(
    "op,message",
    [
        (lambda t: t.reshape(6, 16), "merge or split the channel dimension"),
        (lambda t: t.flatten(1), "merge or split the channel dimension"),
        (lambda t: t.view(2, 12, 4), "merge or split the channel dimension"),
        (lambda t: t[:, 0], "dropping the channel dimension"),
        (lambda t: t[:, torch.tensor([0, 2])], "advanced indexing"),
        (lambda t: t.unbind(1), "drop it"),
        (lambda t: F.max_pool2d(t.permute(0, 2, 3, 1), 2), "pool over the channel dimension"),
        (lambda t: t[:, :1].expand(2, 3, 4, 4), "expand the channel dimension"),
    ],
)
def test_per_channel_ops_that_lose_the_channel_axis_raise(op, message):
    with pytest.raises(QuantizationError, match=message):
        op(per_channel())


@pytest.mark.parametrize(
    "op,name",
    [
        (lambda t: t + 1, "add"),
        (lambda t: t * 2, "mul"),
        (lambda t: torch.add(t, t), "add"),
        (lambda t: F.linear(t.flatten(1), torch.ones(2, 48)), "linear"),
        (lambda t: torch.nn.Conv2d(3, 1, 1)(t), "conv2d"),
        (lambda t: F.lp_pool2d(t, 2.0, 2), "lp_pool2d"),
        (lambda t: t.sum(), "sum"),
        (lambda t: t.float(), "float"),
        (lambda t: t.to(torch.float32), "to"),
        (lambda t: torch.stack([t, t]), "stack"),
        (lambda t: t == t, "eq"),
        (lambda t: t.tolist(), "tolist"),
        (lambda t: torch.sigmoid(t), "sigmoid"),
        (lambda t: t.view(torch.int8), "view"),
        (lambda t: t.copy_(torch.zeros(2, 3, 4, 4)), "copy_"),
    ],
)
def test_other_ops_raise_and_say_dequantize_first(op, name):
    with pytest.raises(QuantizationError, match=name) as info:
        op(per_tensor())
    assert "dequantize" in str(info.value)


def test_cat_requires_identical_qparams():
    a = quantize_per_tensor(sample(6), 0.05, 120, "uint8")
    b = quantize_per_tensor(sample(7), 0.06, 120, "uint8")
    with pytest.raises(QuantizationError, match="input 1 has different qparams"):
        torch.cat([a, b])
    with pytest.raises(QuantizationError, match="all inputs must be QTensors"):
        torch.cat([a, a.dequantize()])


def test_relu_in_place_updates_storage_and_keeps_qparams():
    for q in (per_tensor(), per_channel()):
        expected = F.relu(q.dequantize())
        same = F.relu(q, inplace=True)
        assert same is q and same_bits(q.dequantize(), expected)
    q = per_tensor()
    assert q.relu_() is q and bool((q.int_repr() >= q.q_zero_point()).all())


# --- serialization and modules -------------------------------------------------------------------


@pytest.mark.parametrize("make", [per_tensor, per_channel])
def test_pickle_deepcopy_and_torch_save_round_trip(make):
    q = make()

    def same(other):
        assert isinstance(other, QTensor) and other.qscheme() is q.qscheme() and other.qdtype is q.qdtype
        assert torch.equal(other.int_repr(), q.int_repr()) and same_bits(other.dequantize(), q.dequantize())

    same(pickle.loads(pickle.dumps(q)))
    same(copy.deepcopy(q))
    for weights_only in (True, False):
        buffer = io.BytesIO()
        torch.save({"w": q}, buffer)
        buffer.seek(0)
        same(torch.load(buffer, weights_only=weights_only)["w"])


def test_state_dict_round_trip_and_module_conversions():
    source = torch.nn.Module()
    source.register_buffer("w", per_channel())
    target = torch.nn.Module()
    target.register_buffer("w", quantize_per_channel(torch.zeros(2, 3, 4, 4), torch.ones(3), torch.zeros(3, dtype=torch.long), 1, "int8"))
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.w.int_repr(), source.w.int_repr())
    assert torch.equal(target.w.q_per_channel_scales(), source.w.q_per_channel_scales())
    target.to("cpu").float().half()
    assert isinstance(target.w, QTensor) and target.w.dtype == torch.int8
    clone = copy.deepcopy(target)
    assert clone.w is not target.w and same_bits(clone.w.dequantize(), target.w.dequantize())
    assert [name for name, _ in target.named_buffers()] == ["w"]


def test_attribute_queries_pass_through():
    q = per_tensor()
    assert (q.shape, q.size(1), q.dim(), q.ndim, q.numel(), len(q)) == (torch.Size([2, 3, 4, 4]), 3, 4, 4, 96, 2)
    assert q.stride() == (48, 16, 4, 1) and q.is_contiguous() and q.device.type == "cpu"
    assert not q.requires_grad and not q.is_floating_point() and q.element_size() == 1
