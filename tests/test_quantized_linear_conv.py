"""Static quantized Linear / Conv / ConvTranspose / LinearReLU / ConvReLU / Quantize / DeQuantize.

Differential tests build the torch.ao module (the oracle) from the very same
quantized weight and output qparams and check that outputs agree within one
output quantization step, with few mismatches; the qcore-only cases (int8
activations, uint8 weights, per-channel transposed weights, padding modes
torch.ao lacks) are checked against the reference definition computed here.
"""

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
from qcore.nn.intrinsic.quantized.conv_relu import ConvReLU1d, ConvReLU2d, ConvReLU3d
from qcore.nn.intrinsic.quantized.linear_relu import LinearReLU
from qcore.nn.quantized.conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from qcore.nn.quantized.linear import Linear
from qcore.nn.quantized.quant_dequant import DeQuantize, Quantize
from qcore.observers import (
    HistogramObserver,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    default_per_channel_weight_observer,
    default_weight_observer,
)
from qcore.qconfig import QConfig
from qcore.qtensor import QTensor, quantize_per_channel, quantize_per_tensor

torch.set_num_threads(1)

HAVE_AO = hasattr(torch, "quint8") and hasattr(torch, "ao") and "fbgemm" in getattr(torch.backends.quantized, "supported_engines", ())
needs_ao = pytest.mark.skipif(not HAVE_AO, reason="needs torch.ao's quantized kernels (the oracle)")
SETTINGS = dict(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PER_TENSOR_QCONFIG = QConfig(activation=MinMaxObserver, weight=default_weight_observer)
PER_CHANNEL_QCONFIG = QConfig(activation=MinMaxObserver, weight=default_per_channel_weight_observer)
WEIGHT_OBSERVERS = {
    "per_tensor_symmetric": default_weight_observer,
    "per_tensor_affine": MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine),
    "per_channel_symmetric": default_per_channel_weight_observer,
    "per_channel_affine": PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_affine),
}


@pytest.fixture(autouse=True)
def fbgemm_engine():
    """The oracle runs on fbgemm (the x86/onednn engine's transposed convolutions are off by whole ranges here)."""
    if not HAVE_AO:
        yield
        return
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = previous


# --- helpers --------------------------------------------------------------------------------------


def oracle(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def to_ao_tensor(q: QTensor) -> torch.Tensor:
    """The same integers and qparams as a torch quantized tensor."""
    if q.qscheme().is_per_channel:
        return oracle(
            torch._make_per_channel_quantized_tensor,
            q.int_repr(), q.q_per_channel_scales(), q.q_per_channel_zero_points(), q.q_per_channel_axis(),
        )
    return oracle(torch._make_per_tensor_quantized_tensor, q.int_repr(), q.q_scale(), q.q_zero_point())


def to_ao_module(qmod: nn.Module) -> nn.Module:
    """The torch.ao quantized module with qmod's configuration, quantized weight, bias and output qparams."""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    table = {
        Linear: nnq.Linear, LinearReLU: nniq.LinearReLU,
        Conv1d: nnq.Conv1d, Conv2d: nnq.Conv2d, Conv3d: nnq.Conv3d,
        ConvReLU1d: nniq.ConvReLU1d, ConvReLU2d: nniq.ConvReLU2d, ConvReLU3d: nniq.ConvReLU3d,
        ConvTranspose1d: nnq.ConvTranspose1d, ConvTranspose2d: nnq.ConvTranspose2d, ConvTranspose3d: nnq.ConvTranspose3d,
    }
    ao_cls = table[type(qmod)]
    if isinstance(qmod, Linear):
        ao = oracle(ao_cls, qmod.in_features, qmod.out_features, qmod.bias() is not None)
    else:
        ao = oracle(ao_cls, **qmod._float_config())
    oracle(ao.set_weight_bias, to_ao_tensor(qmod.weight()), qmod.bias())
    ao.scale = float(qmod.scale)
    ao.zero_point = int(qmod.zero_point)
    return ao


def assert_within_one_step(ours: QTensor, theirs: torch.Tensor, max_fraction: float = 0.02) -> None:
    assert isinstance(ours, QTensor)
    assert ours.shape == theirs.shape
    diff = (ours.int_repr().to(torch.int32) - oracle(theirs.int_repr).to(torch.int32)).abs()
    assert int(diff.max()) <= 1, f"max difference {int(diff.max())} steps"
    assert float((diff > 0).float().mean()) <= max_fraction, f"{int((diff > 0).sum())} of {diff.numel()} differ"


def input_qtensor(shape, seed: int = 0, dtype="uint8") -> QTensor:
    """A quantized input whose integers fit 7 bits, so fbgemm's int16 pair sums cannot saturate."""
    g = torch.Generator().manual_seed(seed)
    d = dtypes.qdtype(dtype)
    if d is dtypes.uint8:
        ints = torch.randint(0, 128, shape, generator=g, dtype=torch.uint8)
        return QTensor.from_int(ints, 0.03, 40, d)
    ints = torch.randint(-64, 64, shape, generator=g, dtype=torch.int8)
    return QTensor.from_int(ints, 0.03, 0, d)


def observed(float_mod: nn.Module, qconfig: QConfig, x: torch.Tensor) -> nn.Module:
    """``float_mod`` with qconfig and a calibrated output observer, as prepare + calibration leave it."""
    float_mod.qconfig = qconfig
    float_mod.activation_post_process = qconfig.activation()
    with torch.no_grad():
        float_mod.activation_post_process(float_mod(x))
    return float_mod


def reference(qmod: nn.Module, x: QTensor, float_op) -> QTensor:
    """The definition: dequantize, run the float op in float32, quantize with the output qparams."""
    y = float_op(x.dequantize(), qmod.weight().dequantize(), qmod.bias())
    return quantize_per_tensor(y, float(qmod.scale), int(qmod.zero_point), qmod.dtype)


# --- Linear / LinearReLU -----------------------------------------------------------------------------


@needs_ao
@pytest.mark.parametrize("scheme", sorted(WEIGHT_OBSERVERS))
@pytest.mark.parametrize("cls", [Linear, LinearReLU])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_ao(scheme, cls, bias):
    torch.manual_seed(0)
    layer = nn.Linear(24, 10, bias=bias)
    x = input_qtensor((7, 24), seed=1)
    qconfig = QConfig(activation=MinMaxObserver, weight=WEIGHT_OBSERVERS[scheme])
    fused = qcore.nn.intrinsic.LinearReLU(layer, nn.ReLU()) if cls is LinearReLU else layer
    qmod = cls.from_float(observed(fused, qconfig, x.dequantize()))
    assert qmod.weight().qscheme().value == scheme
    out = qmod(x)
    assert_within_one_step(out, to_ao_module(qmod)(to_ao_tensor(x)))
    if cls is LinearReLU:
        assert int(out.int_repr().min()) >= int(qmod.zero_point)


@needs_ao
@pytest.mark.parametrize("qconfig_name", ["default_qconfig", "default_per_channel_qconfig"])
def test_linear_from_float_agrees_with_torch_ao_flow(qconfig_name):
    """Same float module and calibration data through both libraries' from_float: same qparams and weights."""
    import torch.ao.nn.quantized as nnq
    import torch.ao.quantization as tq

    torch.manual_seed(0)
    layer = nn.Linear(16, 8)
    data = torch.randn(32, 16)
    ours = Linear.from_float(observed(copy.deepcopy(layer), getattr(qcore.qconfig, qconfig_name), data))
    ao_float = copy.deepcopy(layer)
    ao_float.qconfig = getattr(tq, qconfig_name)
    ao_float.activation_post_process = ao_float.qconfig.activation()
    ao_float.activation_post_process(ao_float(data))
    theirs = oracle(nnq.Linear.from_float, ao_float)
    assert float(ours.scale) == pytest.approx(theirs.scale, rel=0, abs=0)
    assert int(ours.zero_point) == theirs.zero_point
    assert torch.equal(ours.weight().int_repr(), oracle(lambda: theirs.weight().int_repr()))
    x = quantize_per_tensor(data.clamp(-1, 1), 1 / 128, 128, "uint8")
    x = QTensor.from_int(x.int_repr() // 2 + 64, 1 / 64, 128, "uint8")  # 7-bit integers (no fbgemm saturation)
    assert_within_one_step(ours(x), theirs(to_ao_tensor(x)))


def test_linear_int8_activations_and_uint8_weights_follow_the_reference():
    torch.manual_seed(0)
    layer = nn.Linear(12, 6)
    symmetric_act = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    uint8_weight = MinMaxObserver.with_args(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    x = input_qtensor((5, 12), dtype="int8")
    qmod = Linear.from_float(observed(layer, QConfig(activation=symmetric_act, weight=uint8_weight), x.dequantize()))
    assert qmod.dtype is dtypes.int8 and qmod.weight().qdtype is dtypes.uint8
    assert int(qmod.zero_point) == 0
    out = qmod(x)
    assert out.qdtype is dtypes.int8
    assert torch.equal(out.int_repr(), reference(qmod, x, F.linear).int_repr())
    with torch.no_grad():
        assert (out.dequantize() - layer(x.dequantize())).abs().max() <= float(qmod.scale) + 0.05


# --- Conv / ConvReLU / ConvTranspose -------------------------------------------------------------------------

CONV = {1: (Conv1d, ConvReLU1d, nn.Conv1d, F.conv1d), 2: (Conv2d, ConvReLU2d, nn.Conv2d, F.conv2d), 3: (Conv3d, ConvReLU3d, nn.Conv3d, F.conv3d)}
CONV_T = {1: (ConvTranspose1d, nn.ConvTranspose1d), 2: (ConvTranspose2d, nn.ConvTranspose2d), 3: (ConvTranspose3d, nn.ConvTranspose3d)}
FUSED_RELU = {1: "ConvReLU1d", 2: "ConvReLU2d", 3: "ConvReLU3d"}


@needs_ao
@settings(**SETTINGS)
@given(
    groups=st.sampled_from([1, 2]),
    in_per_group=st.integers(1, 3),
    out_per_group=st.integers(1, 3),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    size=st.integers(5, 8),
    bias=st.booleans(),
    relu=st.booleans(),
    per_channel=st.booleans(),
    padding_mode=st.sampled_from(["zeros", "reflect"]),
)
def test_conv2d_matches_torch_ao(groups, in_per_group, out_per_group, kernel, stride, padding, dilation, size, bias, relu, per_channel, padding_mode):
    if padding_mode == "reflect" and padding >= size:
        padding = size - 1
    torch.manual_seed(0)
    qcls, qrelu_cls, float_cls, _ = CONV[2]
    conv = float_cls(in_per_group * groups, out_per_group * groups, kernel, stride, padding, dilation, groups, bias, padding_mode)
    x = input_qtensor((2, in_per_group * groups, size, size), seed=3)
    qconfig = PER_CHANNEL_QCONFIG if per_channel else PER_TENSOR_QCONFIG
    mod = getattr(qcore.nn.intrinsic, FUSED_RELU[2])(conv, nn.ReLU()) if relu else conv
    qmod = (qrelu_cls if relu else qcls).from_float(observed(mod, qconfig, x.dequantize()))
    out = qmod(x)
    assert_within_one_step(out, to_ao_module(qmod)(to_ao_tensor(x)), max_fraction=0.05)


@needs_ao
@pytest.mark.parametrize("ndim", [1, 3])
@pytest.mark.parametrize("relu", [False, True])
def test_conv1d_conv3d_match_torch_ao(ndim, relu):
    torch.manual_seed(ndim)
    qcls, qrelu_cls, float_cls, _ = CONV[ndim]
    conv = float_cls(4, 6, 3, stride=2, padding=1, groups=2)
    x = input_qtensor((2, 4) + (6,) * ndim, seed=ndim)
    mod = getattr(qcore.nn.intrinsic, FUSED_RELU[ndim])(conv, nn.ReLU()) if relu else conv
    qmod = (qrelu_cls if relu else qcls).from_float(observed(mod, PER_CHANNEL_QCONFIG, x.dequantize()))
    assert_within_one_step(qmod(x), to_ao_module(qmod)(to_ao_tensor(x)))


@needs_ao
@settings(**SETTINGS)
@given(
    ndim=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1),
    dilation=st.integers(1, 2),
    extra=st.integers(0, 1),
    bias=st.booleans(),
)
def test_conv_transpose_matches_torch_ao(ndim, groups, kernel, stride, padding, dilation, extra, bias):
    output_padding = min(extra, max(stride, dilation) - 1)
    torch.manual_seed(0)
    qcls, float_cls = CONV_T[ndim]
    conv = float_cls(2 * groups, 3 * groups, kernel, stride, padding, output_padding, groups, bias, dilation)
    x = input_qtensor((2, 2 * groups) + (4,) * ndim, seed=5)
    # torch.ao's kernels take per-tensor weights only for transposed convolutions.
    qmod = qcls.from_float(observed(conv, PER_TENSOR_QCONFIG, x.dequantize()))
    assert_within_one_step(qmod(x), to_ao_module(qmod)(to_ao_tensor(x)), max_fraction=0.05)


@pytest.mark.parametrize("axis", [0, 1])
def test_conv_transpose_per_channel_weights_follow_the_reference(axis):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    x = input_qtensor((2, 4, 5, 5))
    weight_observer = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=axis)
    qmod = ConvTranspose2d.from_float(observed(conv, QConfig(activation=MinMaxObserver, weight=weight_observer), x.dequantize()))
    assert int(qmod.weight_axis) == axis and qmod.weight().q_per_channel_axis() == axis
    op = lambda v, w, b: F.conv_transpose2d(v, w, b, stride=2, padding=1, output_padding=1, groups=2)  # noqa: E731
    assert torch.equal(qmod(x).int_repr(), reference(qmod, x, op).int_repr())


@pytest.mark.parametrize("padding_mode", ["reflect", "replicate", "circular"])
def test_conv_padding_modes_follow_the_reference(padding_mode):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode=padding_mode)
    x = input_qtensor((1, 3, 6, 6))
    qmod = Conv2d.from_float(observed(conv, PER_CHANNEL_QCONFIG, x.dequantize()))
    op = lambda v, w, b: F.conv2d(F.pad(v, (1, 1, 1, 1), mode=padding_mode), w, b)  # noqa: E731
    assert torch.equal(qmod(x).int_repr(), reference(qmod, x, op).int_repr())
    assert f"padding_mode={padding_mode}" in repr(qmod)


@needs_ao
def test_digits_through_a_small_conv_match_torch_ao():
    """Real images (scikit-learn's 8x8 digits) through conv + relu and conv, against torch.ao."""
    datasets = pytest.importorskip("sklearn.datasets")
    images = torch.tensor(datasets.load_digits().images[:200], dtype=torch.float32).unsqueeze(1) / 16.0
    torch.manual_seed(0)
    conv1 = nn.Conv2d(1, 6, 3, padding=1)
    conv2 = nn.Conv2d(6, 4, 3, stride=2)
    stub = MinMaxObserver(dtype=torch.quint8, reduce_range=True)  # 7-bit input, as fbgemm's default qconfig
    stub(images)
    scale, zp = stub.calculate_qparams()
    x = quantize_per_tensor(images, float(scale), int(zp), "uint8")
    fused = qcore.nn.intrinsic.ConvReLU2d(conv1, nn.ReLU())
    act = QConfig(activation=HistogramObserver.with_args(reduce_range=True), weight=default_per_channel_weight_observer)
    q1 = ConvReLU2d.from_float(observed(fused, act, x.dequantize()))
    with torch.no_grad():
        h = q1(x)
    q2 = Conv2d.from_float(observed(conv2, act, h.dequantize()))
    out = q2(h)
    ao_h = to_ao_module(q1)(to_ao_tensor(x))
    assert_within_one_step(h, ao_h)
    assert_within_one_step(out, to_ao_module(q2)(to_ao_tensor(h)))
    with torch.no_grad():
        float_out = conv2(F.relu(conv1(images)))
    # Two quantized layers stay close to float on real data.
    assert (out.dequantize() - float_out).abs().mean() < 2 * float(q2.scale)


def test_int8_symmetric_activations_conv_follows_the_reference():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)
    x = input_qtensor((1, 2, 5, 5), dtype="int8")
    act = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    qmod = ConvReLU2d.from_float(observed(qcore.nn.intrinsic.ConvReLU2d(conv, nn.ReLU()), QConfig(activation=act, weight=default_per_channel_weight_observer), x.dequantize()))
    out = qmod(x)
    assert out.qdtype is dtypes.int8 and int(qmod.zero_point) == 0
    expected = reference(qmod, x, lambda v, w, b: F.relu(F.conv2d(v, w, b)))
    assert torch.equal(out.int_repr(), expected.int_repr())


# --- QAT modules -------------------------------------------------------------------------------------


def test_from_qat_linear_uses_weight_fake_quant():
    qat = pytest.importorskip("qcore.nn.qat")
    torch.manual_seed(0)
    qconfig = qcore.qconfig.default_qat_qconfig
    mod = qat.Linear(8, 4, qconfig=qconfig)
    x = torch.randn(16, 8)
    mod.activation_post_process = qconfig.activation()
    mod.activation_post_process(mod(x))
    qmod = Linear.from_float(mod)
    wfq = mod.weight_fake_quant
    scale, zp = wfq.calculate_qparams()
    assert qmod.weight().q_scale() == pytest.approx(float(scale), rel=0, abs=0)
    wfq.disable_observer()
    assert torch.equal(qmod.weight().dequantize(), wfq(mod.weight.detach()))


@pytest.mark.parametrize("relu", [False, True])
def test_from_qat_conv_bn_folds_the_batch_norm(relu):
    nniqat = pytest.importorskip("qcore.nn.intrinsic.qat")
    torch.manual_seed(0)
    qconfig = qcore.qconfig.default_qat_qconfig
    cls = nniqat.ConvBnReLU2d if relu else nniqat.ConvBn2d
    mod = cls(3, 4, 3, qconfig=qconfig)
    mod.train()
    x = torch.randn(8, 3, 6, 6)
    for _ in range(3):
        mod(x)
    mod.eval()
    mod.activation_post_process = qconfig.activation()
    mod.activation_post_process(mod(x))
    qcls = ConvReLU2d if relu else Conv2d
    qmod = qcls.from_float(mod)
    weight, bias = mod.fold_bn()
    assert torch.equal(qmod.bias(), bias)
    mod.weight_fake_quant.disable_observer()  # keep the qparams from_float used
    assert torch.equal(qmod.weight().dequantize(), mod.weight_fake_quant(weight))
    xq = quantize_per_tensor(x, 0.05, 128, "uint8")
    y = F.conv2d(xq.dequantize(), weight, bias)
    y = F.relu(y) if relu else y
    assert (qmod(xq).dequantize() - y).abs().max() < 0.2


# --- Quantize / DeQuantize ------------------------------------------------------------------------------


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_quantize_dequantize_match_torch_ao(dtype):
    import torch.ao.nn.quantized as nnq

    stub = nn.Module()
    stub.activation_post_process = MinMaxObserver(dtype=dtype)
    x = torch.randn(4, 5) * 3
    stub.activation_post_process(x)
    q = Quantize.from_float(stub)
    out = q(x)
    scale, zp = stub.activation_post_process.calculate_qparams()
    ao = oracle(nnq.Quantize, float(scale), int(zp), dtypes.to_torch_dtype(dtype))
    assert torch.equal(out.int_repr(), oracle(lambda: ao(x).int_repr()))
    assert out.qdtype is dtypes.qdtype(dtype)
    assert torch.equal(DeQuantize()(out), oracle(lambda: ao(x).dequantize()))
    assert torch.equal(DeQuantize()(x), x)
    assert f"dtype={dtype}" in repr(q)


def test_quantize_rejects_quantized_and_integer_inputs():
    q = Quantize(0.1, 3, torch.quint8)
    with pytest.raises(QuantizationError, match="already quantized"):
        q(quantize_per_tensor(torch.ones(2), 0.1, 0, "uint8"))
    with pytest.raises(QuantizationError, match="expected a float tensor"):
        q(torch.ones(2, dtype=torch.int64))
    with pytest.raises(ConfigError, match="activation_post_process"):
        Quantize.from_float(nn.Module())


# --- errors ---------------------------------------------------------------------------------------------------


def test_float_input_error_names_the_module():
    qmod = Conv2d(2, 2, 1)
    with pytest.raises(QuantizationError, match=r"qcore\.nn\.quantized\.Conv2d: expected a quantized input .*QuantStub"):
        qmod(torch.randn(1, 2, 3, 3))
    qmod._qcore_name = "features.0"
    with pytest.raises(QuantizationError, match=r"^features\.0 \(qcore\.nn\.quantized\.Conv2d\): expected a quantized input \(QTensor\) but got a float tensor; put a QuantStub"):
        qmod(torch.randn(1, 2, 3, 3))


def test_from_float_errors_name_what_is_missing():
    layer = nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="Linear.from_float: the Linear has no qconfig"):
        Linear.from_float(layer)
    layer.qconfig = PER_TENSOR_QCONFIG
    with pytest.raises(ConfigError, match="no activation_post_process"):
        Linear.from_float(layer)
    with pytest.raises(ConfigError, match="Conv2d.from_float expects a float Conv2d"):
        Conv2d.from_float(observed(nn.Linear(3, 2), PER_TENSOR_QCONFIG, torch.randn(2, 3)))
    fused = observed(qcore.nn.intrinsic.ConvReLU2d(nn.Conv2d(1, 1, 1), nn.ReLU()), PER_TENSOR_QCONFIG, torch.randn(1, 1, 2, 2))
    with pytest.raises(ConfigError, match="got the fused ConvReLU2d"):
        Conv2d.from_float(fused)
    float16 = QConfig(activation=qcore.observers.PlaceholderObserver.with_args(dtype=torch.float16), weight=default_weight_observer)
    with pytest.raises(ConfigError, match="uint8 or int8 activations, not float16"):
        Linear.from_float(observed(nn.Linear(3, 2), float16, torch.randn(2, 3)))
    with pytest.raises(QuantizationError, match="does not match"):
        Linear(3, 2).set_weight_bias(quantize_per_tensor(torch.randn(3, 3), 0.1, 0, "int8"), None)
    with pytest.raises(ConfigError):
        Conv2d(3, 4, 3, groups=2)  # torch's own argument check, re-raised as a qcore error


# --- state_dict, repr ---------------------------------------------------------------------------------------------


def _per_channel_conv() -> Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, bias=True)
    return Conv2d.from_float(observed(conv, PER_CHANNEL_QCONFIG, torch.randn(2, 3, 6, 6)))


def test_state_dict_keys_and_round_trip_into_a_fresh_module():
    qmod = _per_channel_conv()
    state = qmod.state_dict()
    assert list(state) == ["weight", "weight_scale", "weight_zero_point", "weight_axis", "bias", "scale", "zero_point", "_extra_state"]
    assert state["weight"].dtype == torch.int8 and state["weight_axis"].item() == 0 and state["weight_scale"].shape == (5,)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = Conv2d(3, 5, 3)  # per-tensor, default qparams: the loaded shapes win
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = input_qtensor((1, 3, 6, 6))
    assert torch.equal(fresh(x).int_repr(), qmod(x).int_repr())
    assert fresh.weight().qscheme() is qmod.weight().qscheme()
    assert repr(fresh) == repr(qmod)


def test_state_dict_loads_across_output_dtype_and_bias():
    torch.manual_seed(0)
    act = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    src = Linear.from_float(observed(nn.Linear(4, 3, bias=False), QConfig(activation=act, weight=default_weight_observer), torch.randn(5, 4)))
    dst = Linear(4, 3)
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert missing == ["bias"] and unexpected == []
    assert dst.dtype is dtypes.int8
    with pytest.raises(RuntimeError, match="Missing key"):
        Linear(4, 3).load_state_dict({k: v for k, v in src.state_dict().items() if k != "weight"})


def test_repr_shows_qparams():
    text = repr(_per_channel_conv())
    assert text.startswith("QuantizedConv2d(3, 5, kernel_size=(3, 3), stride=(1, 1), dtype=uint8, scale=")
    assert "weight_qscheme=per_channel_symmetric, weight_axis=0" in text
    linear = Linear(4, 3)
    linear.scale, linear.zero_point = 0.5, 7  # torch.ao-style assignment of plain numbers
    assert repr(linear) == (
        "QuantizedLinear(in_features=4, out_features=3, dtype=uint8, scale=0.5, zero_point=7, "
        "weight_dtype=int8, weight_qscheme=per_tensor_affine, weight_scale=1.0, weight_zero_point=0)"
    )
