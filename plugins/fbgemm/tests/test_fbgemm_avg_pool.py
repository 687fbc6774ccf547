"""Average pooling on fbgemm: torch's quantized kernels on a kernel's output give QTensor's own integers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qcore
from qcore.qtensor import QTensor
from qcore.stubs import DeQuantStub, QuantStub

import _models

from qcore_fbgemm.static import STATIC_LOWERINGS, passthrough
from qcore_fbgemm.torch_quantized import KernelQTensor, from_torch, quiet

torch.set_num_threads(1)


def pair(shape, memory_format=torch.contiguous_format, qdtype=torch.quint8, zero_point=101, seed=0):
    """(KernelQTensor over a torch quantized tensor, the plain QTensor of the same integers and qparams)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3
    with quiet():
        tq = torch.quantize_per_tensor(x, 0.05, zero_point, qdtype).contiguous(memory_format=memory_format)
    plain = QTensor.from_int(tq.int_repr(), 0.05, zero_point, "uint8" if qdtype is torch.quint8 else "int8")
    return from_torch(tq), plain.contiguous(memory_format=memory_format)


CASES = [  # (op, input shape, memory format) ; each op runs on torch's kernel for this input
    (lambda t: F.avg_pool2d(t, 3, 2, 1, True, False), (2, 21, 9, 9), torch.contiguous_format),
    (lambda t: F.avg_pool2d(t, (2, 3), padding=(1, 1), divisor_override=5), (2, 21, 9, 9), torch.channels_last),
    (lambda t: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)(t), (2, 33, 7, 7), torch.channels_last),
    (lambda t: torch._C._nn.avg_pool2d(t, 2), (3, 8, 8), torch.contiguous_format),
    (lambda t: F.avg_pool1d(t, 3, 2, 1, True, False), (2, 17, 11), torch.contiguous_format),
    (lambda t: nn.AvgPool1d(2)(t), (2, 1, 11), torch.contiguous_format),
    (lambda t: F.avg_pool3d(t, (1, 2, 3), padding=(0, 1, 1)), (2, 18, 3, 5, 7), torch.contiguous_format),
    (lambda t: F.avg_pool3d(t, 2, divisor_override=3), (2, 18, 3, 5, 7), torch.channels_last_3d),
    (lambda t: F.adaptive_avg_pool2d(t, (1, 1)), (2, 40, 7, 7), torch.channels_last),
    (lambda t: nn.AdaptiveAvgPool2d((3, None))(t), (2, 21, 7, 6), torch.contiguous_format),
    (lambda t: torch._C._nn.adaptive_avg_pool2d(t, 4), (21, 7, 6), torch.contiguous_format),
    (lambda t: F.adaptive_avg_pool1d(t, 5), (2, 9, 7), torch.contiguous_format),
    (lambda t: F.adaptive_avg_pool3d(t, (2, 3, 4)), (2, 9, 4, 5, 7), torch.contiguous_format),
]


@pytest.mark.parametrize("index", range(len(CASES)))
@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8])
def test_kernel_path_equals_the_qtensor_handler(index, qdtype):
    op, shape, memory_format = CASES[index]
    kernel, plain = pair(shape, memory_format, qdtype, 101 if qdtype is torch.quint8 else -3, seed=index)
    ours, fast = op(plain), op(kernel)
    assert type(fast) is KernelQTensor  # torch's kernel ran
    assert torch.equal(fast.int_repr(), ours.int_repr())
    assert fast.q_scale() == ours.q_scale() and fast.q_zero_point() == ours.q_zero_point()


@pytest.mark.parametrize(
    "op,shape,memory_format",
    [  # where torch's kernels would give other integers, QTensor's own handler runs
        (lambda t: F.adaptive_avg_pool3d(t, (2, 3, 4)), (2, 17, 4, 5, 7), torch.channels_last_3d),
        (lambda t: F.adaptive_avg_pool2d(t, (3, 3)), (2, 8, 1, 1), torch.contiguous_format),
        (lambda t: F.avg_pool2d(t, 2, 1, 1), (2, 5, 1, 1), torch.contiguous_format),
        (lambda t: F.adaptive_avg_pool3d(t, 2), (8, 1, 1, 5), torch.contiguous_format),
        (lambda t: F.avg_pool3d(t, 2), (8, 4, 4, 4), torch.contiguous_format),
    ],
)
def test_inputs_torch_gets_wrong_run_the_qtensor_handler(op, shape, memory_format):
    kernel, plain = pair(shape, memory_format)
    fast = op(kernel)
    assert type(fast) is QTensor
    assert torch.equal(fast.int_repr(), op(plain).int_repr())


def test_the_qnnpack_engine_runs_the_qtensor_handler():
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("torch built without qnnpack")
    kernel, plain = pair((2, 8, 6, 6))
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "qnnpack"
    try:
        fast = F.avg_pool2d(kernel, 2)
    finally:
        torch.backends.quantized.engine = previous
    assert type(fast) is QTensor and torch.equal(fast.int_repr(), F.avg_pool2d(plain, 2).int_repr())


class PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = QuantStub()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.avg = nn.AvgPool2d(2, ceil_mode=True)
        self.avg1d = nn.AvgPool1d(3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, 4)
        self.dequant = DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avg(self.conv(self.quant(x)))  # (n, 16, 4, 4)
        x = self.avg1d(x.reshape(x.shape[0], 16, 16)).reshape(x.shape[0], 16, 7, 1)
        return self.dequant(self.fc(self.flatten(self.pool(x))))


def converted(backend: str) -> nn.Module:
    return _models.converted(PoolNet, (8, 3, 8, 8), backend)


def test_convert_lowers_average_pooling_with_the_same_results():
    lowered, reference = converted("fbgemm"), converted("reference")
    assert type(lowered.avg) is passthrough.AvgPool2d and type(lowered.avg1d) is passthrough.AvgPool1d
    assert type(lowered.pool) is passthrough.AdaptiveAvgPool2d and isinstance(lowered.pool, nn.AdaptiveAvgPool2d)
    assert type(reference.avg) is nn.AvgPool2d and type(reference.pool) is nn.AdaptiveAvgPool2d
    x = torch.rand(5, 3, 8, 8) * 2
    assert torch.equal(lowered(x), reference(x))
    y = lowered.conv(lowered.quant(x))
    assert type(y) is KernelQTensor and type(lowered.avg(y)) is KernelQTensor and type(lowered.pool(y)) is KernelQTensor
    assert type(lowered.pool.to_reference()) is nn.AdaptiveAvgPool2d


def test_lowered_average_pools_run_the_float_module_on_other_inputs():
    for cls, module, shape in [
        (passthrough.AvgPool3d, nn.AvgPool3d(2, divisor_override=3), (2, 3, 4, 4, 4)),
        (passthrough.AdaptiveAvgPool1d, nn.AdaptiveAvgPool1d(3), (2, 3, 7)),
        (passthrough.AdaptiveAvgPool3d, nn.AdaptiveAvgPool3d((1, 2, 3)), (2, 3, 4, 4, 4)),
    ]:
        lowered = STATIC_LOWERINGS[type(module)](module)
        assert type(lowered) is cls
        x = torch.randn(shape)
        assert torch.equal(lowered(x), module(x))
        q = qcore.quantize_per_tensor(x, 0.05, 3, "int8")  # not a kernel's output: QTensor's own average pool
        assert torch.equal(lowered(q).int_repr(), module(q).int_repr())
        kernel, plain = pair(shape)
        assert torch.equal(lowered(kernel).int_repr(), module(plain).int_repr())
