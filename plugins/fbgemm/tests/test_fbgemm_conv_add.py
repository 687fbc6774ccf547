"""The fused ConvAdd2d / ConvAddReLU2d kernel modules (onednn's quantized::conv2d_add): numerics, safety, lowering."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qcore
import qcore.nn.intrinsic as nni
from qcore.flow.eager import convert, prepare
from qcore.nn.intrinsic.quantized import conv_add as ref_conv_add
from qcore.nn.intrinsic.quantized.conv_add import ConvAddTwin
from qcore.stubs import DeQuantStub, QuantStub

from qcore_fbgemm.static import STATIC_LOWERINGS, conv_add
from qcore_fbgemm.static.conv import Conv2d as KernelConv2d
from qcore_fbgemm.static.ops import ONEDNN_SHAPES_PER_MODULE
from qcore_fbgemm.torch_quantized import KernelQTensor, quantize_weight

torch.set_num_threads(1)

HAVE_ONEDNN = "onednn" in getattr(torch.backends.quantized, "supported_engines", ())
pytestmark = pytest.mark.skipif(not HAVE_ONEDNN, reason="needs torch's onednn quantized kernels")

try:  # the oracle: torch.ao's fused modules (deprecated; tests only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.nn.intrinsic import quantized as tnniq
    HAVE_TORCH_AO = hasattr(tnniq, "ConvAdd2d") and hasattr(torch, "quint8")
except ImportError:  # pragma: no cover - a torch without torch.ao
    tnniq, HAVE_TORCH_AO = None, False
needs_torch_ao = pytest.mark.skipif(not HAVE_TORCH_AO, reason="needs torch.ao.nn.intrinsic.quantized (the oracle)")

REF = {False: ref_conv_add.ConvAdd2d, True: ref_conv_add.ConvAddReLU2d}
KERNEL = {False: conv_add.ConvAdd2d, True: conv_add.ConvAddReLU2d}
TORCH_AO = {False: "ConvAdd2d", True: "ConvAddReLU2d"}


def reference_module(relu: bool, cin: int = 4, cout: int = 8, kernel: int = 3, stride: int = 1, padding: int = 1,
                     dilation: int = 1, groups: int = 1, out_scale: float = 0.05, out_zp: int = 100, seed: int = 0,
                     per_channel: bool = True, weight_zp: int = 0, padding_mode: str = "zeros") -> nn.Module:
    """A reference ConvAdd2d / ConvAddReLU2d with random int8 weights (symmetric unless ``weight_zp``)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, kernel, kernel, generator=g)
    if per_channel:
        scales = (torch.rand(cout, generator=g) * 0.02 + 0.005).double()
        qw = qcore.quantize_per_channel(w, scales, torch.full((cout,), weight_zp, dtype=torch.long), 0, "int8")
    else:
        qw = qcore.quantize_per_tensor(w, 0.02, weight_zp, "int8")
    m = REF[relu](cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode)
    m.set_weight_bias(qw, torch.randn(cout, generator=g))
    m.set_output_qparams(out_scale, out_zp, "uint8")
    return m


def qrand(shape: tuple, scale: float, zp: int, seed: int, channels_last: bool = False, dtype: str = "uint8",
          max_code: int = 255):
    """Random values quantized with (scale, zp), their codes at most ``max_code``: a convolution's input takes
    127, the backend's 7-bit activation range (reduce_range: AVX2 without VNNI saturates 16-bit pair sums)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2
    x = x.clamp(max=(max_code - zp) * scale)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return qcore.quantize_per_tensor(x, scale, zp, dtype)


def ints(q) -> torch.Tensor:
    return q.int_repr().to(torch.int32)


def torch_ao_module(ref: nn.Module, relu: bool) -> nn.Module:
    """torch.ao's fused module with ``ref``'s weights and output qparams, packed for onednn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = "onednn"
        try:
            m = getattr(tnniq, TORCH_AO[relu])(ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride,
                                                 ref.padding, ref.dilation, ref.groups, bias=True)
            m.set_weight_bias(quantize_weight(ref.weight()), ref._bias)
        finally:
            torch.backends.quantized.engine = previous
        m.scale, m.zero_point = float(ref.scale), int(ref.zero_point)
    return m


def torch_ao_run(m: nn.Module, qx, qe) -> torch.Tensor:
    """The integers of torch.ao's forward on copies of the inputs (it writes into a channels-last extra input)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tx = torch._make_per_tensor_quantized_tensor(qx.int_repr().clone(), qx.q_scale(), qx.q_zero_point())
        te = torch._make_per_tensor_quantized_tensor(qe.int_repr().clone(), qe.q_scale(), qe.q_zero_point())
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = "onednn"
        try:
            return m(tx, te).int_repr().to(torch.int32)
        finally:
            torch.backends.quantized.engine = previous


class Block(nn.Module):
    """QuantStub x2 -> fused conv + add (+ ReLU) -> DeQuantStub."""

    def __init__(self, relu: bool = True, cin: int = 4, cout: int = 8) -> None:
        super().__init__()
        self.q1, self.q2, self.dq = QuantStub(), QuantStub(), DeQuantStub()
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.f = nni.ConvAddReLU2d(conv, torch.add, nn.ReLU()) if relu else nni.ConvAdd2d(conv, torch.add)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.dq(self.f(self.q1(x), self.q2(y)))


def block_inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, 10, 10, generator=g), torch.randn(n, 8, 10, 10, generator=g)


def prepared_block(relu: bool = True, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Block(relu).eval()
    model.qconfig = qcore.get_default_qconfig("x86")
    model = prepare(model)
    model(*block_inputs(16, seed + 1))
    return model


@pytest.mark.parametrize("relu", [False, True])
def test_convert_gives_the_kernel_classes_agreeing_with_the_reference(relu):
    prepared = prepared_block(relu)
    reference = convert(copy.deepcopy(prepared), is_reference=True)
    lowered = convert(prepared)
    assert type(reference.f) is REF[relu] and type(lowered.f) is KERNEL[relu]
    assert STATIC_LOWERINGS[REF[relu]] == KERNEL[relu].from_reference
    assert "engine=onednn" in repr(lowered.f)
    x, y = block_inputs(6, 3)
    assert isinstance(lowered.f(lowered.q1(x), lowered.q2(y)), KernelQTensor)
    assert bool(((lowered(x, y) - reference(x, y)).abs() <= float(reference.f.scale) * 1.0001).all())


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 4]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    kernel = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    return dict(
        relu=draw(st.booleans()), cin=cin, cout=cout, kernel=kernel, stride=draw(st.integers(1, 2)),
        # padding below the kernel's span: the kernel module takes no more (see test_padding_past_the_kernel...)
        padding=draw(st.integers(0, min(2, dilation * (kernel - 1)))), dilation=dilation, groups=groups,
        out_scale=draw(st.floats(0.01, 0.3)), out_zp=draw(st.integers(0, 255)), seed=draw(st.integers(0, 1000)),
        per_channel=draw(st.booleans()),
    )


def output_shape(case: dict, n: int, size: int) -> tuple:
    span = case["dilation"] * (case["kernel"] - 1) + 1
    out = (size + 2 * case["padding"] - span) // case["stride"] + 1
    return (n, case["cout"], out, out)


@needs_torch_ao
@settings(max_examples=20, deadline=None)
@given(
    case=conv_cases(),
    size=st.integers(6, 9),
    x_qparams=st.tuples(st.floats(0.005, 0.1), st.integers(0, 255)),
    e_qparams=st.tuples(st.floats(0.005, 0.1), st.integers(0, 255)),
    channels_last=st.tuples(st.booleans(), st.booleans()),
)
def test_kernel_agrees_with_the_reference_and_with_torch_ao(case, size, x_qparams, e_qparams, channels_last):
    relu = case["relu"]
    ref = reference_module(**case)
    kernel = KERNEL[relu].from_reference(ref)
    assert kernel is not None
    oracle = torch_ao_module(ref, relu)
    # more batch sizes than the packings a module keeps: per-shape packings, then the shared one, then back
    batches = list(range(1, ONEDNN_SHAPES_PER_MODULE + 3)) + [2, 1]
    for i, n in enumerate(batches):
        qx = qrand((n, case["cin"], size, size), *x_qparams, seed=i, channels_last=channels_last[0], max_code=127)
        qe = qrand(output_shape(case, n, size), *e_qparams, seed=100 + i, channels_last=channels_last[1])
        got = ints(kernel(qx, qe))
        assert int((got - ints(ref(qx, qe))).abs().max()) <= 1
        assert torch.equal(got, torch_ao_run(oracle, qx, qe))
    assert len(kernel._kernel_op.onednn_by_shape) == ONEDNN_SHAPES_PER_MODULE


@pytest.mark.parametrize("x_channels_last", [False, True])
@pytest.mark.parametrize("extra_channels_last", [False, True])
def test_inputs_are_never_modified(x_channels_last, extra_channels_last):
    kernel = KERNEL[False].from_reference(reference_module(False))
    qx = qrand((2, 4, 8, 8), 0.02, 10, 1, x_channels_last, max_code=127)
    qe = qrand((2, 8, 8, 8), 0.03, 120, 2, extra_channels_last)
    before_x, before_e = qx.int_repr().clone(), qe.int_repr().clone()
    out = kernel(qx, qe)
    out2 = kernel(qx, qe)  # the same input twice gives the same result (nothing was accumulated in place)
    assert torch.equal(qx.int_repr(), before_x) and torch.equal(qe.int_repr(), before_e)
    assert torch.equal(out.int_repr(), out2.int_repr())


def test_a_kernel_output_used_as_extra_input_is_not_modified():
    """The usual residual: the extra input is the (channels-last) torch tensor another kernel left."""
    conv = KernelConv2d.from_reference(_plain_conv_reference())
    add = KERNEL[True].from_reference(reference_module(True, cin=8, cout=8))
    qx = qrand((2, 8, 8, 8), 0.02, 10, 3, max_code=127)
    skip = conv(qx)
    assert isinstance(skip, KernelQTensor) and skip._torch.is_contiguous(memory_format=torch.channels_last)
    before = skip.int_repr().clone()
    first = add(skip, skip)
    assert torch.equal(skip.int_repr(), before)
    assert torch.equal(add(skip, skip).int_repr(), first.int_repr())


def _plain_conv_reference() -> nn.Module:
    g = torch.Generator().manual_seed(5)
    m = qcore.nn.quantized.Conv2d(8, 8, 3, padding=1)
    m.set_weight_bias(qcore.quantize_per_tensor(torch.randn(8, 8, 3, 3, generator=g), 0.02, 0, "int8"), torch.zeros(8))
    m.set_output_qparams(0.05, 30, "uint8")
    return m


def test_add_and_add_relu_modules_on_the_same_weights_run_alternately():
    """onednn caches its primitive (post-ops included) per packed weight: each module must keep its own packings."""
    ref_add, ref_relu = reference_module(False, out_zp=128), reference_module(True, out_zp=128)
    ref_conv = _same_weights_conv(ref_add)
    kernels = [(KERNEL[False].from_reference(ref_add), ref_add), (KERNEL[True].from_reference(ref_relu), ref_relu),
               (KernelConv2d.from_reference(ref_conv), ref_conv)]
    for step in range(3):
        for n in (1, 3):  # the same shapes in every module
            qx, qe = qrand((n, 4, 8, 8), 0.02, 10, step, max_code=127), qrand((n, 8, 8, 8), 0.05, 128, step + 10)
            for kernel, ref in kernels:
                args = (qx,) if isinstance(kernel, KernelConv2d) else (qx, qe)
                assert int((ints(kernel(*args)) - ints(ref(*args))).abs().max()) <= 1
    # the ReLU one does clamp at the zero point, the plain one does not
    out_add, out_relu = ints(kernels[0][0](qx, qe)), ints(kernels[1][0](qx, qe))
    assert int(out_add.min()) < 128 and int(out_relu.min()) == 128


def _same_weights_conv(ref: nn.Module) -> nn.Module:
    m = qcore.nn.quantized.Conv2d(ref.in_channels, ref.out_channels, ref.kernel_size, padding=ref.padding)
    m.set_weight_bias(ref.weight(), ref._bias)
    m.set_output_qparams(float(ref.scale), int(ref.zero_point), "uint8")
    return m


@pytest.mark.parametrize("relu", [False, True])
def test_broadcasting_extra_input_and_int8_input_run_the_reference(relu):
    ref = reference_module(relu)
    kernel = KERNEL[relu].from_reference(ref)
    qx = qrand((2, 4, 8, 8), 0.02, 10, 1, max_code=127)
    for qe in (qrand((2, 8, 1, 1), 0.05, 100, 2), qrand((1, 8, 8, 8), 0.05, 100, 3), qrand((8, 8, 8), 0.05, 100, 4)):
        assert torch.equal(kernel(qx, qe).int_repr(), ref(qx, qe).int_repr())
    qx8 = qrand((2, 4, 8, 8), 0.02, 0, 5, dtype="int8")
    qe = qrand((2, 8, 8, 8), 0.05, 100, 6)
    assert torch.equal(kernel(qx8, qe).int_repr(), ref(qx8, qe).int_repr())
    qe8 = qrand((2, 8, 8, 8), 0.05, 0, 7, dtype="int8")
    assert torch.equal(kernel(qx, qe8).int_repr(), ref(qx, qe8).int_repr())


def test_a_residual_of_the_wrong_shape_gets_the_reference_error_naming_the_module():
    kernel = KERNEL[True].from_reference(reference_module(True))
    qx, qe = qrand((2, 4, 8, 8), 0.02, 10, 1, max_code=127), qrand((2, 8, 7, 7), 0.05, 100, 2)
    with pytest.raises(qcore.QuantizationError, match=r"ConvAddReLU2d.*extra_input of shape \(2, 8, 7, 7\)"):
        kernel(qx, qe)


def test_weights_onednn_cannot_pack_and_other_padding_modes_stay_on_the_reference():
    assert KERNEL[False].from_reference(reference_module(False, weight_zp=3)) is None
    assert KERNEL[True].from_reference(reference_module(True, per_channel=False, weight_zp=-2)) is None
    assert KERNEL[True].from_reference(reference_module(True, padding_mode="reflect")) is None
    assert KERNEL[True].from_reference(reference_module(True, per_channel=False)) is not None


def test_padding_past_the_kernel_stays_on_the_reference():
    """torch's onednn conv2d_add writes garbage into output pixels that see only padding: no kernel for those."""
    assert KERNEL[False].from_reference(reference_module(False, kernel=2, padding=2)) is None
    assert KERNEL[True].from_reference(reference_module(True, kernel=1, padding=1)) is None
    assert KERNEL[False].from_reference(reference_module(False, kernel=2, padding=1)) is not None
    assert KERNEL[False].from_reference(reference_module(False, kernel=2, padding=2, dilation=2)) is not None


def test_convert_keeps_the_reference_module_for_asymmetric_weights():
    torch.manual_seed(0)
    model = Block(True).eval()
    with torch.no_grad():
        model.f[0].weight.abs_()  # all positive: an affine observer gives a nonzero zero point
    model.qconfig = qcore.QConfig(
        activation=qcore.get_default_qconfig("x86").activation,
        weight=qcore.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_affine),
    )
    model = prepare(model)
    model(*block_inputs(16, 1))
    lowered = convert(model)
    assert lowered.f.weight().q_zero_point() != 0
    assert type(lowered.f) is REF[True]


def test_torchscript_of_the_converted_model_gives_the_eager_integers():
    lowered = convert(prepared_block(True))
    x, y = block_inputs(4, 7)
    eager = lowered(x, y)
    scripted = torch.jit.script(lowered)
    assert isinstance(scripted.f, torch.jit.ScriptModule)
    assert torch.equal(scripted(x, y), eager)
    assert torch.equal(lowered(x, y), eager)  # the eager model still runs the kernel after scripting


def test_the_reference_twin_is_within_one_step_of_the_kernel_on_random_data():
    """The scripted form is the reference numerics (the kernel needs torch's global engine, which TorchScript
    cannot set): within one step of the kernel, which the reference itself is."""
    ref = reference_module(False, out_scale=0.02)
    kernel = KERNEL[False].from_reference(ref)
    twin = kernel.__prepare_scriptable__()
    assert isinstance(twin, ConvAddTwin)
    scripted = torch.jit.script(twin)
    qx, qe = qrand((4, 4, 10, 10), 0.01, 3, 1, max_code=127), qrand((4, 8, 10, 10), 0.03, 128, 2)
    assert torch.equal(scripted(qx.dequantize(), qe.dequantize()), ref(qx, qe).dequantize())
    step = float(ref.scale) * 1.0001
    assert bool(((scripted(qx.dequantize(), qe.dequantize()) - kernel(qx, qe).dequantize()).abs() <= step).all())


def test_the_op_module_scripts_and_gives_the_eager_integers_under_the_onednn_engine():
    kernel = KERNEL[True].from_reference(reference_module(True))
    qx, qe = qrand((2, 4, 8, 8), 0.02, 10, 1, max_code=127), qrand((2, 8, 8, 8), 0.05, 100, 2, channels_last=True)
    expected = kernel(qx, qe)
    op = torch.jit.script(copy.copy(kernel._kernel_op))
    tx, te = (torch._make_per_tensor_quantized_tensor(q.int_repr(), q.q_scale(), q.q_zero_point()) for q in (qx, qe))
    before = te.int_repr().clone()
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "onednn"
    try:
        got = op(tx, te)
    finally:
        torch.backends.quantized.engine = previous
    assert torch.equal(got.int_repr(), expected.int_repr()) and torch.equal(te.int_repr(), before)
    assert op.output_size(tx) == list(expected.shape)


def test_reference_model_saved_with_qcore_save_loads_onto_the_kernels(tmp_path):
    save = getattr(qcore, "save", None)
    if save is None:
        pytest.skip("qcore.save is not available")
    reference = convert(prepared_block(True), is_reference=True)
    path = tmp_path / "block.qcore"
    with qcore.backend("reference"):
        save(reference, path)
    torch.manual_seed(0)
    loaded = qcore.load(path, model=Block(True))
    assert type(loaded.f) is KERNEL[True]
    x, y = block_inputs(4, 9)
    assert bool(((loaded(x, y) - reference(x, y)).abs() <= float(reference.f.scale) * 1.0001).all())


class ResidualDigits(nn.Module):
    """A tiny residual CNN on 8x8 digits: conv-relu, then conv + skip + relu fused, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.quant, self.dequant = QuantStub(), DeQuantStub()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.block = nni.ConvAddReLU2d(nn.Conv2d(8, 8, 3, padding=1), torch.add, nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.quant(x.view(-1, 1, 8, 8)))
        return self.dequant(self.fc(self.flatten(self.pool(self.block(h, h)))))


def test_digits_through_a_residual_cnn_agree_with_the_reference():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = ResidualDigits()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        for i in range(0, 1400, 64):
            loss = nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    model.qconfig = qcore.get_default_qconfig("x86")
    prepared = prepare(model)
    with torch.no_grad():
        prepared(x[:512])
    reference = convert(copy.deepcopy(prepared), is_reference=True)
    lowered = convert(prepared)
    assert type(lowered.block) is KERNEL[True]
    test_x, test_y = x[1400:], y[1400:]
    with torch.no_grad():
        got, want, float_out = lowered(test_x), reference(test_x), model(test_x)
    agree = (got.argmax(1) == want.argmax(1)).float().mean().item()
    assert agree >= 0.99
    float_acc = (float_out.argmax(1) == test_y).float().mean().item()
    assert (got.argmax(1) == test_y).float().mean().item() >= float_acc - 0.02


class _TwoBlocks(nn.Module):
    """Residual blocks in FX: a downsample conv's output and then the first block's output are the residuals."""

    def __init__(self) -> None:
        super().__init__()
        self.a1, self.a2, self.down = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(4, 8, 1)
        self.b1, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.a2(torch.relu(self.a1(x))) + self.down(x))
        return torch.relu(self.b2(torch.relu(self.b1(y))) + y)


def test_fx_residuals_nobody_reads_later_are_written_in_place_with_the_same_integers():
    import qcore.fx as qfx

    torch.manual_seed(0)
    model = _TwoBlocks().eval()
    g = torch.Generator().manual_seed(1)
    data = [torch.randn(2, 4, 24, 24, generator=g) for _ in range(3)]  # 576 output pixels: onednn, channels-last
    with qcore.backend("fbgemm"):
        prepared = qfx.prepare_fx(model, qcore.get_default_qconfig_mapping("x86"), (data[0],))
        for x in data:
            prepared(x)
        lowered = qfx.convert_fx(prepared)
        reference = qfx.convert_to_reference_fx(prepared)
    assert type(lowered.a2) is conv_add.ConvAddReLU2d and type(lowered.b2) is conv_add.ConvAddReLU2d
    for x in data:
        lowered(x)  # builds the ops
    assert lowered.a2._kernel_op.donated and lowered.b2._kernel_op.donated
    for x in data:
        got, want = lowered(x), reference(x)
        assert (got - want).abs().max() <= float(lowered.b2.scale) * 1.001
    # a donated module run outside its graph still never writes into an input that is also its conv input
    qx = qrand((2, 8, 6, 6), 0.02, 10, 1, channels_last=True, max_code=127)
    before = qx.int_repr().clone()
    lowered.b2(qx, qx)
    assert torch.equal(qx.int_repr(), before)


def reference_module_1d(relu: bool, cin: int, cout: int, kernel: int, stride: int, padding: int, dilation: int,
                        groups: int, seed: int) -> nn.Module:
    """A reference ConvAdd1d / ConvAddReLU1d with random per-channel symmetric int8 weights."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(cout, cin // groups, kernel, generator=g)
    scales = (torch.rand(cout, generator=g) * 0.02 + 0.005).double()
    qw = qcore.quantize_per_channel(w, scales, torch.zeros(cout, dtype=torch.long), 0, "int8")
    cls = ref_conv_add.ConvAddReLU1d if relu else ref_conv_add.ConvAdd1d
    m = cls(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    m.set_weight_bias(qw, torch.randn(cout, generator=g))
    m.set_output_qparams(0.05, 90, "uint8")
    return m


@settings(max_examples=15, deadline=None)
@given(relu=st.booleans(), groups=st.sampled_from([1, 2]), kernel=st.integers(1, 5), stride=st.integers(1, 2),
       dilation=st.integers(1, 2), length=st.integers(8, 40), seed=st.integers(0, 1000), data=st.data())
def test_1d_kernel_agrees_with_the_reference(relu, groups, kernel, stride, dilation, length, seed, data):
    padding = data.draw(st.integers(0, dilation * (kernel - 1)))
    ref = reference_module_1d(relu, 2 * groups, 4 * groups, kernel, stride, padding, dilation, groups, seed)
    module = (conv_add.ConvAddReLU1d if relu else conv_add.ConvAdd1d).from_reference(ref)
    assert module is not None
    out_len = (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    for n in (1, 3, 2):
        qx = qrand((n, 2 * groups, length), 0.03, 5, seed + n, max_code=127)
        qe = qrand((n, 4 * groups, out_len), 0.04, 120, seed + 10 + n)
        before = qe.int_repr().clone()
        got = module(qx, qe)
        assert type(got) is KernelQTensor and got.shape == (n, 4 * groups, out_len)
        assert (ints(got) - ints(ref(qx, qe))).abs().max() <= 1
        assert torch.equal(qe.int_repr(), before)


def test_1d_residual_block_in_fx_runs_on_the_kernel():
    import qcore.fx as qfx

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.relu = nn.Conv1d(8, 8, 3, padding=1), nn.ReLU()
            self.conv2 = nn.Conv1d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv2(self.relu(self.conv1(x))) + x)

    torch.manual_seed(0)
    model = Block().eval()
    g = torch.Generator().manual_seed(2)
    data = [torch.randn(4, 8, 64, generator=g) for _ in range(3)]
    with qcore.backend("fbgemm"):
        prepared = qfx.prepare_fx(model, qcore.get_default_qconfig_mapping("x86"), (data[0],))
        for x in data:
            prepared(x)
        lowered, reference = qfx.convert_fx(prepared), qfx.convert_to_reference_fx(prepared)
    assert type(lowered.conv2) is conv_add.ConvAddReLU1d
    for x in data:
        assert (lowered(x) - reference(x)).abs().max() <= float(lowered.conv2.scale) * 1.001
