"""Quantized activations, Dropout, norms and batch norms: differential against torch.ao, repr, state_dict, TorchScript, errors."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

import qcore
import qcore.nn.intrinsic as qnni
import qcore.nn.intrinsic.quantized as qnniq
import qcore.nn.quantized as qnnq
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.activation import fixed_qparams
from qcore.observers import FixedQParamsObserver, MinMaxObserver
from qcore.qtensor import QTensor

torch.set_num_threads(1)

HAVE_AO = hasattr(torch, "quint8") and "fbgemm" in getattr(torch.backends.quantized, "supported_engines", ())
needs_ao = pytest.mark.skipif(not HAVE_AO, reason="needs torch.ao's quantized kernels (the oracle)")
QUINT8, QINT8 = (getattr(torch, n, n) for n in ("quint8", "qint8"))
TORCH_DTYPE = {"uint8": QUINT8, "int8": QINT8}


def oracle(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def ao_nn():
    """torch.ao.nn.quantized and torch.ao.nn.intrinsic.quantized (imported quietly)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.nn.intrinsic.quantized as aonniq
        import torch.ao.nn.quantized as aonnq
    return aonnq, aonniq


def digits_batch(n: int = 48) -> torch.Tensor:
    """Real data: sklearn's 8x8 digits, standardised to about [-2, 2], as (n, 4, 4, 4)."""
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data[:n], dtype=torch.float32)
    return (data / 16.0 * 4.0 - 2.0).reshape(n, 4, 4, 4)


def random_batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, 4, 4, generator=g) * 2.5


INPUTS = {"random": random_batch, "digits": digits_batch}


def quantize_input(x: torch.Tensor, dtype: str) -> tuple[QTensor, float, int]:
    """``x`` quantized per tensor with MinMaxObserver qparams, as qcore's QTensor."""
    obs = MinMaxObserver(dtype=dtype)
    obs(x)
    scale, zp = obs.calculate_qparams()
    scale, zp = float(scale), int(zp)
    return qcore.quantize_per_tensor(x, scale, zp, dtype), scale, zp


def to_torch_q(q: QTensor):
    """The same integers and qparams as a torch quantized tensor (re-quantizing grid values is exact)."""
    return oracle(torch.quantize_per_tensor, q.dequantize(), q.q_scale(), q.q_zero_point(), TORCH_DTYPE[q.qdtype.name])


def observe(mod: nn.Module, qx: QTensor, observer: nn.Module) -> nn.Module:
    """Attach ``observer`` as the output observer and calibrate it on ``mod``'s float output."""
    mod.eval()
    mod.activation_post_process = observer
    with torch.no_grad():
        y = mod(qx.dequantize())
    observer(y)
    return mod


def assert_within_one_step(out: QTensor, ref) -> None:
    """Same qparams (to float32) and integers within one step of torch.ao's."""
    assert isinstance(out, QTensor)
    assert out.q_zero_point() == ref.q_zero_point()
    assert abs(out.q_scale() - ref.q_scale()) <= 1e-7 * ref.q_scale()
    diff = (out.int_repr().to(torch.int32) - ref.int_repr().to(torch.int32)).abs()
    assert int(diff.max()) <= 1, f"max integer difference {int(diff.max())}"
    # The reference numerics should agree almost everywhere, not just within one step.
    assert float((diff == 0).float().mean()) >= 0.97


# --- activations ------------------------------------------------------------------------------------------


def _activation_cases():
    """(float module, qcore class, torch.ao module from (scale, zero_point)) for the learned-qparams activations."""
    return [
        ("Hardswish", lambda: nn.Hardswish(), qnnq.Hardswish, lambda a, s, z: a.Hardswish(s, z)),
        ("ELU", lambda: nn.ELU(alpha=0.7), qnnq.ELU, lambda a, s, z: a.ELU(s, z, 0.7)),
        ("LeakyReLU", lambda: nn.LeakyReLU(0.05), qnnq.LeakyReLU, lambda a, s, z: a.LeakyReLU(s, z, 0.05)),
    ]


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("data", sorted(INPUTS))
@pytest.mark.parametrize("case", _activation_cases(), ids=lambda c: c[0])
def test_activation_matches_torch_ao(case, data, dtype):
    name, make_float, qcls, make_ao = case
    aonnq, _ = ao_nn()
    qx, _, _ = quantize_input(INPUTS[data](), dtype)
    mod = observe(make_float(), qx, MinMaxObserver(dtype=dtype))
    qmod = qcls.from_float(mod)
    assert qmod.dtype.name == dtype
    ref = oracle(make_ao(aonnq, float(qmod.scale), int(qmod.zero_point)), to_torch_q(qx))
    assert_within_one_step(qmod(qx), ref)


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_relu6_with_output_qparams_and_keeping_the_inputs(dtype):
    aonnq, _ = ao_nn()
    qx, scale, zp = quantize_input(digits_batch() * 2.0, dtype)
    ref = oracle(aonnq.ReLU6(), to_torch_q(qx))
    # torch.ao's ReLU6 keeps the input qparams: so does qcore's without output qparams ...
    kept = qnnq.ReLU6()(qx)
    assert torch.equal(kept.int_repr(), ref.int_repr()) and kept.q_zero_point() == zp
    # ... and, given those same qparams as output qparams, the reference numerics agree too.
    same = qnnq.ReLU6(scale=scale, zero_point=zp, output_dtype=dtype)(qx)
    assert_within_one_step(same, ref)
    # from_float takes the observer's qparams (a requantization onto the observed [0, 6] grid).
    mod = observe(nn.ReLU6(), qx, MinMaxObserver(dtype=dtype))
    qmod = qnnq.ReLU6.from_float(mod)
    assert not qmod.keep_input_qparams
    out = qmod(qx)
    expected = qcore.quantize_per_tensor(torch.relu(qx.dequantize()).clamp(max=6), float(qmod.scale), int(qmod.zero_point), dtype)
    assert torch.equal(out.int_repr(), expected.int_repr())
    # Without an observer it behaves as torch.ao's from_float.
    assert qnnq.ReLU6.from_float(nn.ReLU6()).keep_input_qparams


FIXED = [
    ("Sigmoid", nn.Sigmoid, qnnq.Sigmoid, torch.sigmoid, "0to1"),
    ("Hardsigmoid", nn.Hardsigmoid, qnnq.Hardsigmoid, torch.nn.functional.hardsigmoid, "0to1"),
    ("Tanh", nn.Tanh, qnnq.Tanh, torch.tanh, "neg1to1"),
]


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("case", FIXED, ids=lambda c: c[0])
def test_fixed_qparams_activation_matches_torch(case, dtype):
    """torch's sigmoid/hardsigmoid/tanh on quantized tensors pick fixed qparams; qcore's modules use the same."""
    name, float_cls, qcls, torch_fn, output_range = case
    qx, _, _ = quantize_input(random_batch(1), dtype)
    scale, zp = fixed_qparams(output_range, dtype)
    mod = observe(float_cls(), qx, FixedQParamsObserver(scale, zp, dtype=dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qmod = qcls.from_float(mod)
    ref = oracle(torch_fn, to_torch_q(qx))
    assert (ref.q_scale(), ref.q_zero_point()) == (scale, zp)
    assert_within_one_step(qmod(qx), ref)
    assert (qcls(output_dtype=dtype).output_scale, qcls(output_dtype=dtype).output_zero_point) == (scale, zp)


@needs_ao
@pytest.mark.parametrize("data", sorted(INPUTS))
def test_softmax_matches_torch_ao(data):
    aonnq, _ = ao_nn()
    qx, _, _ = quantize_input(INPUTS[data](), "uint8")
    mod = observe(nn.Softmax(dim=1), qx, qcore.observers.default_fixed_qparams_range_0to1_observer())
    qmod = qnnq.Softmax.from_float(mod)
    assert (float(qmod.scale), int(qmod.zero_point), qmod.dim) == (1 / 256, 0, 1)
    ref = oracle(aonnq.Softmax(1, 1 / 256, 0), to_torch_q(qx))
    assert_within_one_step(qmod(qx), ref)


def test_fixed_qparams_module_with_a_learned_observer_warns_and_uses_the_fixed_ones():
    qx, _, _ = quantize_input(random_batch(), "uint8")
    mod = observe(nn.Sigmoid(), qx, MinMaxObserver())
    with pytest.warns(UserWarning, match=r"Sigmoid has fixed output qparams.*default_fixed_qparams_range_0to1_qconfig"):
        qmod = qnnq.Sigmoid.from_float(mod)
    assert (float(qmod.scale), int(qmod.zero_point)) == (1 / 256, 0)
    mod = observe(nn.Tanh(), qx, MinMaxObserver(dtype="int8"))
    with pytest.warns(UserWarning, match="range_neg1to1"):
        qmod = qnnq.Tanh.from_float(mod)
    assert (float(qmod.scale), int(qmod.zero_point), qmod.dtype.name) == (2 / 256, 0, "int8")


def test_fixed_qparams_values():
    assert fixed_qparams("0to1") == (1 / 256, 0)
    assert fixed_qparams("0to1", "int8") == (1 / 256, -128)
    assert fixed_qparams("neg1to1") == (2 / 256, 128)
    assert fixed_qparams("neg1to1", "int8") == (2 / 256, 0)
    with pytest.raises(ConfigError, match="0to1"):
        fixed_qparams("0to2")


# --- norms -------------------------------------------------------------------------------------------------


def _affine(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 0.5 + 1.0, torch.randn(n, generator=g) * 0.3


def _norm_cases():
    w4, b4 = _affine(4, 1)
    wl, bl = _affine(16, 2)
    P = nn.Parameter

    def layer_norm():
        m = nn.LayerNorm([4, 4])
        with torch.no_grad():
            m.weight.copy_(wl.reshape(4, 4)), m.bias.copy_(bl.reshape(4, 4))
        return m

    def group_norm():
        m = nn.GroupNorm(2, 4)
        with torch.no_grad():
            m.weight.copy_(w4), m.bias.copy_(b4)
        return m

    def instance_norm(cls, affine):
        def make():
            m = cls(4, affine=affine)
            if affine:
                with torch.no_grad():
                    m.weight.copy_(w4), m.bias.copy_(b4)
            return m

        return make

    def wb(m):
        return (P(m.weight.detach()) if m.weight is not None else None), (P(m.bias.detach()) if m.bias is not None else None)

    return [
        ("LayerNorm", layer_norm, qnnq.LayerNorm, (), lambda a, m, s, z: a.LayerNorm([4, 4], *wb(m), s, z), 4),
        ("GroupNorm", group_norm, qnnq.GroupNorm, (), lambda a, m, s, z: a.GroupNorm(2, 4, *wb(m), s, z), 4),
        ("InstanceNorm1d", instance_norm(nn.InstanceNorm1d, True), qnnq.InstanceNorm1d, (0, 16),
         lambda a, m, s, z: a.InstanceNorm1d(4, *wb(m), s, z, affine=True), 3),
        ("InstanceNorm2d", instance_norm(nn.InstanceNorm2d, False), qnnq.InstanceNorm2d, (),
         lambda a, m, s, z: a.InstanceNorm2d(4, *wb(m), s, z), 4),
        ("InstanceNorm3d", instance_norm(nn.InstanceNorm3d, True), qnnq.InstanceNorm3d, (0, 4, 2, 2),
         lambda a, m, s, z: a.InstanceNorm3d(4, *wb(m), s, z, affine=True), 5),
    ]


def _reshape(x: torch.Tensor, ndim: int) -> torch.Tensor:
    n = x.shape[0]
    return {3: x.reshape(n, 4, 16), 4: x, 5: x.reshape(n, 4, 4, 2, 2)}[ndim]


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("data", sorted(INPUTS))
@pytest.mark.parametrize("case", _norm_cases(), ids=lambda c: c[0])
def test_norm_matches_torch_ao(case, data, dtype):
    name, make_float, qcls, _, make_ao, ndim = case
    aonnq, _ = ao_nn()
    qx, _, _ = quantize_input(_reshape(INPUTS[data](), ndim), dtype)
    mod = observe(make_float(), qx, MinMaxObserver(dtype=dtype))
    qmod = qcls.from_float(mod)
    ref = oracle(make_ao(aonnq, mod, float(qmod.scale), int(qmod.zero_point)), to_torch_q(qx))
    assert_within_one_step(qmod(qx), ref)


def _bn(cls, n=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    bn = cls(n)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(n, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(n, generator=g) * 0.2)
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return bn.eval()


BN_CASES = [
    ("BatchNorm2d", lambda: _bn(nn.BatchNorm2d), qnnq.BatchNorm2d, "BatchNorm2d", 4),
    ("BatchNorm3d", lambda: _bn(nn.BatchNorm3d), qnnq.BatchNorm3d, "BatchNorm3d", 5),
    ("BNReLU2d", lambda: qnni.BNReLU2d(_bn(nn.BatchNorm2d), nn.ReLU()), qnniq.BNReLU2d, "BNReLU2d", 4),
    ("BNReLU3d", lambda: qnni.BNReLU3d(_bn(nn.BatchNorm3d), nn.ReLU()), qnniq.BNReLU3d, "BNReLU3d", 5),
]


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("data", sorted(INPUTS))
@pytest.mark.parametrize("case", BN_CASES, ids=lambda c: c[0])
def test_batch_norm_matches_torch_ao(case, data, dtype):
    name, make_float, qcls, ao_name, ndim = case
    aonnq, aonniq = ao_nn()
    qx, _, _ = quantize_input(_reshape(INPUTS[data](), ndim), dtype)
    mod = observe(make_float(), qx, MinMaxObserver(dtype=dtype))
    qmod = qcls.from_float(mod)
    bn = mod[0] if isinstance(mod, nn.Sequential) else mod
    ref_mod = getattr(aonniq if "ReLU" in ao_name else aonnq, ao_name)(4, bn.eps)
    with torch.no_grad():
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(ref_mod, key).copy_(getattr(bn, key))
    ref_mod.scale, ref_mod.zero_point = torch.tensor(float(qmod.scale)), torch.tensor(int(qmod.zero_point))
    ref = oracle(ref_mod, to_torch_q(qx))
    assert_within_one_step(qmod(qx), ref)


def test_batch_norm_from_float_checks_its_input():
    with pytest.raises(ConfigError, match="BNReLU2d"):
        qnnq.BatchNorm2d.from_float(qnni.BNReLU2d(_bn(nn.BatchNorm2d), nn.ReLU()))
    with pytest.raises(ConfigError, match="no activation_post_process"):
        qnnq.BatchNorm2d.from_float(_bn(nn.BatchNorm2d))
    bn = nn.BatchNorm2d(4, track_running_stats=False)
    bn.activation_post_process = MinMaxObserver()
    bn.activation_post_process(torch.randn(8))
    with pytest.raises(ConfigError, match="running statistics"):
        qnnq.BatchNorm2d.from_float(bn)
    qx, _, _ = quantize_input(random_batch(), "uint8")
    with pytest.raises(QuantizationError, match="5-d input"):
        qnnq.BatchNorm3d(4)(qx)


# --- Dropout ----------------------------------------------------------------------------------------------


def test_dropout_is_the_identity_on_qtensors_in_both_modes():
    qx, _, _ = quantize_input(digits_batch(), "uint8")
    drop = qnnq.Dropout.from_float(nn.Dropout(0.3))
    assert (drop.p, drop.inplace) == (0.3, False)
    for mode in (True, False):
        drop.train(mode)
        out = drop(qx)
        assert out is qx
    assert repr(drop) == "QuantizedDropout(p=0.3, inplace=False)"
    with pytest.raises(QuantizationError, match=r"qcore\.nn\.quantized\.Dropout.*QuantStub"):
        drop(qx.dequantize())
    with pytest.raises(ConfigError, match="nn.Dropout"):
        qnnq.Dropout.from_float(nn.ReLU())


# --- module API: repr, state_dict, errors, TorchScript --------------------------------------------------------


def _examples():
    """One converted module of each kind (uint8 unless said), and an input of the right shape."""
    qx, _, _ = quantize_input(random_batch(2), "uint8")
    qx8, _, _ = quantize_input(random_batch(2), "int8")
    w4, b4 = _affine(4, 5)
    bn = qnnq.BatchNorm2d.from_reference(_bn(nn.BatchNorm2d), 0.03, 100)
    bnr = qnniq.BNReLU3d.from_reference(qnni.BNReLU3d(_bn(nn.BatchNorm3d), nn.ReLU()), 0.02, 0)
    return [
        (qnnq.ReLU6(scale=0.025, zero_point=3), qx),
        (qnnq.Hardswish(0.03, 40), qx),
        (qnnq.ELU(0.03, 100, alpha=0.5), qx),
        (qnnq.LeakyReLU(0.03, 5, 0.1, output_dtype="int8"), qx8),
        (qnnq.Sigmoid(), qx),
        (qnnq.Tanh(output_dtype="int8"), qx8),
        (qnnq.Hardsigmoid(), qx),
        (qnnq.Softmax(dim=-1), qx),
        (qnnq.LayerNorm((4, 4), torch.rand(4, 4), torch.rand(4, 4), 0.04, 120), qx),
        (qnnq.GroupNorm(2, 4, w4, b4, 0.04, 120), qx),
        (qnnq.InstanceNorm1d(4, None, None, 0.04, 120), qx.reshape(6, 4, 16)),
        (qnnq.InstanceNorm2d(4, w4, b4, 0.04, 120, affine=True), qx[0]),  # unbatched
        (qnnq.InstanceNorm3d(4, w4, b4, 0.04, 120, affine=True), qx.reshape(6, 4, 4, 2, 2)),
        (bn, qx),
        (bnr, qx.reshape(6, 4, 4, 2, 2)),
        (qnnq.Dropout(0.2), qx),
    ]


def test_repr_shows_the_output_qparams():
    assert repr(qnnq.Hardswish(0.5, 3)) == "QuantizedHardswish(dtype=uint8, scale=0.5, zero_point=3)"
    assert repr(qnnq.LeakyReLU(0.5, -3, 0.2, output_dtype="int8")) == (
        "QuantizedLeakyReLU(negative_slope=0.2, dtype=int8, scale=0.5, zero_point=-3)"
    )
    assert repr(qnnq.Sigmoid()) == "QuantizedSigmoid(dtype=uint8, scale=0.00390625, zero_point=0)"
    assert repr(qnnq.Softmax(1)) == "QuantizedSoftmax(dim=1, dtype=uint8, scale=0.00390625, zero_point=0)"
    assert repr(qnnq.ReLU6()) == "QuantizedReLU6(output qparams=input's)"
    assert repr(qnnq.LayerNorm(4, None, None, 0.5, 7, elementwise_affine=False)) == (
        "QuantizedLayerNorm((4,), eps=1e-05, elementwise_affine=False, dtype=uint8, scale=0.5, zero_point=7)"
    )
    assert repr(qnniq.BNReLU2d(8)) == "QuantizedBNReLU2d(8, eps=1e-05, momentum=0.1, dtype=uint8, scale=1.0, zero_point=0)"
    assert "QuantizedInstanceNorm3d(4, eps=1e-05" in repr(qnnq.InstanceNorm3d(4, None, None, 0.5, 7))
    assert "QuantizedGroupNorm(2, 4, eps=1e-05, affine=True" in repr(qnnq.GroupNorm(2, 4, torch.ones(4), torch.zeros(4), 0.5, 7))


def _fresh_like(mod: nn.Module) -> nn.Module:
    """A module of the same architecture with other qparams and parameters, to load a state dict into."""
    if isinstance(mod, qnnq.Dropout):
        return qnnq.Dropout()
    if isinstance(mod, qnnq.ReLU6):
        return qnnq.ReLU6()
    if isinstance(mod, qnnq.Softmax):
        return qnnq.Softmax(mod.dim, 0.5, 9)
    if isinstance(mod, (qnnq.Sigmoid, qnnq.Tanh, qnnq.Hardsigmoid)):
        return type(mod)(0.5, 9)
    if isinstance(mod, qnnq.Hardswish):
        return qnnq.Hardswish(0.5, 9)
    if isinstance(mod, qnnq.ELU):
        return qnnq.ELU(0.5, 9, mod.alpha)
    if isinstance(mod, qnnq.LeakyReLU):
        return qnnq.LeakyReLU(0.5, 9, mod.negative_slope)
    if isinstance(mod, qnnq.LayerNorm):
        return qnnq.LayerNorm(mod.normalized_shape, torch.zeros(4, 4), torch.zeros(4, 4), 0.5, 9)
    if isinstance(mod, qnnq.GroupNorm):
        return qnnq.GroupNorm(2, 4, torch.zeros(4), torch.zeros(4), 0.5, 9)
    if isinstance(mod, (qnnq.InstanceNorm1d, qnnq.InstanceNorm2d, qnnq.InstanceNorm3d)):
        w = None if mod.weight is None else torch.zeros(4)
        return type(mod)(4, w, w, 0.5, 9, affine=mod.affine)
    return type(mod)(mod.num_features)


def test_state_dict_round_trip():
    for mod, x in _examples():
        before = mod(x)
        state = mod.state_dict()
        if not isinstance(mod, qnnq.Dropout):
            assert {"scale", "zero_point"} <= set(state)
        fresh = _fresh_like(mod)
        fresh.load_state_dict(state)
        after = fresh(x)
        assert torch.equal(after.int_repr(), before.int_repr()), type(mod).__name__
        assert (after.q_scale(), after.q_zero_point(), after.qdtype) == (before.q_scale(), before.q_zero_point(), before.qdtype)
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        again = _fresh_like(mod)
        again.load_state_dict(torch.load(buf, weights_only=True))
        assert torch.equal(again(x).int_repr(), before.int_repr())


def test_norm_state_dict_keys():
    assert list(qnnq.BatchNorm2d(3).state_dict()) == [
        "scale", "zero_point", "weight", "bias", "running_mean", "running_var", "_extra_state"
    ]
    assert set(qnnq.LayerNorm(4, torch.ones(4), torch.zeros(4), 0.5, 7).state_dict()) == {
        "scale", "zero_point", "weight", "bias", "_extra_state"
    }


def test_scripted_modules_equal_the_eager_dequantized_outputs():
    for mod, x in _examples():
        expected = mod(x).dequantize()
        model = nn.Sequential(mod)
        scripted = torch.jit.script(model)
        assert torch.equal(scripted(x.dequantize()), expected), type(mod).__name__
        # The eager model keeps working after scripting swapped the twin into it.
        assert torch.equal(model(x).dequantize(), expected)
        if isinstance(mod, (qnnq.LayerNorm, qnniq.BNReLU3d)):
            buf = io.BytesIO()
            torch.jit.save(scripted, buf)
            buf.seek(0)
            assert torch.equal(torch.jit.load(buf)(x.dequantize()), expected)


def test_relu6_keeping_the_input_qparams_cannot_be_scripted():
    with pytest.raises(QuantizationError, match="keeps its input's qparams"):
        torch.jit.script(nn.Sequential(qnnq.ReLU6()))


def test_float_input_raises_naming_the_module():
    for mod, x in _examples():
        with pytest.raises(QuantizationError, match="QuantStub") as info:
            mod(x.dequantize())
        name = "Dropout" if isinstance(mod, qnnq.Dropout) else type(mod).__name__
        assert name in str(info.value)
    mod = qnnq.Hardswish(0.1, 0)
    mod._qcore_name = "features.act"
    with pytest.raises(QuantizationError, match=r"features\.act \(qcore\.nn\.quantized\.Hardswish\)"):
        mod(torch.randn(3))


def test_from_float_errors_name_the_module():
    with pytest.raises(ConfigError, match=r"Hardswish.*no activation_post_process"):
        qnnq.Hardswish.from_float(nn.Hardswish())
    with pytest.raises(ConfigError, match=r"ELU.from_float expects .*nn.ELU, got ReLU"):
        qnnq.ELU.from_float(nn.ReLU())
    with pytest.raises(ConfigError, match=r"LayerNorm.from_float expects .*LayerNorm, got GroupNorm"):
        qnnq.LayerNorm.from_float(nn.GroupNorm(1, 4))
    ln = nn.LayerNorm(4)
    with pytest.raises(ConfigError, match="LayerNorm.*no activation_post_process"):
        qnnq.LayerNorm.from_float(ln)
    with pytest.raises(ConfigError, match="Sigmoid.*no activation_post_process"):
        qnnq.Sigmoid.from_float(nn.Sigmoid())
    with pytest.raises(ConfigError, match="uint8 or int8"):
        qnnq.Hardswish(0.1, 0, output_dtype="int32")


def test_modules_are_exported_under_torch_ao_names():
    for name in ("ReLU6", "Hardswish", "ELU", "LeakyReLU", "Sigmoid", "Tanh", "Hardsigmoid", "Softmax", "Dropout",
                 "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "BatchNorm2d", "BatchNorm3d"):
        assert getattr(qnnq, name).__name__ == name
    assert qnniq.BNReLU2d.__name__ == "BNReLU2d" and issubclass(qnniq.BNReLU3d, qnnq.BatchNorm3d)
