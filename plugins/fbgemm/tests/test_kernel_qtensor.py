"""KernelQTensor (a QTensor that is torch's quantized kernel output) behaves as the QTensor of the same integers."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

import qcore
from qcore.qtensor import QTensor, integer_data

from qcore_fbgemm.torch_quantized import KernelQTensor, from_torch, to_torch

torch.set_num_threads(1)


def pair(qdtype=torch.quint8, shape=(2, 3, 4, 4), zero_point: int = 100):
    """(KernelQTensor over a torch quantized tensor, the plain QTensor of the same integers and qparams)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    zp = zero_point if qdtype is torch.quint8 else 3
    tq = torch.quantize_per_tensor(x, 0.05, zp, qdtype)
    kernel = from_torch(tq)
    plain = QTensor.from_int(tq.int_repr(), 0.05, zp, "uint8" if qdtype is torch.quint8 else "int8")
    return kernel, plain


@pytest.mark.parametrize("qdtype", [torch.quint8, torch.qint8])
def test_queries_answer_for_the_integers(qdtype):
    kernel, plain = pair(qdtype)
    assert type(kernel) is KernelQTensor and isinstance(kernel, QTensor)
    for query in ("dtype", "shape", "ndim", "device", "layout", "is_quantized", "qdtype"):
        assert getattr(kernel, query) == getattr(plain, query), query
    for method in ("size", "dim", "numel", "stride", "is_signed", "is_floating_point", "element_size",
                   "is_contiguous", "q_scale", "q_zero_point", "qscheme"):
        assert getattr(kernel, method)() == getattr(plain, method)(), method
    assert kernel.nbytes == plain.nbytes and len(kernel) == len(plain)
    assert torch.equal(kernel.int_repr(), plain.int_repr()) and kernel.int_repr().dtype == plain.int_repr().dtype
    assert torch.equal(kernel.dequantize(), plain.dequantize())
    assert repr(kernel) == repr(plain)


OPERATIONS = {
    "reshape": lambda t: t.reshape(6, 16),
    "flatten": lambda t: torch.flatten(t, 1),
    "permute": lambda t: t.permute(0, 2, 3, 1),
    "transpose": lambda t: t.transpose(1, 2),
    "index": lambda t: t[1, :, 1:3],
    "cat": lambda t: torch.cat([t, t], dim=1),
    "chunk": lambda t: torch.chunk(t, 3, dim=1)[2],
    "max_pool": lambda t: F.max_pool2d(t, 2),
    "relu": lambda t: F.relu(t),
    "to_int_repr": lambda t: t.int_repr(),
    "clone": lambda t: t.clone(),
    "contiguous_channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
}


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_operations_give_what_they_give_on_the_plain_qtensor(name):
    kernel, plain = pair()
    got, want = OPERATIONS[name](kernel), OPERATIONS[name](plain)
    if isinstance(want, QTensor):
        assert isinstance(got, QTensor)
        assert got.shape == want.shape and got.qdtype == want.qdtype
        assert torch.equal(got.int_repr(), want.int_repr()) and torch.equal(got.dequantize(), want.dequantize())
    else:
        assert torch.equal(got, want)


def test_in_place_changes_reach_the_torch_tensor_and_copy_drops_the_pairing():
    kernel, _ = pair(zero_point=128)
    tq = kernel._torch
    torch.relu_(kernel)  # the fast path: on the torch tensor, seen through the QTensor
    assert int(kernel.int_repr().min()) >= 128 and torch.equal(tq.int_repr(), kernel.int_repr())
    integer_data(kernel).fill_(7)  # the integers are the same memory
    assert int(tq.int_repr().max()) == 7
    other = qcore.quantize_per_tensor(torch.ones(2, 3, 4, 4), 0.5, 0, "uint8")
    kernel.copy_(other)  # new qparams: the torch tensor no longer describes it
    assert kernel.q_scale() == 0.5 and to_torch(kernel) is not tq
    assert torch.equal(to_torch(kernel).int_repr(), other.int_repr())


def test_copies_and_pickles_are_plain_qtensors_with_the_same_values():
    kernel, plain = pair()
    for clone in (copy.deepcopy(kernel), pickle.loads(pickle.dumps(kernel))):
        assert type(clone) is QTensor and torch.equal(clone.int_repr(), plain.int_repr())
        assert clone.q_scale() == plain.q_scale() and clone.q_zero_point() == plain.q_zero_point()


def test_unsupported_operations_raise_the_qtensor_error():
    kernel, _ = pair()
    with pytest.raises(qcore.QuantizationError, match="not supported on a quantized tensor"):
        torch.exp(kernel)
