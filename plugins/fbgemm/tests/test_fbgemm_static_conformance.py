"""Conformance of the fbgemm static kernels: every lowered op within one quantization step of the reference
module and of torch.ao's fbgemm module holding the same weights, on property-generated shapes and inputs.

Activations are drawn on 7 bits (0..127), the backend's documented input range
(``reduce_range``): on AVX2 machines without VNNI torch's int8 kernels
accumulate pairs of products in 16 bits, which full-range inputs can saturate.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import qcore
from qcore.nn.intrinsic.quantized import bn_relu as ref_bn_relu
from qcore.nn.intrinsic.quantized import conv_relu as ref_conv_relu
from qcore.nn.intrinsic.quantized.linear_relu import LinearReLU as RefLinearReLU
from qcore.nn.quantized import activation as ref_act
from qcore.nn.quantized import batchnorm as ref_bn
from qcore.nn.quantized import conv as ref_conv
from qcore.nn.quantized import normalization as ref_norm
from qcore.nn.quantized.functional_modules import QFunctional as RefQFunctional
from qcore.nn.quantized.linear import Linear as RefLinear
from qcore.nn.quantized.quant_dequant import DeQuantize as RefDeQuantize
from qcore.nn.quantized.quant_dequant import Quantize as RefQuantize
from qcore.qtensor import QTensor

from qcore_fbgemm.lowering import lower_module
from qcore_fbgemm.static.kernel import KernelModule
from qcore_fbgemm.torch_quantized import KernelQTensor

torch.set_num_threads(1)
SETTINGS = dict(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture(autouse=True)
def fbgemm_engine():
    """torch.ao's oracle modules pack on fbgemm; the user's engine is restored after."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    yield
    torch.backends.quantized.engine = previous


def _ao():
    """torch.ao's quantized module namespaces (the oracle), with their deprecation warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.nn.intrinsic.quantized as nniq
        import torch.ao.nn.quantized as nnq
    return nnq, nniq


# --- inputs, weights, qparams ------------------------------------------------------------------------


def seven_bit_input(shape: tuple[int, ...], scale: float, zero_point: int, seed: int) -> QTensor:
    g = torch.Generator().manual_seed(seed)
    return QTensor.from_int(torch.randint(0, 128, shape, generator=g, dtype=torch.uint8), scale, zero_point, "uint8")


def int8_weight(shape: tuple[int, ...], per_channel: bool, seed: int, axis: int = 0) -> QTensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    if per_channel:
        dims = [d for d in range(w.dim()) if d != axis]
        scales = (w.abs().amax(dim=dims) / 127.5).clamp_min(1e-4).to(torch.float64)
        return qcore.quantize_per_channel(w, scales, torch.zeros_like(scales, dtype=torch.int64), axis, "int8")
    return qcore.quantize_per_tensor(w, float(w.abs().max()) / 127.5, 0, "int8")


def output_qparams_for(y: Tensor) -> tuple[float, int]:
    """uint8 qparams covering ``y`` (and zero), as an observer would choose them."""
    lo, hi = min(float(y.min()), 0.0), max(float(y.max()), 0.0)
    scale = max((hi - lo) / 255.0, 1e-4)
    scale = float(torch.tensor(scale, dtype=torch.float32))
    return scale, int(min(max(round(-lo / scale), 0), 255))


def to_torch_q(x: QTensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._make_per_tensor_quantized_tensor(x.int_repr(), x.q_scale(), x.q_zero_point())


def param(t: Optional[Tensor]) -> Optional[nn.Parameter]:
    """torch.ao's norms keep their affine tensors as parameters."""
    return None if t is None else nn.Parameter(t.clone(), requires_grad=False)


def torch_weight(w: QTensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if w.qscheme().is_per_channel:
            return torch._make_per_channel_quantized_tensor(
                w.int_repr(), w.q_per_channel_scales(), w.q_per_channel_zero_points(), w.q_per_channel_axis())
        return torch._make_per_tensor_quantized_tensor(w.int_repr(), w.q_scale(), w.q_zero_point())


def lowered(ref: nn.Module) -> nn.Module:
    kernel = lower_module(ref)
    assert isinstance(kernel, KernelModule), f"{type(ref).__name__} was not lowered"
    return kernel


def assert_within_one_step(got: Any, want: Any, what: str) -> None:
    g, w = got.int_repr(), want.int_repr()
    assert g.shape == w.shape, what
    diff = (g.to(torch.int32) - w.to(torch.int32)).abs()
    assert int(diff.max()) <= 1 if diff.numel() else True, f"{what}: {int(diff.max())} steps apart"


def check(ref: nn.Module, ao: Optional[nn.Module], inputs: tuple, what: str, force_onednn: bool = False) -> None:
    """The kernel module against the reference module and (when given) torch.ao's module."""
    kernel = lowered(ref)
    if force_onednn:
        op = kernel.__dict__["_kernel_op"]
        op.onednn_min_macs = op.onednn_min_pixels = 0.0
        kernel.__dict__["_kernel_run"] = op.eager()
    out = kernel(*inputs)
    assert isinstance(out, KernelQTensor)
    want = ref(*inputs)
    assert (out.q_scale(), out.q_zero_point()) == (want.q_scale(), want.q_zero_point())
    assert_within_one_step(out, want, f"{what} vs reference")
    if ao is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = ao(*[to_torch_q(x) for x in inputs])
        assert_within_one_step(out, theirs, f"{what} vs torch.ao")
    # a second call reuses the torch tensor carried by a kernel output
    again = kernel(*[lowered_identity(x) for x in inputs])
    assert torch.equal(again.int_repr(), out.int_repr())


def lowered_identity(x: QTensor) -> QTensor:
    from qcore_fbgemm.torch_quantized import from_torch

    return from_torch(to_torch_q(x))


# --- Linear ------------------------------------------------------------------------------------------


@settings(**SETTINGS)
@given(
    batch=st.integers(1, 5), in_f=st.integers(1, 24), out_f=st.integers(1, 16), bias=st.booleans(),
    per_channel=st.booleans(), relu=st.booleans(), extra_dim=st.booleans(), seed=st.integers(0, 2**16),
    in_scale=st.floats(0.005, 0.2), in_zp=st.integers(0, 127),
)
def test_linear(batch, in_f, out_f, bias, per_channel, relu, extra_dim, seed, in_scale, in_zp):
    nnq, nniq = _ao()
    w = int8_weight((out_f, in_f), per_channel, seed)
    b = torch.randn(out_f, generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    shape = (batch, 3, in_f) if extra_dim else (batch, in_f)
    x = seven_bit_input(shape, in_scale, in_zp, seed + 2)
    y = F.linear(x.dequantize(), w.dequantize(), b)
    scale, zp = output_qparams_for(F.relu(y) if relu else y)
    ref = (RefLinearReLU if relu else RefLinear)(in_f, out_f, bias_=bias)
    ref.set_weight_bias(w, b)
    ref.set_output_qparams(scale, zp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = nniq.LinearReLU(in_f, out_f, bias=bias) if relu else nnq.Linear(in_f, out_f, bias_=bias)
        ao.set_weight_bias(torch_weight(w), b)
        ao.scale, ao.zero_point = scale, zp
    check(ref, ao, (x,), "linear")


# --- convolutions --------------------------------------------------------------------------------------

_REF_CONV = {
    (1, False): ref_conv.Conv1d, (2, False): ref_conv.Conv2d, (3, False): ref_conv.Conv3d,
    (1, True): ref_conv_relu.ConvReLU1d, (2, True): ref_conv_relu.ConvReLU2d, (3, True): ref_conv_relu.ConvReLU3d,
}


@settings(**SETTINGS)
@given(
    ndim=st.sampled_from([1, 2, 2, 3]), relu=st.booleans(), batch=st.integers(1, 3), groups=st.sampled_from([1, 2]),
    cin_per_group=st.integers(1, 4), cout_per_group=st.integers(1, 4), kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 1), dilation=st.integers(1, 2), size=st.integers(5, 8), bias=st.booleans(),
    per_channel=st.booleans(), onednn=st.booleans(), seed=st.integers(0, 2**16),
    in_scale=st.floats(0.005, 0.2), in_zp=st.integers(0, 127),
)
def test_conv(ndim, relu, batch, groups, cin_per_group, cout_per_group, kernel, stride, padding, dilation, size, bias,
              per_channel, onednn, seed, in_scale, in_zp):
    nnq, nniq = _ao()
    cin, cout = cin_per_group * groups, cout_per_group * groups
    w = int8_weight((cout, cin_per_group) + (kernel,) * ndim, per_channel, seed)
    b = torch.randn(cout, generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    x = seven_bit_input((batch, cin) + (size,) * ndim, in_scale, in_zp, seed + 2)
    conv_args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y = (F.conv1d, F.conv2d, F.conv3d)[ndim - 1](x.dequantize(), w.dequantize(), b, **conv_args)
    scale, zp = output_qparams_for(F.relu(y) if relu else y)
    ref = _REF_CONV[(ndim, relu)](cin, cout, kernel, bias=bias, **conv_args)
    ref.set_weight_bias(w, b)
    ref.set_output_qparams(scale, zp)
    ao_cls = getattr(nniq, f"ConvReLU{ndim}d") if relu else getattr(nnq, f"Conv{ndim}d")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = ao_cls(cin, cout, kernel, bias=bias, **conv_args)
        ao.set_weight_bias(torch_weight(w), b)
        ao.scale, ao.zero_point = scale, zp
    check(ref, ao, (x,), f"conv{ndim}d", force_onednn=onednn)


@settings(**SETTINGS)
@given(
    ndim=st.sampled_from([1, 2, 3]), batch=st.integers(1, 3), cin=st.integers(1, 4), cout=st.integers(1, 4),
    kernel=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 1), size=st.integers(3, 6),
    bias=st.booleans(), seed=st.integers(0, 2**16), in_scale=st.floats(0.005, 0.2), in_zp=st.integers(0, 127),
)
def test_conv_transpose(ndim, batch, cin, cout, kernel, stride, padding, size, bias, seed, in_scale, in_zp):
    nnq, _ = _ao()
    w = int8_weight((cin, cout) + (kernel,) * ndim, False, seed)
    b = torch.randn(cout, generator=torch.Generator().manual_seed(seed + 1)) if bias else None
    x = seven_bit_input((batch, cin) + (size,) * ndim, in_scale, in_zp, seed + 2)
    y = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[ndim - 1](
        x.dequantize(), w.dequantize(), b, stride=stride, padding=padding)
    scale, zp = output_qparams_for(y)
    ref = getattr(ref_conv, f"ConvTranspose{ndim}d")(cin, cout, kernel, stride=stride, padding=padding, bias=bias)
    ref.set_weight_bias(w, b)
    ref.set_output_qparams(scale, zp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = getattr(nnq, f"ConvTranspose{ndim}d")(cin, cout, kernel, stride=stride, padding=padding, bias=bias)
        ao.set_weight_bias(torch_weight(w), b)
        ao.scale, ao.zero_point = scale, zp
    check(ref, ao, (x,), f"conv_transpose{ndim}d")


def test_configurations_without_a_kernel_stay_reference():
    per_channel_transposed = ref_conv.ConvTranspose2d(2, 3, 3)
    per_channel_transposed.set_weight_bias(int8_weight((2, 3, 3, 3), True, 0, axis=1), None)
    reflect = ref_conv.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    uint8_weights = RefLinear(4, 3, dtype="uint8")
    int8_output = RefLinear(4, 3, output_dtype="int8")
    for module in (per_channel_transposed, reflect, uint8_weights, int8_output):
        assert lower_module(module) is None, type(module).__name__


def test_same_padding_lowers_when_symmetric():
    same = ref_conv.Conv2d(2, 3, 3, padding="same")
    same.set_weight_bias(int8_weight((3, 2, 3, 3), True, 0), None)
    same.set_output_qparams(0.05, 10)
    x = seven_bit_input((1, 2, 5, 5), 0.05, 3, 1)
    assert_within_one_step(lowered(same)(x), same(x), "same padding")
    asymmetric = ref_conv.Conv2d(2, 3, 4, padding="same")
    assert lower_module(asymmetric) is None


# --- Quantize / DeQuantize -----------------------------------------------------------------------------


@settings(**SETTINGS)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), scale=st.floats(0.001, 1.0), zp=st.integers(0, 255),
       seed=st.integers(0, 2**16))
def test_quantize_is_bit_exact_and_dequantize_too(shape, scale, zp, seed):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 50
    scale = float(torch.tensor(scale, dtype=torch.float32))
    ref = RefQuantize(scale, zp)
    kernel = lowered(ref)
    out, want = kernel(x), ref(x)
    assert isinstance(out, KernelQTensor)
    assert torch.equal(out.int_repr(), want.int_repr())
    assert torch.equal(lower_module(RefDeQuantize())(out), RefDeQuantize()(want))


def test_quantize_keeps_the_reference_errors_and_other_inputs():
    kernel = lowered(RefQuantize(0.1, 3))
    with pytest.raises(qcore.QuantizationError):
        kernel(torch.tensor([1.0, float("nan")]))
    with pytest.raises(qcore.QuantizationError, match="already quantized"):
        kernel(kernel(torch.ones(2)))
    double = torch.linspace(-3, 3, 11, dtype=torch.float64)
    assert torch.equal(kernel(double).int_repr(), RefQuantize(0.1, 3)(double).int_repr())


# --- activations ---------------------------------------------------------------------------------------


def _activation_case(name: str, x: QTensor) -> tuple[nn.Module, nn.Module]:
    nnq, _ = _ao()
    xf = x.dequantize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "hardswish":
            s, z = output_qparams_for(F.hardswish(xf))
            return ref_act.Hardswish(s, z), nnq.Hardswish(s, z)
        if name == "elu":
            s, z = output_qparams_for(F.elu(xf, 0.7))
            return ref_act.ELU(s, z, 0.7), nnq.ELU(s, z, 0.7)
        if name == "leaky_relu":
            s, z = output_qparams_for(F.leaky_relu(xf, 0.1))
            return ref_act.LeakyReLU(s, z, 0.1), nnq.LeakyReLU(s, z, 0.1)
        if name == "sigmoid":
            return ref_act.Sigmoid(), nnq.Sigmoid(1.0 / 256, 0)
        if name == "softmax":
            return ref_act.Softmax(dim=-1), nnq.Softmax(dim=-1, scale=1.0 / 256, zero_point=0)
        if name == "tanh":
            return ref_act.Tanh(), None
        if name == "hardsigmoid":
            return ref_act.Hardsigmoid(), None
        if name == "relu6_keep":
            return ref_act.ReLU6(), nnq.ReLU6()
        s, z = output_qparams_for(F.relu6(xf))
        return ref_act.ReLU6(scale=s, zero_point=z), None


@settings(**SETTINGS)
@given(
    name=st.sampled_from(
        ["hardswish", "elu", "leaky_relu", "sigmoid", "softmax", "tanh", "hardsigmoid", "relu6_keep", "relu6"]
    ),
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4), scale=st.floats(0.01, 0.2), zp=st.integers(0, 127),
    seed=st.integers(0, 2**16),
)
def test_activations(name, shape, scale, zp, seed):
    x = seven_bit_input(tuple(shape), scale, zp, seed)
    ref, ao = _activation_case(name, x)
    check(ref, ao, (x,), name)


def test_fixed_qparams_activations_with_other_qparams_stay_reference():
    assert lower_module(ref_act.Tanh(output_scale=0.01, output_zero_point=100)) is None
    assert lower_module(ref_act.Softmax(dim=None)) is None


# --- norms ---------------------------------------------------------------------------------------------


@settings(**SETTINGS)
@given(
    kind=st.sampled_from(["bn2d", "bn3d", "bnrelu2d", "bnrelu3d"]), batch=st.integers(1, 3), channels=st.integers(1, 5),
    size=st.integers(1, 5), seed=st.integers(0, 2**16), scale=st.floats(0.01, 0.2), zp=st.integers(0, 127),
)
def test_batch_norm(kind, batch, channels, size, seed, scale, zp):
    nnq, nniq = _ao()
    ndim = 3 if kind.endswith("3d") else 2
    x = seven_bit_input((batch, channels) + (size,) * ndim, scale, zp, seed)
    g = torch.Generator().manual_seed(seed + 1)
    stats = dict(weight=torch.rand(channels, generator=g) + 0.5, bias=torch.randn(channels, generator=g),
                 running_mean=torch.randn(channels, generator=g), running_var=torch.rand(channels, generator=g) + 0.1)
    relu = kind.startswith("bnrelu")
    y = F.batch_norm(x.dequantize(), stats["running_mean"], stats["running_var"], stats["weight"], stats["bias"])
    s, z = output_qparams_for(F.relu(y) if relu else y)
    ref_cls = getattr(ref_bn_relu, f"BNReLU{ndim}d") if relu else getattr(ref_bn, f"BatchNorm{ndim}d")
    ref = ref_cls(channels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = (getattr(nniq, f"BNReLU{ndim}d") if relu else getattr(nnq, f"BatchNorm{ndim}d"))(channels)
    for module in (ref, ao):
        with torch.no_grad():
            for key, value in stats.items():
                getattr(module, key).copy_(value)
    ao.scale, ao.zero_point = torch.tensor(s), torch.tensor(z)
    ref.set_output_qparams(s, z)
    check(ref, ao, (x,), kind)


@settings(**SETTINGS)
@given(
    kind=st.sampled_from(["layer", "group", "instance1d", "instance2d", "instance3d"]), affine=st.booleans(),
    batch=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3), size=st.integers(2, 5),
    seed=st.integers(0, 2**16), scale=st.floats(0.01, 0.2), zp=st.integers(0, 127),
)
def test_layer_group_instance_norm(kind, affine, batch, groups, per_group, size, seed, scale, zp):
    nnq, _ = _ao()
    channels = groups * per_group
    ndim = {"layer": 2, "group": 2, "instance1d": 1, "instance2d": 2, "instance3d": 3}[kind]
    x = seven_bit_input((batch, channels) + (size,) * ndim, scale, zp, seed)
    g = torch.Generator().manual_seed(seed + 1)
    xf = x.dequantize()
    if kind == "layer":
        shape = tuple(x.shape[2:])
        w = torch.rand(shape, generator=g) + 0.5 if affine else None
        b = torch.randn(shape, generator=g) if affine else None
        s, z = output_qparams_for(F.layer_norm(xf, shape, w, b))
        ref = ref_norm.LayerNorm(shape, w, b, s, z, elementwise_affine=affine)
        make_ao = lambda: nnq.LayerNorm(shape, param(w), param(b), s, z, elementwise_affine=affine)  # noqa: E731
    else:
        w = torch.rand(channels, generator=g) + 0.5 if affine else None
        b = torch.randn(channels, generator=g) if affine else None
        if kind == "group":
            w = w if affine else torch.ones(channels)
            b = b if affine else torch.zeros(channels)
            s, z = output_qparams_for(F.group_norm(xf, groups, w, b))
            ref = ref_norm.GroupNorm(groups, channels, w, b, s, z)
            make_ao = lambda: nnq.GroupNorm(groups, channels, param(w), param(b), s, z)  # noqa: E731
        else:
            s, z = output_qparams_for(F.instance_norm(xf, weight=w, bias=b))
            ref = getattr(ref_norm, f"InstanceNorm{ndim}d")(channels, w, b, s, z, affine=affine)
            ao_w = w if affine else torch.ones(channels)
            ao_b = b if affine else torch.zeros(channels)
            ao_cls = getattr(nnq, f"InstanceNorm{ndim}d")
            make_ao = lambda: ao_cls(channels, param(ao_w), param(ao_b), s, z)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = make_ao()
    check(ref, ao, (x,), kind)


# --- QFunctional -------------------------------------------------------------------------------------


@settings(**SETTINGS)
@given(
    op=st.sampled_from(["add", "add_relu", "mul", "cat", "matmul"]),
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    broadcast=st.booleans(), seed=st.integers(0, 2**16), sa=st.floats(0.01, 0.2), sb=st.floats(0.01, 0.2),
    za=st.integers(0, 127), zb=st.integers(0, 127),
)
def test_qfunctional(op, shape, broadcast, seed, sa, sb, za, zb):
    nnq, _ = _ao()
    shape = tuple(shape)
    other = shape
    if op == "matmul":
        other = shape[:-2] + (shape[-1], 3)
    elif broadcast and op != "cat":
        other = (1,) * (len(shape) - 1) + (shape[-1],)
    a = seven_bit_input(shape, sa, za, seed)
    b = seven_bit_input(other, sb, zb, seed + 1)
    fa, fb = a.dequantize(), b.dequantize()
    y = {"add": lambda: fa + fb, "add_relu": lambda: F.relu(fa + fb), "mul": lambda: fa * fb,
         "cat": lambda: torch.cat([fa, fb], 1), "matmul": lambda: fa @ fb}[op]()
    s, z = output_qparams_for(y)
    ref = RefQFunctional()
    ref.set_output_qparams(s, z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = nnq.QFunctional()
    ao.scale, ao.zero_point = s, z
    kernel = lowered(ref)
    if op == "cat":
        out, want = kernel.cat([a, b], 1), ref.cat([a, b], 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = ao.cat([to_torch_q(a), to_torch_q(b)], 1)
    else:
        out, want = getattr(kernel, op)(a, b), getattr(ref, op)(a, b)
        theirs = None
        if op != "matmul":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = getattr(ao, op)(to_torch_q(a), to_torch_q(b))
    assert isinstance(out, KernelQTensor)
    assert_within_one_step(out, want, f"{op} vs reference")
    if theirs is not None:
        assert_within_one_step(out, theirs, f"{op} vs torch.ao")


def test_qfunctional_left_broadcast_and_scalar_ops_use_the_reference():
    ref = RefQFunctional()
    ref.set_output_qparams(0.05, 10)
    kernel = lowered(ref)
    small, big = seven_bit_input((1, 3), 0.05, 3, 0), seven_bit_input((2, 3), 0.04, 5, 1)
    out = kernel.add(small, big)
    assert not isinstance(out, KernelQTensor)
    assert torch.equal(out.int_repr(), ref.add(small, big).int_repr())
    assert torch.equal(kernel.add_scalar(big, 0.3).int_repr(), ref.add_scalar(big, 0.3).int_repr())
    assert torch.equal(kernel.mul_scalar(big, -2.0).int_repr(), ref.mul_scalar(big, -2.0).int_repr())


# --- what kernel outputs let through ---------------------------------------------------------------------


@settings(**SETTINGS)
@given(batch=st.integers(1, 3), channels=st.integers(1, 4), size=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_pass_through_ops_on_kernel_outputs_equal_qtensors(batch, channels, size, seed):
    from qcore_fbgemm.torch_quantized import from_torch

    x = seven_bit_input((batch, channels, size, size), 0.05, 20, seed)
    k = from_torch(to_torch_q(x))
    cases: list[Callable[[QTensor], QTensor]] = [
        lambda t: F.max_pool2d(t, 2, ceil_mode=True), lambda t: nn.MaxPool2d(2, 1, padding=1)(t),
        lambda t: F.max_pool1d(t.flatten(2), 2), lambda t: t.flatten(1), lambda t: t.reshape(batch, -1),
        lambda t: t.view(batch * channels, size, size), lambda t: F.relu(t), lambda t: torch.relu(t),
        lambda t: t.unsqueeze(0).squeeze(0), lambda t: nn.ReLU()(t), lambda t: t.permute(0, 2, 3, 1),
        lambda t: F.adaptive_max_pool2d(t, 1), lambda t: t[:, :1],
    ]
    for fn in cases:
        got, want = fn(k), fn(x)
        assert isinstance(got, QTensor)
        assert (got.q_scale(), got.q_zero_point()) == (want.q_scale(), want.q_zero_point())
        assert torch.equal(got.int_repr(), want.int_repr())
    inplace = from_torch(to_torch_q(x))
    F.relu(inplace, inplace=True)
    assert torch.equal(inplace.int_repr(), F.relu(x).int_repr())
    assert torch.equal(inplace._torch.int_repr(), inplace.int_repr())
    with pytest.raises(qcore.QuantizationError, match="Dequantize first"):
        torch.sigmoid(k)


# --- TorchScript: a twin per kernel module, the same integers as eager ---------------------------------------


def _scriptable_cases() -> dict[str, tuple[nn.Module, QTensor]]:
    x4 = seven_bit_input((2, 4, 6, 6), 0.05, 10, 0)
    x3 = seven_bit_input((2, 4, 7), 0.05, 10, 1)
    cases: dict[str, tuple[nn.Module, QTensor]] = {}
    linear = RefLinearReLU(7, 5)
    linear.set_weight_bias(int8_weight((5, 7), True, 2), torch.randn(5))
    linear.set_output_qparams(0.05, 0)
    cases["linear_relu"] = (linear, x3)
    for ndim, x in ((1, x3), (2, x4)):
        conv = _REF_CONV[(ndim, False)](4, 6, 3, padding=1)
        conv.set_weight_bias(int8_weight((6, 4) + (3,) * ndim, True, 3), torch.randn(6))
        conv.set_output_qparams(0.1, 60)
        cases[f"conv{ndim}d"] = (conv, x)
    transposed = ref_conv.ConvTranspose2d(4, 3, 2, stride=2)
    transposed.set_weight_bias(int8_weight((4, 3, 2, 2), False, 4), None)
    transposed.set_output_qparams(0.1, 60)
    cases["conv_transpose2d"] = (transposed, x4)
    for name in ("hardswish", "elu", "leaky_relu", "sigmoid", "softmax", "tanh", "hardsigmoid", "relu6"):
        cases[name] = (_activation_case(name, x4)[0], x4)
    bn = ref_bn_relu.BNReLU2d(4)
    bn.set_output_qparams(0.05, 0)
    cases["bn_relu2d"] = (bn, x4)
    cases["layer_norm"] = (ref_norm.LayerNorm(7, torch.rand(7) + 0.5, torch.randn(7), 0.03, 128), x3)
    cases["group_norm"] = (ref_norm.GroupNorm(2, 4, None, None, 0.03, 128, affine=False), x4)
    cases["instance_norm1d"] = (ref_norm.InstanceNorm1d(4, None, None, 0.03, 128), x3)
    return cases


@pytest.mark.parametrize("name", sorted(_scriptable_cases()))
def test_scripted_twin_equals_the_eager_kernel(name):
    ref, x = _scriptable_cases()[name]
    kernel = lowered(ref)
    expected = kernel(x).dequantize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script itself is deprecated in this torch
        scripted = torch.jit.script(kernel)
    assert torch.equal(scripted(x.dequantize()), expected)
    # an input on another grid than the eager run's: the twin computes the reference numerics
    other = seven_bit_input(tuple(x.shape), 0.0371, 17, 5)
    assert torch.equal(scripted(other.dequantize()), ref(other).dequantize())


def test_scripted_qfunctional_runs_the_kernels_it_ran():
    ref = RefQFunctional()
    ref.set_output_qparams(0.05, 10)
    kernel = lowered(ref)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = kernel

        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return self.f.cat([self.f.add_relu(a, b), self.f.mul(a, b), self.f.add(a, b)], 1)

    block = Block()
    a, b = seven_bit_input((2, 3, 4), 0.03, 7, 0), seven_bit_input((2, 3, 4), 0.04, 9, 1)
    expected = block(a, b).dequantize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(block)
    assert torch.equal(scripted(a.dequantize(), b.dequantize()), expected)
