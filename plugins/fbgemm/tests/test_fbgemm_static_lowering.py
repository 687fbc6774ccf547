"""convert() on the fbgemm backend: kernel-backed modules that save, load, copy, script and hide torch's warnings."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import qcore
from qcore.flow.eager import convert, fuse_modules, prepare
from qcore.nn.quantized.functional_modules import FloatFunctional
from qcore.qtensor import QTensor
from qcore.registry import get_registry
from qcore.stubs import DeQuantStub, QuantStub

from qcore_fbgemm.static import STATIC_LOWERINGS
from qcore_fbgemm.static.kernel import KernelModule, UnseenInputWarning
from qcore_fbgemm.torch_quantized import KernelQTensor

torch.set_num_threads(1)


class Net(nn.Module):
    """Quantize, conv+bn+relu, hardswish, a residual add, max-pool, flatten, linear, layer norm, sigmoid, dequantize."""

    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.skip = FloatFunctional()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * 4 * 4, 16)
        self.norm = nn.LayerNorm(16)
        self.out = nn.Sigmoid()
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(self.quant(x))))
        x = self.skip.add(x, self.act(self.conv2(x)))
        x = self.fc(self.flatten(self.pool(x)))
        return self.dequant(self.out(self.norm(x)))


def data(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 4 - 1


def prepared_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Net().eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    model.out.qconfig = qcore.qconfig.default_fixed_qparams_range_0to1_qconfig
    model = fuse_modules(model, [["conv", "bn", "relu"]])
    model = prepare(model)
    model(data(64, seed + 1))
    return model


@pytest.fixture(scope="module")
def prepared() -> nn.Module:
    return prepared_net()


@pytest.fixture(scope="module")
def reference(prepared) -> nn.Module:
    return convert(copy.deepcopy(prepared), is_reference=True)


@pytest.fixture()
def lowered(prepared) -> nn.Module:
    assert qcore.get_backend() == "fbgemm"
    return convert(copy.deepcopy(prepared))


def within_one_step(a: torch.Tensor, b: torch.Tensor, scale: float) -> bool:
    return bool(((a - b).abs() <= scale * 1.0001).all())


def kernel_names(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, KernelModule)}


def test_convert_gives_kernel_modules_agreeing_with_the_reference(lowered, reference):
    assert kernel_names(lowered) == {"quant", "conv", "conv2", "act", "skip", "fc", "norm", "out"}
    assert type(lowered.dequant).__module__.startswith("qcore_fbgemm")
    assert lowered._qcore_backend == "fbgemm"
    assert "engine=fbgemm" in repr(lowered.conv) and "QuantizedConvReLU2d" in repr(lowered.conv)
    for seed in range(3):
        x = data(8, seed + 10)
        assert within_one_step(lowered(x), reference(x), float(reference.out.scale))
    assert isinstance(lowered.fc(lowered.flatten(lowered.pool(lowered.conv(lowered.quant(data(2)))))), KernelQTensor)


def test_state_dict_is_the_reference_layout_and_reloads_repack(lowered, reference, prepared):
    ours, theirs = lowered.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    for key in ours:
        if isinstance(ours[key], torch.Tensor):
            assert torch.equal(ours[key], theirs[key]), key
        else:
            assert ours[key] == theirs[key], key
    # another calibration loaded into the lowered model: the kernels are repacked with it
    other = convert(prepared_net(seed=5), is_reference=True)
    lowered.load_state_dict(other.state_dict())
    x = data(8, 3)
    assert within_one_step(lowered(x), other(x), float(other.out.scale))


def test_assigning_qparams_or_weights_repacks(lowered, reference):
    x = data(4, 7)
    lowered(x)
    lowered.fc.scale = 0.5
    lowered.fc.zero_point = 3
    out = lowered.fc(lowered.flatten(lowered.pool(lowered.skip.add(*(2 * [lowered.conv(lowered.quant(x))])))))
    assert (out.q_scale(), out.q_zero_point()) == (0.5, 3)
    w = lowered.fc.weight()
    lowered.fc.set_weight_bias(qcore.quantize_per_tensor(torch.zeros(w.shape), 0.1, 0, "int8"), torch.zeros(16))
    assert bool((lowered.fc(qcore.quantize_per_tensor(torch.ones(1, 128), 0.1, 0, "uint8")).int_repr() == 3).all())


def test_reference_model_saved_with_qcore_save_loads_onto_the_kernels(tmp_path, reference):
    save = getattr(qcore, "save", None)
    if save is None:
        pytest.skip("qcore.save is not available")
    path = tmp_path / "net.qcore"
    with qcore.backend("reference"):
        save(reference, path)
    loaded = qcore.load(path, model=Net())
    assert kernel_names(loaded) == {"quant", "conv", "conv2", "act", "skip", "fc", "norm", "out"}
    x = data(8, 4)
    assert within_one_step(loaded(x), reference(x), float(reference.out.scale))


def test_a_lowered_model_saves_as_its_reference_form(tmp_path, lowered, reference):
    if getattr(qcore, "save", None) is None:
        pytest.skip("qcore.save is not available")
    x = data(8, 5)
    expected = lowered(x)
    qcore.save(lowered, tmp_path / "lowered.qcore")
    as_reference = qcore.load(tmp_path / "lowered.qcore", model=Net(), lower=False)
    assert not kernel_names(as_reference)
    assert type(as_reference.conv) is type(reference.conv)
    again = qcore.load(tmp_path / "lowered.qcore", model=Net())
    assert torch.equal(again(x), expected)


def test_to_reference_gives_back_the_reference_module(lowered, reference):
    for name, module in lowered.named_modules():
        if isinstance(module, KernelModule):
            back = module.to_reference()
            assert type(back) is type(dict(reference.named_modules())[name])
            assert not hasattr(back, "_kernel_op")
            assert back.state_dict().keys() == module.state_dict().keys()


def test_copies_and_pickles_run_the_same(lowered):
    x = data(4, 6)
    expected = lowered(x)
    for clone in (copy.deepcopy(lowered), pickle.loads(pickle.dumps(lowered))):
        assert torch.equal(clone(x), expected)
    buffer = io.BytesIO()
    torch.save(lowered, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), expected)


def test_torchscript_twins_run_the_kernels_on_the_recorded_grids(lowered):
    x = data(8, 8)
    expected = lowered(x)  # the eager run records each module's input grid
    scripted = torch.jit.script(lowered)
    assert torch.equal(scripted(x), expected)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    assert torch.equal(torch.jit.load(buffer)(x), expected)
    assert torch.equal(lowered(x), expected)  # the eager model still runs its kernels


def test_scripting_before_any_input_warns_and_uses_the_reference(prepared, reference):
    fresh = convert(copy.deepcopy(prepared))
    with pytest.warns(UnseenInputWarning, match="has not run on a quantized input yet"):
        scripted = torch.jit.script(fresh)
    x = data(8, 9)
    assert within_one_step(scripted(x), fresh(x), float(reference.out.scale))


def test_inputs_without_a_kernel_run_the_reference():
    linear = qcore.nn.quantized.Linear(4, 3)
    linear.set_weight_bias(qcore.quantize_per_tensor(torch.randn(3, 4), 0.02, 0, "int8"), torch.randn(3))
    linear.set_output_qparams(0.05, 0)
    kernel = STATIC_LOWERINGS[type(linear)](linear)
    int8_input = qcore.quantize_per_tensor(torch.randn(2, 4), 0.05, 0, "int8")
    assert torch.equal(kernel(int8_input).int_repr(), linear(int8_input).int_repr())
    vector = qcore.quantize_per_tensor(torch.rand(4), 0.05, 0, "uint8")
    assert torch.equal(kernel(vector).int_repr(), linear(vector).int_repr())
    kernel._qcore_name = "head.fc"
    with pytest.raises(qcore.QuantizationError, match="head.fc.*QuantStub"):
        kernel(torch.randn(2, 4))


def test_user_hooks_survive_lowering(prepared):
    seen = []
    model = copy.deepcopy(prepared)
    model.fc.register_forward_hook(lambda m, i, o: seen.append(o))
    lowered = convert(model)
    assert isinstance(lowered.fc, KernelModule)
    lowered(data(2))
    assert len(seen) == 1 and isinstance(seen[0], QTensor)


def test_the_users_quantized_engine_is_left_alone(prepared, reference):
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        model = convert(copy.deepcopy(prepared))
        x = data(8, 11)
        assert within_one_step(model(x), reference(x), float(reference.out.scale))
        assert torch.backends.quantized.engine == "qnnpack"
    finally:
        torch.backends.quantized.engine = previous


def test_eval_and_renaming_keep_the_packed_weights(lowered):
    lowered(data(2))
    packed = lowered.fc._kernel_op
    lowered.eval()
    lowered.fc._qcore_name = "renamed"
    lowered(data(2))
    assert lowered.fc._kernel_op is packed


def test_a_state_the_kernel_cannot_run_falls_back_to_the_reference(lowered):
    conv = lowered.conv2
    state = conv.state_dict()
    state["_extra_state"] = {**state["_extra_state"], "dtype": "int8", "quant_min": -128, "quant_max": 127}
    state["zero_point"] = torch.tensor(0)
    conv.load_state_dict(state)
    x = lowered.conv(lowered.quant(data(2)))
    out = conv(x)
    assert out.qdtype is qcore.int8 and not isinstance(out, KernelQTensor)
    assert torch.equal(out.int_repr(), conv.to_reference()(x).int_repr())


def test_big_symmetric_convolutions_also_pack_for_onednn():
    from qcore_fbgemm.static.packing import ONEDNN_MIN_MACS

    conv = qcore.nn.quantized.Conv2d(16, 32, 3, padding=1)
    w = torch.randn(32, 16, 3, 3)
    scales = (w.abs().amax(dim=(1, 2, 3)) / 127.5).double()
    conv.set_weight_bias(qcore.quantize_per_channel(w, scales, torch.zeros(32, dtype=torch.long), 0, "int8"), None)
    conv.set_output_qparams(0.1, 0)
    op = STATIC_LOWERINGS[type(conv)](conv)._kernel_op
    assert op.packed_onednn is not op.packed and op.onednn_min_macs == ONEDNN_MIN_MACS
    conv.set_weight_bias(qcore.quantize_per_tensor(w, 0.02, 3, "int8"), None)  # affine weights: fbgemm only
    op = STATIC_LOWERINGS[type(conv)](conv)._kernel_op
    assert op.packed_onednn is op.packed and op.onednn_min_macs == float("inf")


def test_dispatch_hooks_pack_and_run_static_kernels():
    hook = get_registry().hook
    w = qcore.quantize_per_tensor(torch.randn(3, 4), 0.02, 0, "int8")
    bias = torch.randn(3)
    packed = hook.qcore_pack_weight(backend="fbgemm", op="linear", weight=w, bias=bias, params={})
    kernel = hook.qcore_select_kernel(backend="fbgemm", op="linear", params={"input_dtype": "uint8"})
    x = qcore.quantize_per_tensor(torch.rand(2, 4), 0.01, 0, "uint8")
    reference = qcore.nn.quantized.Linear(4, 3)
    reference.set_weight_bias(w, bias)
    reference.set_output_qparams(0.05, 10)
    out = kernel(x, packed, 0.05, 10)
    assert isinstance(out, KernelQTensor)
    assert int((out.int_repr().int() - reference(x).int_repr().int()).abs().max()) <= 1
    conv_packed = hook.qcore_pack_weight(
        backend="fbgemm", op="conv2d", weight=torch.zeros(4, 2, 3, 3, dtype=torch.int8), bias=None,
        params={"scale": 0.1, "zero_point": 0, "axis": -1, "padding": (1, 1)},
    )
    conv = hook.qcore_select_kernel(backend="fbgemm", op="conv2d", params={})
    image = qcore.quantize_per_tensor(torch.rand(1, 2, 5, 5), 0.01, 0, "uint8")
    assert conv(image, conv_packed, 0.1, 7).shape == (1, 4, 5, 5)
    assert bool((conv(image, conv_packed, 0.1, 7).int_repr() == 7).all())
    assert isinstance(hook.qcore_lower_module(backend="fbgemm", module=reference), KernelModule)
    assert not isinstance(hook.qcore_lower_module(backend="reference", module=reference), KernelModule)


_FRESH_PROCESS = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("error")
    import torch
    import qcore
    from qcore.stubs import QuantStub, DeQuantStub
    from qcore.nn.quantized.functional_modules import FloatFunctional

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = QuantStub(), DeQuantStub()
            self.conv, self.fc, self.f = torch.nn.Conv2d(2, 4, 3), torch.nn.Linear(4 * 4 * 4, 5), FloatFunctional()
            self.act = torch.nn.Hardswish()

        def forward(self, x):
            x = self.act(self.conv(self.quant(x)))
            x = self.f.add(x, x)
            return self.dequant(self.fc(torch.flatten(torch.nn.functional.max_pool2d(x, 1), 1)))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = M().eval()
        m.qconfig = qcore.get_default_qconfig("fbgemm")
        p = qcore.prepare(m)
        p(torch.randn(4, 2, 6, 6))
        q = qcore.convert(p)
        y = q(torch.randn(3, 2, 6, 6))
        kind = type(q.conv).__module__
        torch.jit.script(q)  # torch warns that torch.jit.script itself is deprecated: not about quantized tensors
    print("backend", qcore.get_backend(), kind)
    print("warnings", [str(w.message)[:120] for w in caught if "quantiz" in str(w.message).lower()])
    """
)


def test_torch_deprecation_warnings_never_reach_the_user(tmp_path):
    script = tmp_path / "fresh.py"  # a file: TorchScript reads the model's source
    script.write_text(_FRESH_PROCESS)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend fbgemm qcore_fbgemm.static.conv" in result.stdout
    assert "warnings []" in result.stdout, result.stdout


def test_plugin_is_unavailable_without_the_quantized_kernels():
    code = textwrap.dedent(
        """
        import types, torch
        torch.ops.quantized = types.SimpleNamespace()  # a torch without quantized kernels
        from qcore.errors import PluginUnavailable
        try:
            import qcore_fbgemm.plugin
        except PluginUnavailable as exc:
            print("skipped:", exc.reason)
        import qcore
        from qcore.registry import list_plugins
        print("status", {p.name: p.status for p in list_plugins()}.get("fbgemm"))
        print("backend", qcore.get_backend())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "skipped: this torch build lacks the quantized kernels quantized::linear_prepack" in out
    assert "status skipped" in out
    assert "backend fbgemm" not in out


def test_a_scripted_model_reloaded_in_eager_mode_keeps_working(prepared, reference):
    model = convert(copy.deepcopy(prepared))
    x = data(8, 12)
    model(x)
    scripted = torch.jit.script(model)  # swaps twins into the eager model, which keeps running its kernels
    other = convert(prepared_net(seed=7), is_reference=True)
    model.load_state_dict(other.state_dict())
    assert within_one_step(model(x), other(x), float(other.out.scale))
    assert within_one_step(scripted(x), reference(x), float(reference.out.scale))
    rescripted = torch.jit.script(model)  # the twins hold the old input grids: off-grid inputs run the reference
    assert within_one_step(rescripted(x), other(x), float(other.out.scale))
