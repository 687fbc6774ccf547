"""FusedMovingAvgObsFakeQuantize and its vectorised op: bit-exact against torch's fused kernel."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qcore.fake_quant as fq
from qcore.dtypes import QScheme, to_torch_dtype, to_torch_qscheme
from qcore.errors import QuantizationError
from qcore.fake_quant.fused_ops import SMALL_SCALE_THRESHOLD, choose_qparams_from_range

ao_fq = pytest.importorskip("torch.ao.quantization.fake_quantize")
ao_obs = pytest.importorskip("torch.ao.quantization.observer")

torch.set_num_threads(1)

SCHEDULE = [(1, 1), (1, 1), (1, 1), (0, 1), (1, 0), (0, 0), (1, 1)]


def ao_twin(factory):
    """torch.ao's FusedMovingAvgObsFakeQuantize built from the same arguments as a qcore factory."""
    kwargs = {}
    for key, value in factory.kwargs:
        if key == "observer":
            value = getattr(ao_obs, value.__name__)
        elif key == "dtype":
            value = to_torch_dtype(value)
        elif key == "qscheme":
            value = to_torch_qscheme(value)
        kwargs[key] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ao_fq.FusedMovingAvgObsFakeQuantize(**kwargs)


def drifting_input(step: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(7 * step + 1)
    return torch.randn(shape, generator=g) * (1 + 0.7 * step) + 0.2 * (step - 3)


def check_step(ours, theirs, x, step):
    xq = x.clone().requires_grad_(True)
    xa = x.clone().requires_grad_(True)
    out_q = ours(xq)
    out_a = theirs(xa)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(step))
    (out_q * upstream).sum().backward()
    (out_a * upstream).sum().backward()
    assert torch.equal(out_q, out_a), f"step {step}: outputs differ"
    assert torch.equal(xq.grad, xa.grad), f"step {step}: gradients differ"
    for name in ("min_val", "max_val"):
        mine = getattr(ours.activation_post_process, name)
        ref = getattr(theirs.activation_post_process, name)
        assert torch.equal(mine, ref), f"step {step}: {name} {mine} != {ref}"
    assert torch.equal(ours.scale, theirs.scale), f"step {step}: scale {ours.scale} != {theirs.scale}"
    assert torch.equal(ours.zero_point, theirs.zero_point), f"step {step}: zero_point differs"


CONFIGS = {
    "act_uint8_affine": fq.default_fused_act_fake_quant,
    "act_uint8_reduce_range": fq.default_fused_act_fake_quant.with_args(reduce_range=True),
    "act_uint8_symmetric": fq.default_fused_act_fake_quant.with_args(qscheme=QScheme.PER_TENSOR_SYMMETRIC),
    "act_fast_average": fq.default_fused_act_fake_quant.with_args(averaging_constant=0.5),
    "weight_int8_symmetric": fq.default_fused_wt_fake_quant,
    "weight_int8_affine_reduce": fq.default_fused_wt_fake_quant.with_args(qscheme=QScheme.PER_TENSOR_AFFINE, reduce_range=True),
    "weight_neg127_to_127": fq.fused_wt_fake_quant_range_neg_127_to_127,
    "per_channel_weight": fq.default_fused_per_channel_wt_fake_quant,
    "per_channel_neg127_to_127": fq.fused_per_channel_wt_fake_quant_range_neg_127_to_127,
    "per_channel_affine_uint8": fq.default_fused_per_channel_wt_fake_quant.with_args(
        quant_min=0, quant_max=255, dtype=torch.quint8, qscheme=torch.per_channel_affine, averaging_constant=0.25
    ),
}


@pytest.mark.parametrize("shape", [(6, 10), (4, 3, 2, 2)])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_module_matches_torch_ao_over_steps(name, shape):
    factory = CONFIGS[name]
    ours, theirs = factory(), ao_twin(factory)
    assert isinstance(ours, fq.FusedMovingAvgObsFakeQuantize)
    for step, (observe, fake_quant) in enumerate(SCHEDULE):
        for module in (ours, theirs):
            module.enable_observer(bool(observe))
            module.enable_fake_quant(bool(fake_quant))
        check_step(ours, theirs, drifting_input(step, shape), step)
    ours_qparams, theirs_qparams = ours.calculate_qparams(), theirs.calculate_qparams()
    assert all(torch.equal(a, b) for a, b in zip(ours_qparams, theirs_qparams))
    assert "reduce_range=" in repr(ours)


@settings(max_examples=150, deadline=None)
@given(
    lo=st.floats(-1e4, 1e4, width=32) | st.sampled_from([0.0, -1e-9, -3e-7]),
    hi=st.floats(-1e4, 1e4, width=32) | st.sampled_from([0.0, 1e-9, 2e-6]),
    qrange=st.sampled_from([(0, 255), (0, 127), (-128, 127), (-64, 63), (-127, 127), (0, 15), (-8, 7)]),
    symmetric=st.booleans(),
)
def test_choose_qparams_from_range_matches_torch_kernel(lo, hi, qrange, symmetric):
    lo, hi = min(lo, hi), max(lo, hi)
    running_min, running_max = torch.tensor(float("inf")), torch.tensor(float("-inf"))
    scale, zero_point = torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
    torch.fused_moving_avg_obs_fake_quant(
        torch.tensor([lo, hi]), torch.tensor([1]), torch.tensor([1]), running_min, running_max,
        scale, zero_point, 0.01, qrange[0], qrange[1], 0, False, symmetric,
    )
    ours_scale, ours_zero_point = choose_qparams_from_range(torch.tensor(lo), torch.tensor(hi), *qrange, symmetric)
    assert torch.equal(ours_scale.reshape(1), scale)
    assert torch.equal(ours_zero_point.reshape(1), zero_point)


def test_tiny_ranges_use_fbgemms_scale_floor():
    scale, zero_point = choose_qparams_from_range(torch.tensor([0.0, -1e-7, -1e-8]), torch.tensor([1e-6, 0.0, 3e-8]), 0, 255, False)
    assert torch.all(scale == SMALL_SCALE_THRESHOLD)
    assert zero_point.tolist()[:2] == [0, 255]


@pytest.mark.parametrize("ch_axis, shape", [(1, (3, 5, 4)), (2, (2, 3, 4)), (1, (4, 6))])
def test_fused_op_supports_any_channel_axis(ch_axis, shape):
    """torch's kernel only takes axis 0; ours must equal it applied to the input with the axis moved first."""
    x = drifting_input(2, shape)
    channels = shape[ch_axis]
    buffers = [torch.tensor([]), torch.tensor([]), torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)]
    ref_buffers = [b.clone() for b in buffers]
    out = fq.fused_moving_avg_obs_fake_quant(x, True, True, *buffers, 0.01, -128, 127, ch_axis, True)
    ref = torch.fused_moving_avg_obs_fake_quant(
        x.movedim(ch_axis, 0).contiguous(), torch.tensor([1]), torch.tensor([1]), *ref_buffers, 0.01, -128, 127, 0, True, True
    ).movedim(0, ch_axis)
    assert torch.equal(out, ref)
    assert buffers[0].shape == (channels,)
    assert all(torch.equal(a, b) for a, b in zip(buffers, ref_buffers))


def test_fused_op_leaves_empty_input_and_buffers_alone():
    running = [torch.tensor(float("inf")), torch.tensor(float("-inf")), torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)]
    out = fq.fused_moving_avg_obs_fake_quant(torch.empty(0, 3), True, True, *running, 0.01, 0, 255, None, False)
    assert out.shape == (0, 3)
    assert torch.isinf(running[0]) and running[2].item() == 1.0


def test_fused_module_in_a_model_trains_like_torch_ao():
    """Linear weights through the fused per-channel fake-quant, activations through the fused per-tensor one."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:300] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:300])

    def run(act_factory, weight_factory):
        torch.manual_seed(0)
        linear = nn.Linear(64, 10)
        act, weight = act_factory(), weight_factory()
        optimizer = torch.optim.SGD(linear.parameters(), lr=0.5)
        losses = []
        for _ in range(6):
            optimizer.zero_grad()
            logits = nn.functional.linear(act(x), weight(linear.weight), linear.bias)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return torch.stack(losses), linear.weight.detach()

    ours = run(fq.default_fused_act_fake_quant, fq.default_fused_per_channel_wt_fake_quant)
    theirs = run(lambda: ao_twin(fq.default_fused_act_fake_quant), lambda: ao_twin(fq.default_fused_per_channel_wt_fake_quant))
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[1], theirs[1])
    assert ours[0][-1] < ours[0][0]


def test_fused_per_channel_state_dict_from_torch_ao_continues_identically():
    """torch.ao's trained per-channel buffers ([C] min/max/scale) load into a fresh module and training goes on alike."""
    factory = fq.default_fused_per_channel_wt_fake_quant
    theirs = ao_twin(factory)
    theirs(drifting_input(0, (5, 3)))
    ours = copy.deepcopy(factory())
    result = ours.load_state_dict(theirs.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    assert ours.scale.shape == (5,) and ours.activation_post_process.min_val.shape == (5,)
    for step in (1, 2):
        check_step(ours, theirs, drifting_input(step, (5, 3)), step)


def test_per_channel_module_rejects_a_changed_channel_count():
    module = fq.default_fused_per_channel_wt_fake_quant()
    module(torch.randn(4, 3))
    with pytest.raises(QuantizationError, match="has 5 channels along axis 0 but the running min/max hold 4"):
        module(torch.randn(5, 3))
