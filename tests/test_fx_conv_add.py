"""Residual-add fusion (conv + add (+ relu) -> ConvAdd2d / ConvAddReLU2d) and the reference quantized modules.

The FX tests run on a test backend: the reference backend plus the two fused
patterns (the reference backend itself keeps torch.ao's x86 graph, conv then
a quantized add). The modules are checked against their float formula and,
where torch still ships it, against torch.ao's onednn ConvAdd2d.
"""

from __future__ import annotations

import copy
import operator

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qcore
import qcore.fx as qfx
import qcore.nn.intrinsic as nni
import qcore.nn.intrinsic.quantized as nniq
import qcore.nn.quantized as nnq
from qcore.backend_config import BackendPatternConfig
from qcore.errors import ConfigError, QuantizationError
from qcore.qtensor import QTensor
from qcore.registry.builtin import reference_backend

from tests._helpers import HAVE_TORCH_Q, oracle

torch.set_num_threads(1)


def residual_backend(relu: bool = True, plain: bool = True):
    """The reference backend, also naming the fused conv + add (+ relu) modules."""
    ref = reference_backend()
    conv = ref.supports(nn.Conv2d)
    extra = [BackendPatternConfig(fused, conv.dtype_configs) for fused, on in
             ((nni.ConvAdd1d, plain), (nni.ConvAddReLU1d, relu), (nni.ConvAdd2d, plain), (nni.ConvAddReLU2d, relu))
             if on]
    return attrs.evolve(ref, name="residual", patterns=(*ref.patterns, *extra))


class Block(nn.Module):
    """A ResNet basic block with a 1x1 downsample: conv-bn-relu, conv-bn, + identity, relu (one ReLU, called twice)."""

    def __init__(self, add=operator.add, relu="module", swap=False):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.down = nn.Conv2d(4, 6, 1)
        self.add, self.relu_kind, self.swap = add, relu, swap

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.down(x)  # computed after the conv it is added to
        a, b = (identity, out) if self.swap else (out, identity)
        y = a.add(b) if self.add == "method" else self.add(a, b)
        if self.relu_kind == "module":
            return self.relu(y)
        if self.relu_kind == "F.relu":
            return F.relu(y)
        if self.relu_kind == "torch.relu":
            return torch.relu(y)
        if self.relu_kind == "method":
            return y.relu()
        return y


def block(**kwargs) -> Block:
    torch.manual_seed(0)
    model = Block(**kwargs).eval()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
    return model


def batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 4, 8, 8, generator=g) for _ in range(n)]


def prepared(model, backend=None, mapping=None, data=None):
    data = data or batches()
    p = qfx.prepare_fx(model, mapping or {"": qcore.default_qconfig}, (data[0],),
                       backend_config=backend or residual_backend())
    for x in data:
        p(x)
    return p


# --- fusion ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("add", [operator.add, torch.add, "method"])
@pytest.mark.parametrize("relu", ["module", "F.relu", "torch.relu", "method", None])
@pytest.mark.parametrize("swap", [False, True])
def test_conv_add_relu_fuses_in_every_spelling(add, relu, swap):
    model = block(add=add, relu=relu, swap=swap)
    p = prepared(model)
    fused = nni.ConvAddReLU2d if relu else nni.ConvAdd2d
    assert type(p.conv2) is fused
    assert type(p.conv1) is nni.ConvReLU2d  # the shared ReLU module fuses into conv1 too
    calls = [n for n in p.graph.nodes if n.op == "call_function" or n.op == "call_method"]
    assert not calls, [n.format_node() for n in calls]  # no add or relu left
    q = qfx.convert_fx(p)
    assert type(q.conv2) is (nniq.ConvAddReLU2d if relu else nniq.ConvAdd2d)
    data = batches()
    step = float(q.conv2.scale)
    for x in data:
        assert (q(x) - model(x)).abs().max() < 4 * step
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), block().state_dict().values()))


def test_the_fused_model_is_exactly_its_modules():
    """The converted graph computes ConvAddReLU2d(conv1 output, down output) and nothing else around it."""
    q = qfx.convert_fx(prepared(block()))
    x = batches()[0]
    qx = q.quantize(x)
    expected = q.conv2(q.conv1(qx), q.down(qx)).dequantize()
    torch.testing.assert_close(q(x), expected, rtol=0, atol=0)


def test_without_the_fusion_a_shared_relu_module_after_the_add_still_runs_quantized():
    """conv then a quantized add + the block's nn.ReLU module (torchvision's spelling): one add_relu, no float relu."""
    import warnings

    model = block()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = prepared(model, backend=reference_backend())
    q = qfx.convert_fx(p)
    assert type(q.conv2) is nnq.Conv2d
    x = batches()[0]
    assert (q(x) - model(x)).abs().max() < 0.1


def test_relu_stays_separate_when_the_backend_fuses_only_the_add():
    p = prepared(block(), backend=residual_backend(relu=False))
    assert type(p.conv2) is nni.ConvAdd2d
    assert any(n.op == "call_module" and type(p.get_submodule(n.target)) is nn.ReLU for n in p.graph.nodes)


class _NotFusable(nn.Module):
    def __init__(self, case):
        super().__init__()
        self.case = case
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.other = nn.Conv2d(4, 4, 1)
        self.bias = nn.Parameter(torch.randn(1, 4, 1, 1))

    def forward(self, x):
        y = self.conv(x)
        if self.case == "two users":
            return y + x, y
        if self.case == "alpha":
            return torch.add(y, self.other(x), alpha=2)
        if self.case == "parameter":
            return y + self.bias
        if self.case == "scalar":
            return y + 1.0
        if self.case == "itself":
            return y + y
        if self.case == "called twice":
            return self.conv(x) + self.conv(y)
        raise AssertionError(self.case)


@pytest.mark.parametrize("case", ["two users", "alpha", "parameter", "scalar", "itself", "called twice"])
def test_not_fused_where_it_would_change_the_graph(case):
    model = _NotFusable(case).eval()
    p = prepared(model)
    assert not any(isinstance(m, (nni.ConvAdd2d, nni.ConvAddReLU2d)) for m in p.modules())
    x = batches()[0]
    out, expected = qfx.convert_fx(p)(x), model(x)
    for a, b in zip(out if isinstance(out, tuple) else (out,), expected if isinstance(expected, tuple) else (expected,)):
        assert (a - b).abs().max() < 0.2


def test_not_fused_for_a_different_qconfig_on_the_add_or_in_training():
    mapping = qcore.QConfigMapping().set_global(qcore.default_qconfig).set_object_type(operator.add, None)
    p = prepared(block(relu=None), mapping=mapping)
    assert type(p.conv2) is nn.Conv2d
    model = block().train()
    qat = qfx.prepare_qat_fx(model, {"": qcore.default_qat_qconfig}, (batches()[0],), backend_config=residual_backend())
    assert not any(isinstance(m, (nni.ConvAdd2d, nni.ConvAddReLU2d)) for m in qat.modules())


def test_backends_without_the_pattern_keep_conv_then_add():
    p = prepared(block(), backend=reference_backend())
    assert type(p.conv2) is nn.Conv2d


def test_fuse_fx_fuses_residuals_in_eval_mode_only():
    model = block()
    fused = qfx.fuse_fx(model, backend_config=residual_backend())
    assert type(fused.conv2) is nni.ConvAddReLU2d
    x = batches()[0]
    torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nni.ConvAddReLU2d) for m in qfx.fuse_fx(block().train(),
                                                                         backend_config=residual_backend()).modules())


# --- the reference modules ------------------------------------------------------------------------


def _quantized_pair(relu: bool, seed: int = 0, groups: int = 1, qconfig=None):
    torch.manual_seed(seed)
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=groups)
    fused = nni.ConvAddReLU2d(conv, torch.add, nn.ReLU()) if relu else nni.ConvAdd2d(conv, torch.add)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.q1, self.q2, self.fused, self.dq = qcore.QuantStub(), qcore.QuantStub(), fused, qcore.DeQuantStub()

        def forward(self, x, y):
            return self.dq(self.fused(self.q1(x), self.q2(y)))

    model = Model().eval()
    model.qconfig = qconfig or qcore.default_qconfig
    with qcore.backend("reference"):
        p = qcore.prepare(model)
        g = torch.Generator().manual_seed(seed + 1)
        data = [(torch.rand(2, 4, 6, 6, generator=g), torch.randn(2, 8, 6, 6, generator=g)) for _ in range(3)]
        for x, y in data:
            p(x, y)
        q = qcore.convert(p)
    return model, q, data


@pytest.mark.parametrize("relu", [False, True])
def test_reference_module_is_the_float_formula(relu):
    model, q, data = _quantized_pair(relu)
    module = q.fused
    assert type(module) is (nniq.ConvAddReLU2d if relu else nniq.ConvAdd2d)
    for x, y in data:
        qx, qy = q.q1(x), q.q2(y)
        conv = F.conv2d(qx.dequantize(), module.weight().dequantize(), module.bias(), 1, 1)
        z = conv + qy.dequantize()
        z = z.relu() if relu else z
        expected = qcore.quantize_per_tensor(z, float(module.scale), int(module.zero_point), "uint8")
        out = module(qx, qy)
        assert isinstance(out, QTensor)
        assert torch.equal(out.int_repr(), expected.int_repr())


def test_reference_module_errors_name_the_module_and_the_fix():
    _, q, data = _quantized_pair(True)
    x, y = data[0]
    with pytest.raises(QuantizationError, match=r"ConvAddReLU2d.*expected a quantized input.*QuantStub"):
        q.fused(q.q1(x), y)
    bad = qcore.quantize_per_tensor(torch.rand(2, 8, 5, 5), 0.05, 0, "uint8")
    with pytest.raises(QuantizationError, match=r"ConvAddReLU2d.*extra_input of shape \(2, 8, 5, 5\).*output of shape "
                                                r"\(2, 8, 6, 6\).*residual of the output's shape"):
        q.fused(q.q1(x), bad)
    with pytest.raises(ConfigError, match=r"ConvAdd2d.from_float expects a fused float ConvAdd2d"):
        nniq.ConvAdd2d.from_float(nn.Conv2d(1, 1, 1))


def test_reference_module_scripts_saves_and_loads(tmp_path):
    _, q, data = _quantized_pair(True)
    scripted = torch.jit.script(q)
    for x, y in data:
        torch.testing.assert_close(scripted(x, y), q(x, y), rtol=0, atol=0)
    model_cls = type(q)
    qcore.save(q, tmp_path / "model")  # after torch.jit.script, which leaves twins in q: saved as their sources
    loaded = qcore.load(tmp_path / "model", classes=[model_cls], backend="reference")
    assert type(loaded.fused) is nniq.ConvAddReLU2d
    for x, y in data:
        torch.testing.assert_close(loaded(x, y), q(x, y), rtol=0, atol=0)


@pytest.mark.skipif(not HAVE_TORCH_Q or "onednn" not in torch.backends.quantized.supported_engines,
                    reason="needs torch.ao's onednn ConvAdd2d (the oracle)")
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("per_channel", [False, True])
def test_reference_module_agrees_with_torch_ao_onednn(relu, groups, per_channel):
    import torch.ao.nn.intrinsic.quantized as ao_nniq

    qconfig = qcore.QConfig(activation=qcore.default_qconfig.activation,
                            weight=qcore.default_per_channel_weight_observer) if per_channel else None
    _, q, data = _quantized_pair(relu, groups=groups, qconfig=qconfig)
    module = q.fused
    w = module.weight()
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"
    try:
        cls = ao_nniq.ConvAddReLU2d if relu else ao_nniq.ConvAdd2d
        theirs = oracle(cls, 4, 8, 3, padding=1, groups=groups)
        if per_channel:
            tw = oracle(torch.quantize_per_channel, w.dequantize(), w.q_per_channel_scales().double(),
                        w.q_per_channel_zero_points().long(), 0, torch.qint8)
        else:
            tw = oracle(torch.quantize_per_tensor, w.dequantize(), w.q_scale(), 0, torch.qint8)
        oracle(theirs.set_weight_bias, tw, module.bias())
        theirs.scale, theirs.zero_point = float(module.scale), int(module.zero_point)
        for x, y in data:
            qx, qy = q.q1(x), q.q2(y)
            tx = oracle(torch.quantize_per_tensor, x, qx.q_scale(), qx.q_zero_point(), torch.quint8)
            ty = oracle(torch.quantize_per_tensor, y, qy.q_scale(), qy.q_zero_point(), torch.quint8)
            expected = oracle(theirs, tx, ty).int_repr().int()
            got = module(qx, qy).int_repr().int()
            assert (got - expected).abs().max() <= 1
    finally:
        torch.backends.quantized.engine = before


class _AoBlock(nn.Module):
    """A basic block torch.ao's onednn backend config fuses the same way: conv-bn-relu, conv-bn + identity + ReLU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()

    def forward(self, x):
        return self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))) + x)


@pytest.mark.skipif(not HAVE_TORCH_Q or "onednn" not in torch.backends.quantized.supported_engines,
                    reason="needs torch.ao's onednn backend config (the oracle)")
def test_fbgemm_graph_agrees_with_torch_ao_onednn():
    """qcore's fbgemm backend fuses a residual block as torch.ao's onednn config does, with the same integers."""
    if "fbgemm" not in qcore.list_backends():
        pytest.skip("the fbgemm plugin is not installed here")
    from torch.ao.quantization import QConfigMapping as AoMapping, get_default_qconfig as ao_qconfig
    from torch.ao.quantization import quantize_fx as ao_fx
    from torch.ao.quantization.backend_config import get_onednn_backend_config

    torch.manual_seed(0)
    model = _AoBlock().eval()
    data = batches(4)
    with qcore.backend("fbgemm"):
        ours = qfx.convert_fx(prepared(model, backend="fbgemm", mapping={"": qcore.get_default_qconfig("x86")},
                                       data=data))
    assert type(ours.conv2).__name__ == "ConvAddReLU2d"
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"
    try:
        config = get_onednn_backend_config()
        theirs = oracle(ao_fx.prepare_fx, copy.deepcopy(model), AoMapping().set_global(ao_qconfig("x86")),
                        (data[0],), backend_config=config)
        for x in data:
            oracle(theirs, x)
        theirs = oracle(ao_fx.convert_fx, theirs, backend_config=config)
        assert type(theirs.conv2).__name__ == "ConvAddReLU2d"
        step = float(ours.conv2.scale)
        for x in data:
            assert (ours(x) - oracle(theirs, x)).abs().max() <= step * 1.001
    finally:
        torch.backends.quantized.engine = before


# --- donated residuals ------------------------------------------------------------------------------


class _Residuals(nn.Module):
    """Two fused blocks: the first adds a downsample conv's output, the second adds the first block's output,
    which its own first conv reads earlier; a third adds a value to a conv of itself, which is returned too."""

    def __init__(self):
        super().__init__()
        self.a1, self.a2, self.down = nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(4, 6, 1)
        self.b1, self.b2 = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.c = nn.Conv2d(6, 6, 1)

    def forward(self, x):
        y = torch.relu(self.a2(torch.relu(self.a1(x))) + self.down(x))
        z = torch.relu(self.b2(torch.relu(self.b1(y))) + y)
        return self.c(z) + z, z


def test_convert_fx_donates_only_residuals_nobody_reads_later():
    from qcore.fx.donation import DONATED

    torch.manual_seed(0)
    model = _Residuals().eval()
    p = prepared(model)
    q = qfx.convert_fx(p, backend_config=residual_backend())
    modules = dict(q.named_modules())
    fused = {name for name, m in modules.items() if isinstance(m, (nniq.ConvAdd2d, nniq.ConvAddReLU2d))}
    assert fused == {"a2", "b2", "c"}
    assert {name for name in fused if modules[name].__dict__.get(DONATED)} == {"a2", "b2"}
    reference = qfx.convert_to_reference_fx(p)
    assert not any(m.__dict__.get(DONATED) for m in reference.modules())
    x = batches()[0]
    for a, b in zip(q(x), reference(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _ReadAfter(nn.Module):
    def __init__(self, case):
        super().__init__()
        self.case = case
        self.a, self.b = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        if self.case == "own input":
            return self.b(y) + y
        if self.case == "returned":
            return self.b(x) + y, y
        return self.b(x) + y, y.flatten(1)  # "viewed"


@pytest.mark.parametrize("case", ["own input", "returned", "viewed"])
def test_residuals_read_after_the_add_are_not_donated(case):
    from qcore.fx.donation import DONATED

    q = qfx.convert_fx(prepared(_ReadAfter(case).eval()), backend_config=residual_backend())
    assert isinstance(q.b, nniq.ConvAdd2d) and not q.b.__dict__.get(DONATED)


# --- 1-d ----------------------------------------------------------------------------------------------


class _Block1d(nn.Module):
    """A 1-d residual block (temporal convolutions): conv-relu, conv + identity, relu."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu = nn.Conv1d(6, 6, 3, padding=1), nn.ReLU()
        self.conv2 = nn.Conv1d(6, 6, 3, padding=2, dilation=2)

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def test_1d_residuals_fuse_and_compute_the_float_formula():
    torch.manual_seed(0)
    model = _Block1d().eval()
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(4, 6, 16, generator=g) for _ in range(3)]
    p = prepared(model, data=data)
    assert type(p.conv2) is nni.ConvAddReLU1d and type(p.conv1) is nni.ConvReLU1d
    q = qfx.convert_fx(p, backend_config=residual_backend())
    module = q.conv2
    assert type(module) is nniq.ConvAddReLU1d
    qx = q.conv1(q.quantize(data[0]))
    identity = q.quantize(data[0])
    conv = F.conv1d(qx.dequantize(), module.weight().dequantize(), module.bias(), 1, 2, 2)
    expected = qcore.quantize_per_tensor((conv + identity.dequantize()).relu(), float(module.scale),
                                         int(module.zero_point), "uint8")
    assert torch.equal(module(qx, identity).int_repr(), expected.int_repr())
    for x in data:
        assert (q(x) - model(x)).abs().max() < 4 * float(module.scale)


def test_fbgemm_fuses_only_symmetric_weights_which_its_kernel_takes():
    """onednn's conv2d_add takes zero weight zero points: an affine weight observer keeps conv then add."""
    if "fbgemm" not in qcore.list_backends() or "onednn" not in torch.backends.quantized.supported_engines:
        pytest.skip("needs the fbgemm plugin with torch's onednn kernels")
    affine = qcore.QConfig(activation=qcore.get_default_qconfig("x86").activation,
                           weight=qcore.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine))
    model = block()
    with qcore.backend("fbgemm"):
        symmetric = prepared(model, backend="fbgemm", mapping={"": qcore.get_default_qconfig("x86")})
        kept = prepared(model, backend="fbgemm", mapping={"": affine})
    assert type(symmetric.conv2) is nni.ConvAddReLU2d
    assert type(kept.conv2) is nn.Conv2d
