"""Average pooling on QTensor: the same integers as torch's quantized kernels, and the eager flow that uses it.

torch's quantized ``avg_pool*`` / ``adaptive_avg_pool*`` are the oracle, per memory format (its NCHW
and channels-last kernels round differently). Cases where torch's own kernels misbehave are left out of
the exact comparison and named where they are skipped (docs/numerics.md, "Average pooling").
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
from qcore.errors import QuantizationError
from qcore.flow import mappings
from qcore.flow.eager import UnquantizedModuleWarning, convert, prepare
from qcore.qtensor import QTensor, quantize_per_channel, quantize_per_tensor
from qcore.stubs import DeQuantStub, QuantStub

from _helpers import HAVE_TORCH_Q, needs_torch_q

torch.set_num_threads(1)

SETTINGS = dict(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TORCH_QDTYPE = {"uint8": "quint8", "int8": "qint8"}


def oracle(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@st.composite
def quantized_inputs(draw, spatial: int, adaptive: bool = False):
    """(float tensor, scale, zero point, qdtype name, memory format) for a pooling input with ``spatial`` dims."""
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    channels = draw(st.sampled_from([1, 2, 3, 8, 9, 16, 17, 33]))
    sizes = [draw(st.integers(1, 7)) for _ in range(spatial)]
    batched = draw(st.booleans()) or spatial == 3 and not adaptive  # torch's avg_pool3d needs the batch dimension
    shape = ([draw(st.integers(1, 2))] if batched else []) + [channels] + sizes
    formats = [torch.contiguous_format]
    if batched and spatial == 2:
        formats.append(torch.channels_last)
    if batched and spatial == 3 and not adaptive:  # adaptive: see test_adaptive_avg_pool3d_channels_last_is_within_one_step
        formats.append(torch.channels_last_3d)
    memory_format = draw(st.sampled_from(formats))
    seed = draw(st.integers(0, 2**16))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * draw(st.sampled_from([0.5, 3.0]))
    scale = draw(st.sampled_from([0.01, 0.05, 0.1, 0.37]))
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    zero_point = draw(st.integers(lo, hi))
    return x, scale, zero_point, dtype, memory_format


def both(x, scale, zero_point, dtype, memory_format):
    ours = quantize_per_tensor(x, scale, zero_point, dtype).contiguous(memory_format=memory_format)
    theirs = oracle(torch.quantize_per_tensor, x, scale, zero_point, getattr(torch, TORCH_QDTYPE[dtype]))
    return ours, theirs.contiguous(memory_format=memory_format)


def assert_same(ours, theirs, scale, zero_point):
    assert isinstance(ours, QTensor)
    assert ours.q_scale() == scale and ours.q_zero_point() == zero_point
    assert ours.shape == theirs.shape
    assert torch.equal(ours.int_repr(), theirs.int_repr())
    assert ours.is_contiguous() == theirs.is_contiguous()


@needs_torch_q
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_avg_pool_equals_torch_quantized_kernels(spatial):
    pool = getattr(F, f"avg_pool{spatial}d")

    @settings(**SETTINGS)
    @given(quantized_inputs(spatial), st.data())
    def check(inputs, data):
        x, scale, zero_point, dtype, memory_format = inputs
        sizes = x.shape[-spatial:]
        kernel = [data.draw(st.integers(1, s)) for s in sizes]
        stride = [data.draw(st.integers(1, 3)) for _ in sizes]
        padding = [data.draw(st.integers(0, k // 2)) for k in kernel]
        ceil_mode, count_include_pad = data.draw(st.booleans()), data.draw(st.booleans())
        args = [kernel, data.draw(st.sampled_from([None, stride])), padding, ceil_mode, count_include_pad]
        if spatial > 1:
            args.append(data.draw(st.sampled_from([None, 1, 3, 7])))  # divisor_override
        ours, theirs = both(*inputs)
        assert_same(pool(ours, *args), oracle(pool, theirs, *args), scale, zero_point)

    check()


@needs_torch_q
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_adaptive_avg_pool_equals_torch_quantized_kernels(spatial):
    pool = getattr(F, f"adaptive_avg_pool{spatial}d")

    @settings(**SETTINGS)
    @given(quantized_inputs(spatial, adaptive=True), st.data())
    def check(inputs, data):
        x, scale, zero_point, dtype, memory_format = inputs
        if all(s == 1 for s in x.shape[-spatial:]) and x.shape[-spatial - 1] > 1:
            return  # torch bug: an (N, C, 1, 1) input is both layouts and its NHWC kernel scrambles the output
        if spatial == 3 and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return  # torch bug: a (C, 1, H, W)-like 4-d input is taken for a 2-d channels-last batch
        sizes = [data.draw(st.one_of(st.integers(1, 8), st.none())) for _ in range(spatial)]
        output_size = sizes[0] if spatial == 1 else tuple(sizes)
        if output_size is None:
            output_size = 3
        ours, theirs = both(*inputs)
        assert_same(pool(ours, output_size), oracle(pool, theirs, output_size), scale, zero_point)

    check()


@needs_torch_q
def test_channels_last_and_contiguous_inputs_round_as_their_own_kernels():
    # a tie: (1 + 2) / 2 = 1.5 above the zero point 1; torch's NCHW kernel adds the zero point before rounding
    # (nearbyint(2.5) = 2), its NHWC kernel (vector loop) after (nearbyint(1.5) + 1 = 3)
    ints = torch.tensor([2, 3], dtype=torch.uint8).repeat(1, 16, 1, 1)  # (1, 16, 1, 2)
    q = QTensor.from_int(ints, 0.1, 1, "uint8")
    tq = oracle(torch._make_per_tensor_quantized_tensor, ints, 0.1, 1)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        ours = F.avg_pool2d(q.contiguous(memory_format=memory_format), (1, 2))
        theirs = oracle(F.avg_pool2d, tq.contiguous(memory_format=memory_format), (1, 2))
        assert torch.equal(ours.int_repr(), theirs.int_repr())


@needs_torch_q
@pytest.mark.parametrize("adaptive", [False, True])
def test_near_ties_with_inexact_divisors_match_in_every_channel(adaptive):
    # windows of 6 (1/6 is inexact in float32) over many random integers: torch's NHWC kernels treat the
    # channels of their vector loop (blocks of 8 or 16) and the rest differently near ties
    ints = torch.randint(-128, 128, (64, 21, 2, 3), dtype=torch.int8, generator=torch.Generator().manual_seed(3))
    for zero_point in (-7, 0, 5, 33):
        q = QTensor.from_int(ints, 0.1, zero_point, "int8").contiguous(memory_format=torch.channels_last)
        tq = oracle(torch._make_per_tensor_quantized_tensor, ints, 0.1, zero_point).contiguous(memory_format=torch.channels_last)
        pool = (lambda t: F.adaptive_avg_pool2d(t, 1)) if adaptive else (lambda t: F.avg_pool2d(t, (2, 3)))
        assert torch.equal(pool(q).int_repr(), oracle(pool, tq).int_repr())


@needs_torch_q
def test_adaptive_avg_pool3d_channels_last_is_within_one_step():
    # torch's 3-d NHWC adaptive kernel resolves some exact ties either way; qcore rounds as its 2-d one
    x = torch.randn(2, 17, 5, 4, 6, generator=torch.Generator().manual_seed(0)) * 3
    ours, theirs = both(x, 0.05, 3, "int8", torch.channels_last_3d)
    diff = F.adaptive_avg_pool3d(ours, (3, 3, 8)).int_repr().int() - oracle(F.adaptive_avg_pool3d, theirs, (3, 3, 8)).int_repr().int()
    assert diff.abs().max() <= 1


def test_inputs_torch_misreads_get_the_right_average():
    # (N, C, 1, 1) is contiguous both ways; torch's NHWC kernel then writes its output in the wrong layout
    x = torch.randn(2, 5, 1, 1, generator=torch.Generator().manual_seed(2)) * 3
    q = quantize_per_tensor(x, 0.1, 3, "uint8")
    ints = q.int_repr().to(torch.int64) - 3
    pooled = F.avg_pool2d(q, 2, 1, 1, count_include_pad=False)  # every window holds the one value
    assert torch.equal(pooled.int_repr().to(torch.int64) - 3, ints.expand(2, 5, 2, 2))
    assert torch.equal(F.adaptive_avg_pool2d(q, 3).int_repr(), q.int_repr().expand(2, 5, 3, 3))


def test_modules_and_every_spelling_reach_the_handlers():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    q = quantize_per_tensor(x, 0.05, 128, "uint8")
    expected = F.avg_pool2d(q, 2)
    for out in (nn.AvgPool2d(2)(q), torch._C._nn.avg_pool2d(q, 2)):
        assert torch.equal(out.int_repr(), expected.int_repr())
    assert torch.equal(nn.AdaptiveAvgPool2d((1, 1))(q).int_repr(), torch._C._nn.adaptive_avg_pool2d(q, 1).int_repr())
    assert torch.equal(nn.AvgPool1d(3)(q[0]).int_repr(), torch.avg_pool1d(q[0], 3).int_repr())
    assert torch.equal(nn.AdaptiveAvgPool1d(4)(q[0]).int_repr(), torch.adaptive_avg_pool1d(q[0], 4).int_repr())
    v = q.unsqueeze(2)
    assert nn.AvgPool3d((1, 2, 2))(v).shape == (2, 3, 1, 3, 3)
    assert nn.AdaptiveAvgPool3d((1, None, 2))(v).shape == (2, 3, 1, 6, 2)
    # the integers average like the float values: within one step of pooling the dequantized input
    assert (expected.dequantize() - F.avg_pool2d(q.dequantize(), 2)).abs().max() <= 0.05 / 2 + 1e-6


def test_per_channel_and_other_dtypes_raise_a_quantization_error():
    x = torch.randn(2, 3, 4, 4)
    per_channel = quantize_per_channel(x, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), torch.zeros(3, dtype=torch.long), 1, "int8")
    with pytest.raises(QuantizationError, match="per-channel"):
        F.avg_pool2d(per_channel, 2)
    with pytest.raises(QuantizationError, match="per-channel"):
        nn.AdaptiveAvgPool2d(1)(per_channel)
    with pytest.raises(QuantizationError, match="uint8 or int8"):
        F.avg_pool2d(quantize_per_tensor(x, 0.1, 0, "int32"), 2)
    with pytest.raises(QuantizationError, match="divisor_override"):
        F.avg_pool2d(quantize_per_tensor(x, 0.1, 0, "uint8"), 2, divisor_override=0)


def test_average_pools_are_passthrough_modules():
    for cls in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d):
        assert cls in mappings.QTENSOR_PASSTHROUGH_MODULES


# --- the eager flow: a quantized model pools without a DeQuantStub -------------------------------------------


class PoolNet(nn.Module):
    """quant -> conv -> relu -> adaptive avg pool -> flatten -> linear -> dequant (ResNet's head)."""

    def __init__(self, quant: nn.Module, dequant: nn.Module) -> None:
        super().__init__()
        self.quant, self.dequant = quant, dequant
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.fc(self.flatten(self.pool(self.relu(self.conv(self.quant(x)))))))


def test_eager_model_pools_quantized_and_matches_torch_ao():
    ao = pytest.importorskip("torch.ao.quantization")
    if not HAVE_TORCH_Q:
        pytest.skip("needs torch's quantized kernels (the oracle)")
    torch.manual_seed(0)
    model = PoolNet(QuantStub(), DeQuantStub()).eval()
    calibration = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(9))

    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = prepare(model)
    assert not hasattr(prepared.pool, "activation_post_process")  # it keeps its input's qparams
    for batch in calibration:
        prepared(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnquantizedModuleWarning)
        with qcore.backend("reference"):
            quantized = convert(prepared)
    assert type(quantized.pool) is nn.AdaptiveAvgPool2d
    pooled = quantized.pool(quantized.relu(quantized.conv(quantized.quant(x))))
    assert isinstance(pooled, QTensor)
    ours = quantized(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao_model = PoolNet(ao.QuantStub(), ao.DeQuantStub()).eval()
        ao_model.load_state_dict(model.state_dict())
        ao_model.qconfig = ao.get_default_qconfig("fbgemm")
        ao_prepared = ao.prepare(copy.deepcopy(ao_model))
        for batch in calibration:
            ao_prepared(batch)
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = "fbgemm"
        try:
            ao_quantized = ao.convert(ao_prepared)
            theirs = ao_quantized(x)
        finally:
            torch.backends.quantized.engine = previous
    step = float(ao_quantized.fc.scale)
    assert abs(float(quantized.fc.scale) - step) <= 1e-6 * step
    assert (ours - theirs).abs().max() <= step * 1.001
