"""QAT modules (qcore.nn.qat, qcore.nn.intrinsic.qat) against torch.ao's, bit for bit.

Each module is built with ``from_float`` from the same float module (qcore's
fused float module and torch.ao's, holding copies of the same parts) and the
equivalent qconfig, then trained side by side: outputs, gradients, BN running
statistics and fake-quant state must stay identical, as must the BN-folded
float modules and the integer weights convert would produce.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Callable

import pytest
import torch
from torch import nn
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parametrize

import qcore
import qcore.fake_quant as qfq
import qcore.nn.intrinsic as qnni
import qcore.nn.intrinsic.qat as qnniqat
import qcore.nn.qat as qnnqat
from qcore.errors import ConfigError

ao_q = pytest.importorskip("torch.ao.quantization")
ao_nni = pytest.importorskip("torch.ao.nn.intrinsic")
ao_nniqat = pytest.importorskip("torch.ao.nn.intrinsic.qat")
ao_nnqat = pytest.importorskip("torch.ao.nn.qat")
ao_nnq = pytest.importorskip("torch.ao.nn.quantized")
ao_nniq = pytest.importorskip("torch.ao.nn.intrinsic.quantized")

torch.set_num_threads(1)


def quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


QCONFIGS = {
    "default": (qcore.default_qat_qconfig, ao_q.default_qat_qconfig),
    "fused_per_channel": (
        qcore.QConfig(activation=qfq.default_fused_act_fake_quant, weight=qfq.default_fused_per_channel_wt_fake_quant),
        ao_q.QConfig(activation=ao_q.default_fused_act_fake_quant, weight=ao_q.default_fused_per_channel_wt_fake_quant),
    ),
}
EMBEDDING_QCONFIGS = {"embedding": (qcore.default_embedding_qat_qconfig, ao_q.default_embedding_qat_qconfig)}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bn(cls: type, n: int, seed: int) -> nn.Module:
    """A batch norm with non-trivial affine parameters and running statistics."""
    g = seeded(seed)
    m = cls(n)
    with torch.no_grad():
        m.weight.copy_(torch.rand(n, generator=g) + 0.5)
        m.bias.copy_(torch.randn(n, generator=g) * 0.3)
        m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return m


def conv(cls: type, *args: Any, **kwargs: Any) -> nn.Module:
    torch.manual_seed(7)
    return cls(*args, **kwargs)


def linear(*args: Any, **kwargs: Any) -> nn.Module:
    torch.manual_seed(8)
    return nn.Linear(*args, **kwargs)


def dense_input(*shape: int) -> Callable[[int], torch.Tensor]:
    return lambda step: torch.randn(shape, generator=seeded(100 + step)) * (1.0 + 0.5 * step)


# name: (float module builder, qcore QAT class, torch.ao QAT class, input(step))
CASES: dict[str, tuple[Callable[[], nn.Module], type, type, Callable[[int], Any]]] = {
    "Linear": (lambda: linear(6, 5), qnnqat.Linear, ao_nnqat.Linear, dense_input(4, 6)),
    "Linear-nobias": (lambda: linear(6, 5, bias=False), qnnqat.Linear, ao_nnqat.Linear, dense_input(4, 6)),
    "Conv1d": (lambda: conv(nn.Conv1d, 3, 4, 3, padding=1), qnnqat.Conv1d, ao_nnqat.Conv1d, dense_input(2, 3, 9)),
    "Conv2d": (
        lambda: conv(nn.Conv2d, 4, 6, 3, stride=2, groups=2, padding_mode="reflect", padding=1),
        qnnqat.Conv2d,
        ao_nnqat.Conv2d,
        dense_input(2, 4, 7, 7),
    ),
    "Conv3d": (lambda: conv(nn.Conv3d, 2, 3, 2, bias=False), qnnqat.Conv3d, ao_nnqat.Conv3d, dense_input(2, 2, 4, 4, 4)),
    "LinearReLU": (
        lambda: qnni.LinearReLU(linear(6, 5), nn.ReLU()),
        qnniqat.LinearReLU,
        ao_nniqat.LinearReLU,
        dense_input(4, 6),
    ),
    "ConvReLU1d": (
        lambda: qnni.ConvReLU1d(conv(nn.Conv1d, 3, 4, 3), nn.ReLU()),
        qnniqat.ConvReLU1d,
        ao_nniqat.ConvReLU1d,
        dense_input(2, 3, 9),
    ),
    "ConvReLU2d": (
        lambda: qnni.ConvReLU2d(conv(nn.Conv2d, 3, 4, 3, padding=1), nn.ReLU()),
        qnniqat.ConvReLU2d,
        ao_nniqat.ConvReLU2d,
        dense_input(2, 3, 6, 6),
    ),
    "ConvReLU3d": (
        lambda: qnni.ConvReLU3d(conv(nn.Conv3d, 2, 3, 2), nn.ReLU()),
        qnniqat.ConvReLU3d,
        ao_nniqat.ConvReLU3d,
        dense_input(2, 2, 4, 4, 4),
    ),
    "ConvBn1d": (
        lambda: qnni.ConvBn1d(conv(nn.Conv1d, 3, 4, 3), bn(nn.BatchNorm1d, 4, 1)),
        qnniqat.ConvBn1d,
        ao_nniqat.ConvBn1d,
        dense_input(3, 3, 9),
    ),
    "ConvBn2d": (
        lambda: qnni.ConvBn2d(conv(nn.Conv2d, 3, 4, 3, padding=1), bn(nn.BatchNorm2d, 4, 2)),
        qnniqat.ConvBn2d,
        ao_nniqat.ConvBn2d,
        dense_input(2, 3, 6, 6),
    ),
    "ConvBn2d-nobias": (
        lambda: qnni.ConvBn2d(conv(nn.Conv2d, 3, 4, 3, bias=False), bn(nn.BatchNorm2d, 4, 3)),
        qnniqat.ConvBn2d,
        ao_nniqat.ConvBn2d,
        dense_input(2, 3, 6, 6),
    ),
    "ConvBn3d": (
        lambda: qnni.ConvBn3d(conv(nn.Conv3d, 2, 3, 2), bn(nn.BatchNorm3d, 3, 4)),
        qnniqat.ConvBn3d,
        ao_nniqat.ConvBn3d,
        dense_input(2, 2, 4, 4, 4),
    ),
    "ConvBnReLU1d": (
        lambda: qnni.ConvBnReLU1d(conv(nn.Conv1d, 3, 4, 3), bn(nn.BatchNorm1d, 4, 5), nn.ReLU()),
        qnniqat.ConvBnReLU1d,
        ao_nniqat.ConvBnReLU1d,
        dense_input(3, 3, 9),
    ),
    "ConvBnReLU2d": (
        lambda: qnni.ConvBnReLU2d(conv(nn.Conv2d, 3, 4, 3, stride=2), bn(nn.BatchNorm2d, 4, 6), nn.ReLU()),
        qnniqat.ConvBnReLU2d,
        ao_nniqat.ConvBnReLU2d,
        dense_input(2, 3, 7, 7),
    ),
    "ConvBnReLU3d": (
        lambda: qnni.ConvBnReLU3d(conv(nn.Conv3d, 2, 3, 2, bias=False), bn(nn.BatchNorm3d, 3, 7), nn.ReLU()),
        qnniqat.ConvBnReLU3d,
        ao_nniqat.ConvBnReLU3d,
        dense_input(2, 2, 4, 4, 4),
    ),
    "LinearBn1d": (
        lambda: qnni.LinearBn1d(linear(6, 5), bn(nn.BatchNorm1d, 5, 8)),
        qnniqat.LinearBn1d,
        ao_nniqat.LinearBn1d,
        dense_input(4, 6),
    ),
}
BN_CASES = [name for name in CASES if "Bn" in name]

EMBEDDING_CASES = {
    "Embedding": (
        lambda: conv(nn.Embedding, 10, 4, padding_idx=2),
        qnnqat.Embedding,
        ao_nnqat.Embedding,
        lambda step: (torch.randint(0, 10, (3, 5), generator=seeded(200 + step)),),
    ),
    "EmbeddingBag": (
        lambda: conv(nn.EmbeddingBag, 10, 4, mode="sum"),
        qnnqat.EmbeddingBag,
        ao_nnqat.EmbeddingBag,
        lambda step: (
            torch.randint(0, 10, (8,), generator=seeded(300 + step)),
            torch.tensor([0, 3, 3, 6]),
            torch.rand(8, generator=seeded(400 + step)),
        ),
    ),
}


def ao_float(mod: nn.Module) -> nn.Module:
    """torch.ao's twin of a qcore float module: the same parts (copied) in torch.ao's fused container."""
    if isinstance(mod, qnni.FusedModule):
        return quiet(getattr(ao_nni, type(mod).__name__), *[copy.deepcopy(part) for part in mod])
    return copy.deepcopy(mod)


def attach(mod: nn.Module, qconfig: Any) -> nn.Module:
    """Give ``mod`` and its parts the qconfig, as qconfig propagation does (torch.ao reads it from part 0)."""
    for m in mod.modules():
        m.qconfig = qconfig
    return mod


def build_pair(name: str, qconfig_name: str, cases: dict = CASES, qconfigs: dict = QCONFIGS) -> tuple[nn.Module, nn.Module]:
    make, q_cls, ao_cls, _ = cases[name]
    q_qconfig, ao_qconfig = qconfigs[qconfig_name]
    float_q = make()
    float_ao = ao_float(float_q)
    attach(float_q, q_qconfig)
    attach(float_ao, ao_qconfig)
    return q_cls.from_float(float_q), quiet(ao_cls.from_float, float_ao)


def as_inputs(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def assert_same_state(q: nn.Module, ao: nn.Module) -> None:
    q_state, ao_state = q.state_dict(), ao.state_dict()
    assert list(q_state) == list(ao_state)
    for key, value in q_state.items():
        assert torch.equal(value.double(), ao_state[key].double()), key


def step_pair(q: nn.Module, ao: nn.Module, inputs: tuple[Any, ...], lr: float = 0.05) -> None:
    """One forward/backward/SGD step on both; outputs and every gradient must be identical."""
    q_in = [x.clone().requires_grad_(x.is_floating_point() and x.dim() > 1) for x in inputs]
    ao_in = [x.clone().requires_grad_(x.is_floating_point() and x.dim() > 1) for x in inputs]
    out_q, out_ao = q(*q_in), quiet(ao, *ao_in)
    assert torch.equal(out_q, out_ao)
    weights = torch.randn(out_q.shape, generator=seeded(out_q.numel()))
    (out_q * weights).sum().backward()
    (out_ao * weights).sum().backward()
    for xq, xa in zip(q_in, ao_in):
        if xq.requires_grad:
            assert torch.equal(xq.grad, xa.grad)
    q_params, ao_params = dict(q.named_parameters()), dict(ao.named_parameters())
    assert list(q_params) == list(ao_params)
    with torch.no_grad():
        for key, p in q_params.items():
            assert torch.equal(p.grad, ao_params[key].grad), key
            p -= lr * p.grad
            ao_params[key] -= lr * ao_params[key].grad
            p.grad = None
            ao_params[key].grad = None


def train_pair(q: nn.Module, ao: nn.Module, make_input: Callable[[int], Any], steps: int = 3) -> None:
    for step in range(steps):
        step_pair(q, ao, as_inputs(make_input(step)))
        assert_same_state(q, ao)


@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
@pytest.mark.parametrize("name", list(CASES))
def test_training_matches_torch_ao(name: str, qconfig_name: str) -> None:
    q, ao = build_pair(name, qconfig_name)
    make_input = CASES[name][3]
    assert_same_state(q, ao)
    train_pair(q, ao, make_input)
    # Observers off (qparams frozen), then BN statistics frozen, then evaluation.
    q.apply(qcore.disable_observer)
    ao.apply(ao_q.disable_observer)
    step_pair(q, ao, as_inputs(make_input(3)))
    if hasattr(q, "freeze_bn_stats"):
        q.freeze_bn_stats()
        ao.freeze_bn_stats()
    step_pair(q, ao, as_inputs(make_input(4)))
    assert_same_state(q, ao)
    q.eval()
    ao.eval()
    with torch.no_grad():
        x = make_input(5)
        assert torch.equal(q(x), quiet(ao, x))


@pytest.mark.parametrize("name", list(EMBEDDING_CASES))
def test_embedding_training_matches_torch_ao(name: str) -> None:
    q, ao = build_pair(name, "embedding", EMBEDDING_CASES, EMBEDDING_QCONFIGS)
    train_pair(q, ao, EMBEDDING_CASES[name][3], steps=4)
    # The table is fake-quantized per row with float qparams; lookups stay float.
    assert q.weight_fake_quant.scale.shape == (10,)
    assert q.weight_fake_quant.zero_point.dtype == torch.float


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    stride=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    bias=st.booleans(),
    relu=st.booleans(),
    var_scale=st.sampled_from([1e-4, 1.0, 50.0]),
    per_channel=st.booleans(),
)
def test_conv_bn_property_matches_torch_ao(seed, stride, groups, bias, relu, var_scale, per_channel) -> None:
    """Random ConvBn(ReLU)2d geometry, BN statistics and inputs: same outputs, gradients and state."""
    torch.manual_seed(seed)
    parts = [nn.Conv2d(4, 6, 3, stride=stride, groups=groups, bias=bias), bn(nn.BatchNorm2d, 6, seed)]
    with torch.no_grad():
        parts[1].running_var.mul_(var_scale)
    if relu:
        parts.append(nn.ReLU())
    float_q = (qnni.ConvBnReLU2d if relu else qnni.ConvBn2d)(*parts)
    float_ao = ao_float(float_q)
    q_qconfig, ao_qconfig = QCONFIGS["fused_per_channel" if per_channel else "default"]
    attach(float_q, q_qconfig)
    attach(float_ao, ao_qconfig)
    q_cls = qnniqat.ConvBnReLU2d if relu else qnniqat.ConvBn2d
    ao_cls = ao_nniqat.ConvBnReLU2d if relu else ao_nniqat.ConvBn2d
    q, ao = q_cls.from_float(float_q), quiet(ao_cls.from_float, float_ao)
    for step in range(2):
        x = torch.randn(3, 4, 7, 7, generator=seeded(seed + step)) * (seed % 7 + 0.1)
        step_pair(q, ao, (x,))
        assert_same_state(q, ao)


def test_constructors_draw_the_same_initial_parameters() -> None:
    for q_build, ao_build in [
        (lambda: qnnqat.Linear(5, 3, qconfig=qcore.default_qat_qconfig), lambda: ao_nnqat.Linear(5, 3, qconfig=ao_q.default_qat_qconfig)),
        (
            lambda: qnniqat.ConvBnReLU2d(3, 4, 3, bias=True, qconfig=qcore.default_qat_qconfig),
            lambda: ao_nniqat.ConvBnReLU2d(3, 4, 3, bias=True, qconfig=ao_q.default_qat_qconfig),
        ),
        (
            lambda: qnnqat.Conv3d(2, 3, 2, qconfig=qcore.default_qat_qconfig),
            lambda: ao_nnqat.Conv3d(2, 3, 2, qconfig=ao_q.default_qat_qconfig),
        ),
    ]:
        torch.manual_seed(0)
        q = q_build()
        torch.manual_seed(0)
        ao = quiet(ao_build)
        assert_same_state(q, ao)
        assert getattr(q, "freeze_bn", False) is getattr(ao, "freeze_bn", False)


def test_from_float_shares_parameters_and_keeps_the_module_usable() -> None:
    float_mod = CASES["ConvBnReLU2d"][0]()
    float_mod.qconfig = qcore.default_qat_qconfig
    qat = qnniqat.ConvBnReLU2d.from_float(float_mod)
    assert qat.weight is float_mod[0].weight and qat.bn.weight is float_mod[1].weight
    assert qat.bn.running_mean is float_mod[1].running_mean
    assert isinstance(qat, qnni.FusedModule) and qat.qconfig is qcore.default_qat_qconfig
    assert qat.freeze_bn is False and qat.bn.training


# --- BN statistics freezing ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ConvBn2d", "ConvBnReLU3d", "LinearBn1d"])
def test_freeze_bn_stats_keeps_running_statistics(name: str) -> None:
    q, ao = build_pair(name, "default")
    make_input = CASES[name][3]
    model_q, model_ao = nn.Sequential(q), nn.Sequential(ao)
    model_q.apply(qnniqat.freeze_bn_stats)
    if name == "LinearBn1d":
        # torch.ao's module-level freeze_bn_stats skips LinearBn1d; qcore's covers it too.
        ao.freeze_bn_stats()
    else:
        model_ao.apply(ao_nniqat.freeze_bn_stats)
    assert q.freeze_bn and not q.bn.training
    mean, var = q.bn.running_mean.clone(), q.bn.running_var.clone()
    model_q.train()
    model_ao.train()
    assert not q.bn.training and q.training, "model.train() must not unfreeze BN"
    step_pair(q, ao, as_inputs(make_input(0)))
    assert torch.equal(q.bn.running_mean, mean) and torch.equal(q.bn.running_var, var)
    assert_same_state(q, ao)
    # Back to batch statistics.
    model_q.apply(qnniqat.update_bn_stats)
    if name == "LinearBn1d":
        ao.update_bn_stats()
    else:
        model_ao.apply(ao_nniqat.update_bn_stats)
    assert not q.freeze_bn and q.bn.training
    step_pair(q, ao, as_inputs(make_input(1)))
    assert not torch.equal(q.bn.running_mean, mean)
    assert_same_state(q, ao)


def test_freeze_bn_argument_and_eval_train_switching() -> None:
    q = qnniqat.ConvBn2d(3, 4, 3, freeze_bn=True, qconfig=qcore.default_qat_qconfig)
    assert q.freeze_bn and not q.bn.training
    lb = qnniqat.LinearBn1d(4, 3, freeze_bn=True, qconfig=qcore.default_qat_qconfig)
    assert lb.freeze_bn and not lb.bn.training
    live = qnniqat.ConvBnReLU1d(3, 4, 3, qconfig=qcore.default_qat_qconfig)
    live.eval()
    assert not live.bn.training
    live.train()
    assert live.bn.training
    # The module functions leave other modules alone.
    other = nn.Conv2d(1, 1, 1)
    qnniqat.freeze_bn_stats(other)
    qnniqat.update_bn_stats(other)
    assert other.training


# --- folding at convert ---------------------------------------------------------------------


def trained_pair(name: str, qconfig_name: str) -> tuple[nn.Module, nn.Module]:
    q, ao = build_pair(name, qconfig_name)
    train_pair(q, ao, CASES[name][3], steps=2)
    return q, ao


@pytest.mark.parametrize("name", list(CASES))
def test_to_float_matches_torch_ao(name: str) -> None:
    q, ao = trained_pair(name, "default")
    q.train(False)
    ao.train(False)
    f_q, f_ao = q.to_float(), quiet(ao.to_float)
    assert type(f_q).__name__ == type(f_ao).__name__
    assert type(f_q).__module__.startswith(("torch.nn.", "qcore.")) and f_q.training == q.training
    state_q, state_ao = f_q.state_dict(), f_ao.state_dict()
    assert list(state_q) == list(state_ao)
    for key in state_q:
        assert torch.equal(state_q[key], state_ao[key]), key
    x = CASES[name][3](9)
    with torch.no_grad():
        assert torch.equal(f_q(x), f_ao(x))


@pytest.mark.parametrize("name", BN_CASES)
def test_folded_float_module_computes_the_frozen_qat_module(name: str) -> None:
    """With BN frozen and fake quantization off, the QAT forward is the folded conv up to float rounding."""
    q, _ = trained_pair(name, "default")
    q.freeze_bn_stats()
    q.apply(qcore.disable_fake_quant)
    x = CASES[name][3](7)
    with torch.no_grad():
        torch.testing.assert_close(q(x), q.to_float()(x), rtol=1e-5, atol=1e-5)


# (qcore QAT case, torch.ao quantized class converting it)
CONVERT_CASES = {
    "Linear": ao_nnq.Linear,
    "Conv2d": ao_nnq.Conv2d,
    "ConvBn2d": ao_nnq.Conv2d,
    "ConvBn2d-nobias": ao_nnq.Conv2d,
    "ConvBnReLU2d": ao_nniq.ConvReLU2d,
    "ConvBn3d": ao_nnq.Conv3d,
    "LinearBn1d": ao_nnq.Linear,
    "LinearReLU": ao_nniq.LinearReLU,
}


@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
@pytest.mark.parametrize("name", list(CONVERT_CASES))
def test_convert_recipe_gives_torch_ao_integer_weights(name: str, qconfig_name: str) -> None:
    """fold_bn + one more observation + calculate_qparams (the documented recipe) is torch.ao's convert."""
    q, ao = trained_pair(name, qconfig_name)
    ao.activation_post_process = quiet(ao_q.default_fake_quant)
    ao.activation_post_process(torch.linspace(-1, 3, 50))
    converted = quiet(CONVERT_CASES[name].from_float, ao)

    weight, bias = q.fold_bn() if hasattr(q, "fold_bn") else (q.weight.detach(), q.bias)
    q.weight_fake_quant(weight)
    scale, zero_point = q.weight_fake_quant.calculate_qparams()
    if q.weight_fake_quant.is_per_channel:
        qweight = qcore.quantize_per_channel(weight, scale, zero_point, q.weight_fake_quant.ch_axis, qcore.int8)
        assert torch.equal(scale.double(), converted.weight().q_per_channel_scales())
    else:
        qweight = qcore.quantize_per_tensor(weight, float(scale), int(zero_point), qcore.int8)
        assert float(scale) == converted.weight().q_scale()
    assert torch.equal(qweight.int_repr(), converted.weight().int_repr())
    if bias is None:
        assert converted.bias() is None
    else:
        assert torch.equal(bias, converted.bias())


def test_fold_bn_does_not_touch_the_module() -> None:
    q, _ = trained_pair("ConvBnReLU2d", "default")
    before = {k: v.clone() for k, v in q.state_dict().items()}
    weight, bias = q.fold_bn()
    assert not weight.requires_grad and not bias.requires_grad
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())
    assert isinstance(q.to_float(), qnni.ConvReLU2d)
    assert type(qnniqat.ConvBn1d.to_float(trained_pair("ConvBn1d", "default")[0])) is nn.Conv1d


# --- a small conv net on real data ------------------------------------------------------------


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target)


def digits_net(fused: Any, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        fused.ConvBnReLU2d(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()),
        fused.ConvBn2d(nn.Conv2d(6, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8)),
        fused.ConvReLU2d(nn.Conv2d(8, 8, 1), nn.ReLU()),
        nn.Flatten(),
        fused.LinearBn1d(nn.Linear(72, 32), nn.BatchNorm1d(32)),
        fused.LinearReLU(nn.Linear(32, 16), nn.ReLU()),
        nn.Linear(16, 10),
    )


def to_qat(model: nn.Sequential, qconfig: Any, package: Any, qat: Any) -> nn.Sequential:
    layers = []
    for layer in model:
        if isinstance(layer, nn.Flatten):
            layers.append(layer)
            continue
        attach(layer, qconfig)
        cls = qat.Linear if type(layer) is nn.Linear else getattr(package, type(layer).__name__)
        layers.append(quiet(cls.from_float, layer))
    return nn.Sequential(*layers)


@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
def test_digits_conv_net_trains_identically(qconfig_name: str) -> None:
    x, y = digits()
    float_q = digits_net(qnni)
    float_ao = quiet(
        nn.Sequential, *[ao_float(layer) for layer in float_q]
    )
    q_qconfig, ao_qconfig = QCONFIGS[qconfig_name]
    model_q = to_qat(float_q, q_qconfig, qnniqat, qnnqat)
    model_ao = to_qat(float_ao, ao_qconfig, ao_nniqat, ao_nnqat)
    opt_q = torch.optim.SGD(model_q.parameters(), lr=0.1, momentum=0.9)
    opt_ao = torch.optim.SGD(model_ao.parameters(), lr=0.1, momentum=0.9)
    losses = []
    order = torch.randperm(len(x), generator=seeded(0))
    for step in range(24):
        if step == 12:
            model_q.apply(qcore.disable_observer)
            model_ao.apply(ao_q.disable_observer)
        if step == 16:
            model_q.apply(qnniqat.freeze_bn_stats)  # covers LinearBn1d as well
            model_ao.apply(ao_nniqat.freeze_bn_stats)
            model_ao[4].freeze_bn_stats()
        batch = order[(step * 64) % 1536:][:64]
        loss_q = nn.functional.cross_entropy(model_q(x[batch]), y[batch])
        loss_ao = nn.functional.cross_entropy(quiet(model_ao, x[batch]), y[batch])
        assert torch.equal(loss_q, loss_ao), step
        losses.append(loss_q.item())
        for model, opt, loss in ((model_q, opt_q, loss_q), (model_ao, opt_ao, loss_ao)):
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert_same_state(model_q, model_ao)
    assert sum(losses[-4:]) < sum(losses[:4]), losses
    model_q.eval()
    model_ao.eval()
    with torch.no_grad():
        assert torch.equal(model_q(x[1536:]), quiet(model_ao, x[1536:]))


# --- state_dict --------------------------------------------------------------------------------


@pytest.mark.parametrize("qconfig_name", list(QCONFIGS))
@pytest.mark.parametrize("name", ["Linear", "Conv2d", "ConvReLU2d", "ConvBnReLU2d", "LinearBn1d"])
def test_state_dict_round_trip(name: str, qconfig_name: str) -> None:
    q, ao = trained_pair(name, qconfig_name)
    fresh_q, _ = build_pair(name, qconfig_name)
    fresh_q.load_state_dict(q.state_dict())
    assert_same_state(fresh_q, q)
    # torch.ao's checkpoint of the same module loads too: the layouts are the same.
    from_ao, _ = build_pair(name, qconfig_name)
    from_ao.load_state_dict(ao.state_dict())
    assert_same_state(from_ao, ao)
    x = CASES[name][3](11)
    for m in (q, fresh_q, from_ao):
        m.eval()
        m.apply(qcore.disable_observer)
    with torch.no_grad():
        assert torch.equal(fresh_q(x), q(x)) and torch.equal(from_ao(x), q(x))


def test_embedding_state_dict_round_trip() -> None:
    q, _ = build_pair("EmbeddingBag", "embedding", EMBEDDING_CASES, EMBEDDING_QCONFIGS)
    inputs = EMBEDDING_CASES["EmbeddingBag"][3](0)
    q(*inputs)
    fresh, _ = build_pair("EmbeddingBag", "embedding", EMBEDDING_CASES, EMBEDDING_QCONFIGS)
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(fresh.weight_fake_quant.zero_point, q.weight_fake_quant.zero_point)
    fresh.apply(qcore.disable_observer)
    q.apply(qcore.disable_observer)
    assert torch.equal(fresh(*inputs), q(*inputs))
    back = q.to_float()
    assert type(back) is nn.EmbeddingBag and torch.equal(back.weight, q.weight)


# --- parametrizations, errors ------------------------------------------------------------------


class Doubled(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_linear_from_float_transfers_parametrizations() -> None:
    float_q = linear(4, 3)
    parametrize.register_parametrization(float_q, "weight", Doubled())
    float_ao = copy.deepcopy(float_q)
    float_q.qconfig, float_ao.qconfig = QCONFIGS["default"]
    q, ao = qnnqat.Linear.from_float(float_q), quiet(ao_nnqat.Linear.from_float, float_ao)
    assert parametrize.is_parametrized(q, "weight")
    x = dense_input(2, 4)(0)
    assert torch.equal(q(x), quiet(ao, x))


def test_errors_name_the_module_and_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"qcore.nn.qat.Linear needs a qconfig"):
        qnnqat.Linear(3, 2)
    with pytest.raises(ConfigError, match=r"qcore.nn.intrinsic.qat.ConvBn2d needs a qconfig"):
        qnniqat.ConvBn2d(3, 2, 1)
    with pytest.raises(ConfigError, match=r"qcore.nn.qat.Conv2d.from_float: the torch.nn.Conv2d module has no qconfig"):
        qnnqat.Conv2d.from_float(nn.Conv2d(1, 1, 1))
    none_qconfig = nn.Linear(2, 2)
    none_qconfig.qconfig = None
    with pytest.raises(ConfigError, match=r"has qconfig=None.*prepare_qat"):
        qnnqat.Linear.from_float(none_qconfig)
    with pytest.raises(ConfigError, match=r"expects a torch.nn.Linear \(exactly that type\), got torch.nn.Conv2d"):
        qnnqat.Linear.from_float(nn.Conv2d(1, 1, 1))
    plain = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    plain.qconfig = qcore.default_qat_qconfig
    with pytest.raises(ConfigError, match=r"ConvBn2d.from_float expects a qcore.nn.intrinsic.ConvBn2d"):
        qnniqat.ConvBn2d.from_float(plain)
    embedding = nn.Embedding(4, 2)
    embedding.qconfig = qcore.default_qat_qconfig
    with pytest.raises(ConfigError, match=r"per_channel_affine_float_qparams.*default_embedding_qat_qconfig"):
        qnnqat.Embedding.from_float(embedding)
    with pytest.raises(ConfigError, match=r"EmbeddingBag needs a qconfig.*default_embedding_qat_qconfig"):
        qnnqat.EmbeddingBag(4, 2)
