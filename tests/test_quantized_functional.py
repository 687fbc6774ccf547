"""FloatFunctional / FXFloatFunctional / QFunctional: float ops, observation, torch.ops.quantized parity, scripting."""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
import qcore.nn.quantized as qnnq
from qcore.errors import ConfigError, QuantizationError
from qcore.nn.quantized.functional_modules import add_scalar_int, mul_scalar_int
from qcore.observers import MinMaxObserver
from qcore.qtensor import QTensor

torch.set_num_threads(1)

HAVE_AO = hasattr(torch, "quint8") and "fbgemm" in getattr(torch.backends.quantized, "supported_engines", ())
needs_ao = pytest.mark.skipif(not HAVE_AO, reason="needs torch's quantized kernels (the oracle)")
TORCH_DTYPE = {"uint8": getattr(torch, "quint8", None), "int8": getattr(torch, "qint8", None)}
SETTINGS = dict(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def to_torch_q(q: QTensor):
    return oracle(torch.quantize_per_tensor, q.dequantize(), q.q_scale(), q.q_zero_point(), TORCH_DTYPE[q.qdtype.name])


def quantize(x: torch.Tensor, dtype: str = "uint8") -> QTensor:
    obs = MinMaxObserver(dtype=dtype)
    obs(x)
    scale, zp = obs.calculate_qparams()
    return qcore.quantize_per_tensor(x, float(scale), int(zp), dtype)


def digits(n: int = 64) -> torch.Tensor:
    """Real data: sklearn's digits, (n, 64) scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data[:n] / 16.0, dtype=torch.float32)


class Counting(nn.Module):
    """An activation_post_process that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


# --- float modules --------------------------------------------------------------------------------------


def test_float_functional_computes_torch_ops_and_observes_like_torch_ao():
    f = qnnq.FloatFunctional()
    assert isinstance(f.activation_post_process, nn.Identity)
    f.activation_post_process = Counting()
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(f.add(x, y), x + y)
    assert torch.equal(f.mul(x, y), x * y)
    assert torch.equal(f.add_relu(x, y), F.relu(x + y))
    assert torch.equal(f.cat([x, y], 1), torch.cat([x, y], 1))
    assert torch.equal(f.matmul(x, y.t()), x @ y.t())
    assert f.activation_post_process.calls == 5
    # torch.ao leaves the scalar ops unobserved: their quantized qparams follow from the input's.
    assert torch.equal(f.add_scalar(x, 0.5), x + 0.5)
    assert torch.equal(f.mul_scalar(x, -2.0), x * -2.0)
    assert f.activation_post_process.calls == 5
    with pytest.raises(RuntimeError, match="not meant to be called"):
        f(x)


def test_fx_float_functional_has_no_observer():
    f = qnnq.FXFloatFunctional()
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    assert not hasattr(f, "activation_post_process")
    assert torch.equal(f.add(x, y), x + y) and torch.equal(f.add_relu(x, y), F.relu(x + y))
    assert torch.equal(f.mul(x, y), x * y) and torch.equal(f.cat([x, y]), torch.cat([x, y]))
    assert torch.equal(f.add_scalar(x, 1.5), x + 1.5) and torch.equal(f.mul_scalar(x, 3.0), x * 3.0)
    assert torch.equal(f.matmul(x, y.t()), x @ y.t())
    with pytest.raises(RuntimeError, match="not meant to be called"):
        f(x)


def test_float_functional_scripts_as_is():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = qnnq.FloatFunctional()

        def forward(self, x):
            return self.f.add_scalar(self.f.cat([self.f.add(x, x), self.f.mul_scalar(x, 2.0)], 1), 1.0)

    x = torch.randn(2, 3)
    assert torch.equal(torch.jit.script(M())(x), M()(x))


# --- QFunctional ----------------------------------------------------------------------------------------


def observed(calibrate, dtype: str = "uint8") -> qnnq.FloatFunctional:
    f = qnnq.FloatFunctional()
    f.activation_post_process = MinMaxObserver(dtype=dtype)
    calibrate(f)
    return f


@needs_ao
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("op", ["add", "mul", "add_relu", "cat", "matmul"])
def test_qfunctional_matches_torch_ops_quantized(op, dtype):
    g = torch.Generator().manual_seed(1)
    x = digits(32) * 4 - 2
    y = torch.randn(32, 64, generator=g)
    if op == "matmul":
        y = torch.randn(64, 16, generator=g) * 0.3
    qx, qy = quantize(x, dtype), quantize(y, dtype)
    xf, yf = qx.dequantize(), qy.dequantize()
    args = ([xf, yf],) if op == "cat" else (xf, yf)
    f = observed(lambda f: getattr(f, op)(*args), dtype)
    qf = qnnq.QFunctional.from_float(f)
    assert qf.dtype.name == dtype
    s, z = float(qf.scale), int(qf.zero_point)
    out = qf.cat([qx, qy]) if op == "cat" else getattr(qf, op)(qx, qy)
    tx, ty = to_torch_q(qx), to_torch_q(qy)
    if op == "cat":
        ref = oracle(torch.ops.quantized.cat, [tx, ty], 0, s, z)
    else:
        ref = oracle(getattr(torch.ops.quantized, op), tx, ty, s, z)
    assert isinstance(out, QTensor)
    assert (out.q_zero_point(), out.qdtype.name) == (ref.q_zero_point(), dtype)
    assert abs(out.q_scale() - ref.q_scale()) <= 1e-7 * s
    diff = (out.int_repr().int() - ref.int_repr().int()).abs()
    assert int(diff.max()) <= 1
    assert float((diff == 0).float().mean()) >= 0.97


scalars = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5, 100.0, -100.0]),
    st.floats(-20, 20, allow_nan=False, allow_infinity=False, width=32).filter(lambda c: c == 0 or abs(c) > 1e-6),
)


@needs_ao
@settings(**SETTINGS)
@given(
    dtype=st.sampled_from(["uint8", "int8"]),
    scale=st.floats(0.001953125, 0.5, width=32),
    zero_offset=st.integers(0, 255),
    c=scalars,
    seed=st.integers(0, 2**16),
)
def test_scalar_ops_equal_torch_bit_for_bit(dtype, scale, zero_offset, c, seed):
    """add_scalar / mul_scalar: torch's output qparams and integers, including the saturating cases."""
    lo = -128 if dtype == "int8" else 0
    zp = lo + zero_offset
    x = torch.randn(200, generator=torch.Generator().manual_seed(seed)) * 60 * scale
    qx = qcore.quantize_per_tensor(x, scale, zp, dtype)
    tx = to_torch_q(qx)
    qf = qnnq.QFunctional()
    for op in ("add_scalar", "mul_scalar"):
        out = getattr(qf, op)(qx, c)
        ref = oracle(getattr(torch.ops.quantized, op), tx, c)
        assert (out.q_scale(), out.q_zero_point(), out.qdtype.name) == (ref.q_scale(), ref.q_zero_point(), dtype), op
        assert torch.equal(out.int_repr(), ref.int_repr().view(out.int_repr().dtype)), op


def test_scalar_ops_integer_rules():
    q = torch.tensor([0, 10, 255], dtype=torch.uint8)
    out, s, z = add_scalar_int(q, 0.1, 20, 1.0, 0, 255)  # zero point moves to 10
    assert (out.tolist(), s, z) == ([0.0, 10.0, 255.0], 0.1, 10)
    out, s, z = add_scalar_int(q, 0.1, 20, 3.0, 0, 255)  # 20 - 30 < 0: the range widens
    assert z == 0 and s == pytest.approx(0.1 * 265 / 255)
    out, s, z = mul_scalar_int(q, 0.1, 20, -2.0, 0, 255)
    assert (out.tolist(), s, z) == ([255.0, 245.0, 0.0], 0.2, 235)
    out, s, z = mul_scalar_int(q, 0.1, 20, 0.0, 0, 255)
    assert (out.tolist(), s, z) == ([0.0, 0.0, 0.0], 1.0, 0)


def test_qfunctional_errors_and_from_float_checks():
    qf = qnnq.QFunctional()
    qf.set_output_qparams(0.1, 3)
    qx = quantize(torch.randn(4))
    with pytest.raises(QuantizationError, match=r"qcore\.nn\.quantized\.QFunctional.*QuantStub"):
        qf.add(qx, qx.dequantize())
    qf._qcore_name = "block.skip"
    with pytest.raises(QuantizationError, match=r"block\.skip \(qcore\.nn\.quantized\.QFunctional\)"):
        qf.cat([qx.dequantize()])
    with pytest.raises(QuantizationError, match="scalar must be a number"):
        qf.add_scalar(qx, "one")
    per_channel = qcore.quantize_per_channel(torch.randn(2, 3), torch.tensor([0.1, 0.2]), torch.tensor([0, 1]), 0, "int8")
    with pytest.raises(QuantizationError, match="per-tensor"):
        qf.mul_scalar(per_channel, 2.0)
    with pytest.raises(QuantizationError, match=r"mul_scalar\(1e-45\): the output scale .* below float32's smallest"):
        qf.mul_scalar(qx, 1e-45)
    with pytest.raises(RuntimeError, match="not meant to be called"):
        qf(qx)
    with pytest.raises(ConfigError, match="expects a FloatFunctional, got FXFloatFunctional"):
        qnnq.QFunctional.from_float(qnnq.FXFloatFunctional())
    with pytest.raises(ConfigError, match="QFunctional.*no activation_post_process"):
        qnnq.QFunctional.from_float(qnnq.FloatFunctional())


def test_qfunctional_repr_and_state_dict_round_trip():
    f = observed(lambda f: f.add(torch.randn(8), torch.randn(8)), "int8")
    qf = qnnq.QFunctional.from_float(f)
    assert repr(qf) == f"QFunctional(dtype=int8, scale={float(qf.scale)}, zero_point={int(qf.zero_point)})"
    qx = quantize(torch.randn(16), "int8")
    qf.add_scalar(qx, 0.25)
    state = qf.state_dict()
    assert {"scale", "zero_point", "_extra_state"} == set(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    fresh = qnnq.QFunctional()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert (float(fresh.scale), int(fresh.zero_point), fresh.dtype) == (float(qf.scale), int(qf.zero_point), qf.dtype)
    assert fresh._scalar_inputs == qf._scalar_inputs
    assert torch.equal(fresh.add(qx, qx).int_repr(), qf.add(qx, qx).int_repr())


class Block(nn.Module):
    """A residual block written with FloatFunctional, as the reference doc suggests."""

    def __init__(self) -> None:
        super().__init__()
        self.add = qnnq.FloatFunctional()
        self.cat = qnnq.FloatFunctional()
        self.mm = qnnq.FloatFunctional()
        self.scalar = qnnq.FloatFunctional()

    def forward(self, x, y):
        s = self.add.add_relu(x, y)
        s = self.scalar.mul_scalar(self.scalar.add_scalar(s, 0.3), -1.5)
        c = self.cat.cat([s, x], 1)
        return self.mm.matmul(c, c.transpose(0, 1))


def _converted_block():
    x = digits(16) * 2 - 1
    y = digits(32)[16:] - 0.5
    block = Block()
    for name in ("add", "cat", "mm"):
        getattr(block, name).activation_post_process = MinMaxObserver()
    block(x, y)
    for name in ("add", "cat", "mm", "scalar"):
        f = getattr(block, name)
        if name == "scalar":
            setattr(block, name, qnnq.QFunctional())
        else:
            setattr(block, name, qnnq.QFunctional.from_float(f))
    return block, quantize(x), quantize(y)


def test_scripted_qfunctional_equals_the_eager_dequantized_output():
    block, qx, qy = _converted_block()
    expected = block(qx, qy).dequantize()  # the eager run also records the scalar ops' input grid
    scripted = torch.jit.script(block)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(scripted(qx.dequantize(), qy.dequantize()), expected)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    assert torch.equal(torch.jit.load(buf)(qx.dequantize(), qy.dequantize()), expected)
    assert torch.equal(block(qx, qy).dequantize(), expected)  # eager still works after scripting


def test_scripted_scalar_op_without_a_known_grid_warns_and_stays_within_one_step():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.f = qnnq.QFunctional()

        def forward(self, x):
            return self.f.add_scalar(x, 0.3)

    m = M()
    scripted = torch.jit.script(m)
    qx = quantize(torch.randn(50))
    expected = m(qx)
    with pytest.warns(UserWarning, match="input grid is unknown"):
        got = scripted(qx.dequantize())
    assert float((got - expected.dequantize()).abs().max()) <= qx.q_scale()
