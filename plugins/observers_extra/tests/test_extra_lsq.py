"""LSQ and LSQ+ fake quantization: gradients against the papers and finite differences, init, QAT."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qcore
from qcore.affine import fake_quantize_affine
from qcore.errors import ConfigError, ObserverError
from qcore.qconfig import is_qat_qconfig
from qcore_observers_extra.lsq import LSQFakeQuantize, LSQPlusFakeQuantize, lsq_fake_quantize
from qcore_observers_extra.mse import MSEObserver, PerChannelMSEObserver

torch.set_num_threads(1)


# --- the papers' reference code ---------------------------------------------------------------------


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Esser et al. (2020), fig. 2: value ``x``, gradient times ``g``."""
    return (x - x * g).detach() + x * g


def round_pass(x: torch.Tensor) -> torch.Tensor:
    """Esser et al. (2020), fig. 2: value ``round(x)``, gradient straight through."""
    return (x.round() - x).detach() + x


def lsq_paper(v: torch.Tensor, s: torch.Tensor, qn: int, qp: int, g: float) -> torch.Tensor:
    """LSQ's quantizer as in the paper's pseudo-code (``qn`` is the lowest level, e.g. -128)."""
    s = grad_scale(s, g)
    return round_pass(F.hardtanh(v / s, qn, qp)) * s


def lsqplus_paper(x: torch.Tensor, s: torch.Tensor, beta: torch.Tensor, n: int, p: int, g: float) -> torch.Tensor:
    """LSQ+ (Bhalgat et al., 2020, eq. 1-2): ``round(clamp((x - beta) / s, n, p)) * s + beta``, g on s and beta."""
    s = grad_scale(s, g)
    beta = grad_scale(beta, g)
    return round_pass(F.hardtanh((x - beta) / s, n, p)) * s + beta


def away_from_kinks(x: torch.Tensor, s: float, z: float, qmin: int, qmax: int, margin: float = 0.05) -> torch.Tensor:
    """``x`` nudged so that ``x / s + z`` is not within ``margin`` of a rounding tie or a clamping edge."""
    v = x / s + z
    frac = v - v.floor()
    v = torch.where((frac - 0.5).abs() < margin, v + 2 * margin, v)
    for edge in (qmin, qmax):
        v = torch.where((v - edge).abs() < margin, v + 3 * margin, v)
    return (v - z) * s


# --- gradients ----------------------------------------------------------------------------------


def test_lsq_gradients_equal_the_paper_formulas():
    g = torch.Generator().manual_seed(0)
    s = 0.1
    x = away_from_kinks(torch.randn(500, generator=g, dtype=torch.float64) * 8, s, 0, -128, 127)
    x.requires_grad_(True)
    scale = torch.tensor([s], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    upstream = torch.randn(500, generator=g, dtype=torch.float64)
    factor = 1 / math.sqrt(500 * 127)
    lsq_fake_quantize(x, scale, zero, -128, 127, None, factor).backward(upstream)
    v = x.detach() / s
    inside = (v > -128) & (v < 127)
    # LSQ eq. 3: -v + round(v) inside, -Qn below, Qp above; eq. 4 scales it by g.
    clamped = torch.where(v <= -128, torch.full_like(v, -128.0), torch.full_like(v, 127.0))
    d_scale = torch.where(inside, -v + v.round(), clamped)
    assert torch.allclose(scale.grad, (upstream * d_scale).sum().reshape(1) * factor, rtol=1e-12)
    assert torch.equal(x.grad, upstream * inside)
    assert bool((~inside).any()) and bool(inside.any())


@pytest.mark.parametrize("axis", [None, 0, 1])
@pytest.mark.parametrize("bits, signed", [(8, True), (4, False), (3, True)])
def test_lsq_gradients_equal_the_paper_reference_code(axis, bits, signed):
    g = torch.Generator().manual_seed(bits + (axis or 0))
    qn, qp = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    x = torch.randn(6, 40, generator=g, dtype=torch.float64) * 2
    channels = 1 if axis is None else x.shape[axis]
    s = (torch.rand(channels, generator=g, dtype=torch.float64) * 0.3 + 0.05)
    shape = [1, 1]
    if axis is not None:
        shape[axis] = channels
    factor = 1 / math.sqrt(x.numel() / channels * qp)
    upstream = torch.randn(6, 40, generator=g, dtype=torch.float64)

    x1, s1 = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ours = lsq_fake_quantize(x1, s1, torch.zeros(channels, dtype=torch.float64), qn, qp, axis, factor)
    ours.backward(upstream)
    x2, s2 = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
    ref = lsq_paper(x2, s2.reshape(shape), qn, qp, factor)
    ref.backward(upstream)
    assert torch.allclose(ours, ref, atol=1e-6)  # ours multiplies by a float32 scale, as torch's kernels do
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-12, atol=0)  # the reference's (x / s) * s is not exactly 1
    assert torch.allclose(s1.grad, s2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("axis", [None, 1])
def test_lsqplus_gradients_are_the_paper_gradients_in_zero_point_coordinates(axis):
    """LSQ+ learns beta; we learn z = -beta / s. By the chain rule dL/dz = -s dL/dbeta, dL/ds|z = dL/ds|beta - z dL/dbeta."""
    g = torch.Generator().manual_seed(7)
    qmin, qmax = 0, 15
    x = torch.randn(5, 30, generator=g, dtype=torch.float64) * 1.5 - 0.4
    channels = 1 if axis is None else x.shape[axis]
    shape = [1, 1] if axis is None else [1, channels]
    s = torch.rand(channels, generator=g, dtype=torch.float64) * 0.2 + 0.1
    z = torch.randint(2, 9, (channels,), generator=g).double()  # integers: the forward's rounding is exact
    factor = 1 / math.sqrt(x.numel() / channels * qmax)
    upstream = torch.randn(5, 30, generator=g, dtype=torch.float64)

    x1, s1, z1 = (t.clone().requires_grad_(True) for t in (x, s, z))
    lsq_fake_quantize(x1, s1, z1, qmin, qmax, axis, factor).backward(upstream)
    x2, s2 = x.clone().requires_grad_(True), s.clone().requires_grad_(True)
    beta = (-z * s).requires_grad_(True)
    lsqplus_paper(x2, s2.reshape(shape), beta.reshape(shape), qmin, qmax, factor).backward(upstream)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-12, atol=0)
    assert torch.allclose(z1.grad, -s * beta.grad, rtol=1e-10, atol=1e-12)
    assert torch.allclose(s1.grad, s2.grad - z * beta.grad, rtol=1e-10, atol=1e-12)
    # The paper's elementwise forms: d/dbeta is 0 inside and 1 outside.
    v = (x - (-z * s).reshape(shape)) / s.reshape(shape)
    outside = (v <= qmin) | (v >= qmax)
    assert bool(outside.any())
    d_beta = (upstream * outside).sum(dim=None if axis is None else 0) * factor
    assert torch.allclose(beta.grad, d_beta.reshape(-1))


@pytest.mark.parametrize("axis", [None, 0])
@pytest.mark.parametrize("learn_zero_point", [False, True])
def test_gradients_match_finite_differences(axis, learn_zero_point):
    """gradcheck in float64 against the straight-through surrogate, rounding residuals frozen at the point."""
    g = torch.Generator().manual_seed(11)
    qmin, qmax = -8, 7
    s0 = torch.tensor([0.3, 0.21, 0.4], dtype=torch.float64) if axis == 0 else torch.tensor([0.25], dtype=torch.float64)
    z0 = torch.tensor([1.2, -0.8, 0.3], dtype=torch.float64) if axis == 0 else torch.tensor([1.2], dtype=torch.float64)
    shape = [-1, 1] if axis == 0 else [1, 1]
    x0 = torch.randn(3, 12, generator=g, dtype=torch.float64) * 1.5
    x0 = torch.stack([
        away_from_kinks(row, float(s0[i % s0.numel()]), float(z0[i % z0.numel()].round()), qmin, qmax)
        for i, row in enumerate(x0)
    ])
    zr0 = z0.round()
    u0 = torch.clamp(x0 / s0.reshape(shape) + zr0.reshape(shape), qmin, qmax)
    residual = (u0.round() - u0).detach()  # frozen: the surrogate is smooth where the function is piecewise

    def surrogate(x, s, z):
        zr = (z + (zr0 - z0)).reshape(shape)
        u = torch.clamp(x / s.reshape(shape) + zr, qmin, qmax)
        return (u + residual - zr) * s.reshape(shape)

    def fn(x, s, z):
        ours = lsq_fake_quantize(x, s, z, qmin, qmax, axis, 1.0)
        return ours + (surrogate(x, s, z) - ours).detach()  # value of the surrogate, gradient of ours

    inputs = (
        x0.clone().requires_grad_(True),
        s0.clone().requires_grad_(True),
        z0.clone().requires_grad_(learn_zero_point),
    )
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", [LSQFakeQuantize, LSQPlusFakeQuantize])
@pytest.mark.parametrize("per_channel", [False, True])
def test_module_scales_gradients_by_one_over_sqrt_n_qmax(cls, per_channel):
    x = torch.randn(4, 50, generator=torch.Generator().manual_seed(3))
    if per_channel:
        fq = cls(observer=PerChannelMSEObserver, dtype="int8", qscheme="per_channel_affine", ch_axis=0, bins=64)
    else:
        fq = cls(observer=MSEObserver, dtype="int8", qscheme="per_tensor_affine", bins=64)
    fq(x)  # initialises
    fq(x).sum().backward()
    n = x.numel() / fq.scale.numel()
    expected_g = 1 / math.sqrt(n * 127)
    assert fq.grad_factor(x) == pytest.approx(expected_g)
    s = fq.scale.detach().clone().requires_grad_(True)
    z = fq.zero_point.detach().clone().requires_grad_(True)
    lsq_fake_quantize(x, s, z, fq.quant_min, fq.quant_max, 0 if per_channel else None, 1.0).sum().backward()
    assert torch.allclose(fq.scale.grad, s.grad * expected_g)
    if cls.learns_zero_point:
        assert torch.allclose(fq.zero_point.grad, z.grad * expected_g)
    else:
        assert fq.zero_point.grad is None and not fq.zero_point.requires_grad
    fq.use_grad_scaling = False
    assert fq.grad_factor(x) == 1.0


# --- the module ---------------------------------------------------------------------------------


def test_first_batch_initialises_from_the_observer_and_then_the_observer_rests():
    g = torch.Generator().manual_seed(4)
    first, second = torch.randn(64, generator=g) * 3, torch.randn(64, generator=g) * 10
    fq = LSQPlusFakeQuantize(bins=256)
    observer = MSEObserver(bins=256)
    observer(first)
    out = fq(first)
    scale, zero_point = observer.calculate_qparams()
    assert torch.equal(fq.scale.detach(), scale) and torch.equal(fq.zero_point.detach(), zero_point.float())
    assert torch.equal(out, fake_quantize_affine(first, scale, zero_point, 0, 255))  # bit-exact with the core
    fq(second)
    assert float(fq.activation_post_process.max_val) == float(first.max())  # not observed again
    got = fq.calculate_qparams()
    assert torch.equal(got[0], scale) and torch.equal(got[1], zero_point) and got[1].dtype == torch.int32


def test_learned_qparams_are_what_calculate_qparams_returns():
    x = torch.randn(256, generator=torch.Generator().manual_seed(5)) * 2 + 1
    fq = LSQPlusFakeQuantize(quant_min=0, quant_max=15, bins=128)
    optimizer = torch.optim.SGD(fq.parameters(), lr=2.0, momentum=0.9)  # created before the first batch, as in QAT
    fq(x)
    with torch.no_grad():  # start from a poor range: twice the step, zero point off by three
        fq.scale.mul_(2)
        fq.zero_point.sub_(3)
    initial_scale = fq.scale.detach().clone()
    initial_loss = (fq(x) - x).pow(2).mean().item()
    for _ in range(40):
        optimizer.zero_grad()
        (fq(x) - x).pow(2).mean().backward()
        optimizer.step()
    assert (fq(x) - x).pow(2).mean().item() < 0.6 * initial_loss
    assert not torch.equal(fq.scale.detach(), initial_scale)
    scale, zero_point = fq.calculate_qparams()
    assert torch.equal(scale, fq.scale.detach())
    assert torch.equal(zero_point, fq.zero_point.detach().round().clamp(0, 15).int())
    assert torch.equal(fq(x), fake_quantize_affine(x, scale, zero_point, 0, 15))


def test_symmetric_schemes_keep_the_zero_point():
    fq = LSQPlusFakeQuantize(dtype="int8", qscheme="per_tensor_symmetric", bins=64)
    fq(torch.randn(32))
    assert not fq.zero_point.requires_grad
    assert fq.calculate_qparams()[1].dtype == torch.int64 and int(fq.calculate_qparams()[1]) == 0


def test_scale_stays_positive():
    fq = LSQFakeQuantize(bins=64)
    fq(torch.randn(16))
    with torch.no_grad():
        fq.scale.fill_(-1.0)
    fq(torch.randn(16))
    assert fq.scale.item() == pytest.approx(torch.finfo(torch.float32).eps)


def test_uninitialised_module_raises_rather_than_guessing():
    fq = LSQFakeQuantize(bins=64)
    with pytest.raises(ObserverError, match="no learned scale yet"):
        fq.calculate_qparams()
    fq.disable_observer()
    with pytest.raises(ObserverError, match="enable_observer"):
        fq(torch.randn(4))
    fq.disable_fake_quant()
    x = torch.randn(4)
    assert fq(x) is x


def test_state_dict_round_trip_per_channel():
    weight = torch.randn(6, 20, generator=torch.Generator().manual_seed(6))
    kwargs = dict(observer=PerChannelMSEObserver, dtype="int8", qscheme="per_channel_affine", bins=64)
    fq = LSQPlusFakeQuantize(**kwargs)
    fq(weight).sum().backward()
    with torch.no_grad():
        fq.scale.mul_(1.1)
        fq.zero_point.add_(0.4)
    fresh = LSQPlusFakeQuantize(**kwargs)
    fresh.load_state_dict(fq.state_dict())
    assert fresh.scale.shape == (6,) and bool(fresh.initialized[0])
    for got, want in zip(fresh.calculate_qparams(), fq.calculate_qparams()):
        assert torch.equal(got, want)
    assert torch.equal(fresh(weight), fq(weight))
    assert isinstance(fresh.scale, nn.Parameter) and fresh.zero_point.requires_grad


def test_bad_configurations_are_config_errors():
    with pytest.raises(ConfigError, match="float_qparams"):
        LSQFakeQuantize(observer=qcore.PerChannelMinMaxObserver, qscheme="per_channel_affine_float_qparams")
    with pytest.raises(ConfigError, match="dynamic"):
        LSQFakeQuantize(observer=qcore.MinMaxObserver, is_dynamic=True)
    with pytest.raises(ConfigError, match="quant_min"):
        LSQFakeQuantize(quant_min=5, quant_max=1)
    with pytest.raises(ConfigError, match="per_channel"):
        LSQFakeQuantize(qscheme="per_channel_affine")  # the default observer is per tensor


def test_usable_in_a_qconfig_by_class_and_by_name():
    qconfig = qcore.QConfig(
        activation=LSQPlusFakeQuantize.with_args(quant_min=0, quant_max=15),
        weight=LSQFakeQuantize.with_args(observer=PerChannelMSEObserver, dtype="int8", qscheme="per_channel_symmetric"),
    )
    assert is_qat_qconfig(qconfig)
    assert isinstance(qconfig.weight(), LSQFakeQuantize) and qconfig.weight().is_per_channel
    by_name = qcore.QConfig(activation="lsqplus_fake_quantize", weight="lsq_fake_quantize")
    assert type(by_name.activation()) is LSQPlusFakeQuantize and type(by_name.weight()) is LSQFakeQuantize
    assert by_name.to_dict()["activation"]["class"] == "lsqplus_fake_quantize"
    with pytest.raises(ConfigError, match="per-channel"):
        qcore.QConfig(
            activation=LSQFakeQuantize.with_args(observer=PerChannelMSEObserver, qscheme="per_channel_affine"),
            weight="lsq_fake_quantize",
        )


# --- QAT ----------------------------------------------------------------------------------------


class QATLinear(nn.Module):
    """A Linear whose weight and output pass through the qconfig's fake quantizers (what a QAT swap does)."""

    def __init__(self, linear: nn.Linear, qconfig: qcore.QConfig) -> None:
        super().__init__()
        self.linear = linear
        self.weight_fake_quant = qconfig.weight()
        self.activation_post_process = qconfig.activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight_fake_quant(self.linear.weight), self.linear.bias)
        return self.activation_post_process(y)


def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16
    y = torch.tensor(data.target)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def test_qat_with_lsq_recovers_3_bit_accuracy_on_digits():
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits()
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
    float_accuracy = float((model(x_test).argmax(1) == y_test).float().mean())

    qconfig = qcore.QConfig(
        activation=LSQPlusFakeQuantize.with_args(quant_min=0, quant_max=7, bins=256),  # 3-bit activations
        weight=LSQFakeQuantize.with_args(
            observer=PerChannelMSEObserver, dtype="int8", qscheme="per_channel_symmetric", quant_min=-4, quant_max=3, bins=64
        ),  # 3-bit weights
    )
    qat = nn.Sequential(QATLinear(model[0], qconfig), nn.ReLU(), QATLinear(model[2], qconfig))
    with torch.no_grad():
        qat(x_train)  # the first batch initialises every scale from its observer
        initial_accuracy = float((qat(x_test).argmax(1) == y_test).float().mean())
    scales = [qat[0].weight_fake_quant.scale.detach().clone(), qat[0].activation_post_process.scale.detach().clone()]
    optimizer = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(qat(x_train), y_train).backward()
        optimizer.step()
    with torch.no_grad():
        qat_accuracy = float((qat(x_test).argmax(1) == y_test).float().mean())
    assert not torch.equal(qat[0].weight_fake_quant.scale.detach(), scales[0])
    assert not torch.equal(qat[0].activation_post_process.scale.detach(), scales[1])
    print(f"digits, 3-bit QAT: float {float_accuracy:.3f}, LSQ init {initial_accuracy:.3f}, after QAT {qat_accuracy:.3f}")
    assert qat_accuracy > initial_accuracy + 0.05
    assert qat_accuracy > float_accuracy - 0.06
