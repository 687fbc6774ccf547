"""onednn packings per input shape, and the max-pool / flatten modules convert lowers on fbgemm."""

from __future__ import annotations

import torch
from torch import nn

import qcore
from qcore.flow.eager import convert, prepare
from qcore.stubs import DeQuantStub, QuantStub

import _models

from qcore_fbgemm.static import STATIC_LOWERINGS, passthrough
from qcore_fbgemm.static.ops import ONEDNN_SHAPES_PER_MODULE
from qcore_fbgemm.torch_quantized import KernelQTensor

torch.set_num_threads(1)


def symmetric_conv(cin: int = 16, cout: int = 32) -> nn.Module:
    conv = qcore.nn.quantized.Conv2d(cin, cout, 3, padding=1)
    w = torch.randn(cout, cin, 3, 3, generator=torch.Generator().manual_seed(0))
    scales = (w.abs().amax(dim=(1, 2, 3)) / 127.5).double()
    conv.set_weight_bias(qcore.quantize_per_channel(w, scales, torch.zeros(cout, dtype=torch.long), 0, "int8"),
                         torch.randn(cout))
    conv.set_output_qparams(0.2, 64)
    return conv


def qinput(batch: int, cin: int = 16) -> qcore.QTensor:
    x = torch.rand(batch, cin, 8, 8, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    return qcore.quantize_per_tensor(x, 2 / 255, 128, "uint8")


def test_each_input_shape_gets_its_own_onednn_packing_up_to_the_limit():
    ref = symmetric_conv()
    kernel = STATIC_LOWERINGS[type(ref)](ref)
    batches = [8, 16, 24, 32, 40, 48]  # all above the onednn threshold (512 output pixels)
    for batch in batches + batches:  # the second pass finds every packing made in the first
        x = qinput(batch)
        out = kernel(x)
        expected = ref(x)
        diff = (out.int_repr().int() - expected.int_repr().int()).abs().max()
        assert int(diff) <= 1, batch
    op = kernel._kernel_op
    assert len(op.onednn_by_shape) == ONEDNN_SHAPES_PER_MODULE
    shapes = {key[0][0] for key in op.onednn_by_shape}
    assert shapes == set(batches[:ONEDNN_SHAPES_PER_MODULE])
    packings = list(op.onednn_by_shape.values())
    assert len({id(p) for p in packings}) == len(packings) and all(p is not op.packed_onednn for p in packings)


def test_small_inputs_run_fbgemm_and_make_no_onednn_packing():
    ref = symmetric_conv()
    kernel = STATIC_LOWERINGS[type(ref)](ref)
    x = qinput(1)
    assert torch.equal(kernel(x).int_repr(), ref(x).int_repr())
    assert kernel._kernel_op.onednn_by_shape == {}


def test_thread_count_is_part_of_the_packing_key():
    ref = symmetric_conv()
    kernel = STATIC_LOWERINGS[type(ref)](ref)
    x = qinput(16)
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            kernel(x)
    finally:
        torch.set_num_threads(previous)
    assert {key[1] for key in kernel._kernel_op.onednn_by_shape} == {1, 2}


class PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.pool1d = nn.MaxPool1d(2)
        self.flatten = nn.Flatten()
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.conv(self.quant(x)))  # (n, 4, 4, 4)
        x = self.pool1d(x.reshape(x.shape[0], 4, 16))
        return self.dequant(self.flatten(x))


def converted(backend: str) -> nn.Module:
    return _models.converted(PoolNet, (8, 1, 8, 8), backend)


def test_convert_lowers_pooling_and_flatten_in_the_quantized_region_with_the_same_results():
    lowered, reference = converted("fbgemm"), converted("reference")
    assert type(lowered.pool) is passthrough.MaxPool2d and type(lowered.pool1d) is passthrough.MaxPool1d
    assert type(lowered.flatten) is passthrough.Flatten
    assert type(reference.pool) is nn.MaxPool2d and type(reference.flatten) is nn.Flatten
    assert isinstance(lowered.pool, nn.MaxPool2d)  # still the float class for isinstance checks
    x = torch.rand(5, 1, 8, 8) * 2
    assert torch.equal(lowered(x), reference(x))
    y = lowered.conv(lowered.quant(x))
    assert type(y) is KernelQTensor and type(lowered.pool(y)) is KernelQTensor


def test_lowered_pooling_runs_the_float_module_on_other_inputs():
    pool = converted("fbgemm").pool
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(pool(x), nn.MaxPool2d(2)(x))
    q = qcore.quantize_per_tensor(x, 0.05, 3, "int8")  # not a kernel's output: QTensor's own max pool
    assert torch.equal(pool(q).int_repr(), nn.MaxPool2d(2)(q).int_repr())


def test_pooling_with_indices_and_float_modules_outside_the_region_stay_as_they_are():
    assert STATIC_LOWERINGS[nn.MaxPool2d](nn.MaxPool2d(2, return_indices=True)) is None
    model = PoolNet().eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    model.flatten.qconfig = None
    prepared = prepare(model)
    prepared(torch.rand(2, 1, 8, 8))
    with qcore.backend("fbgemm"):
        quantized = convert(prepared)
    assert type(quantized.flatten) is nn.Flatten


def test_lowered_pooling_saves_as_float_modules_loads_lowered_and_scripts(tmp_path):
    model = converted("fbgemm")
    x = torch.rand(3, 1, 8, 8)
    expected = model(x)
    path = tmp_path / "pool.qcore"
    qcore.save(model, path)
    with qcore.backend("reference"):
        assert type(qcore.load(path, classes=[PoolNet]).pool) is nn.MaxPool2d
    with qcore.backend("fbgemm"):
        loaded = qcore.load(path, classes=[PoolNet])
    assert type(loaded.pool) is passthrough.MaxPool2d and type(loaded.flatten) is passthrough.Flatten
    assert torch.equal(loaded(x), expected)
    scripted = torch.jit.script(model)
    assert torch.equal(scripted(x), expected)


def test_flatten_keeps_the_kernel_pairing():
    model = converted("fbgemm")
    y = model.pool(model.conv(model.quant(torch.rand(2, 1, 8, 8))))
    flat = model.flatten(y)
    assert type(flat) is KernelQTensor and flat.shape == (2, 64)
    assert torch.equal(flat.int_repr(), y.int_repr().flatten(1))
