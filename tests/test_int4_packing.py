"""Packing 4-bit values two per byte: layout, round trips, and torch's quint4x2 bytes."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qcore import dtypes
from qcore.int4_packing import pack_int4, packed_length, unpack_int4
from qcore.errors import QuantizationError


def test_layout_low_nibble_first_and_odd_lengths_padded():
    packed = pack_int4(torch.tensor([[1, 2, 3], [15, 0, 7]], dtype=torch.uint8))
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x21, 0x03], [0x0F, 0x07]]


def test_int4_is_twos_complement_nibbles():
    values = torch.tensor([-8, -1, 0, 7], dtype=torch.int8)
    assert pack_int4(values, dtypes.int4).tolist() == [0xF8, 0x70]
    assert unpack_int4(torch.tensor([0xF8, 0x70], dtype=torch.uint8), 4, "int4").tolist() == [-8, -1, 0, 7]


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3).map(tuple),
    qdtype=st.sampled_from([dtypes.uint4, dtypes.int4]),
    int_dtype=st.sampled_from([torch.uint8, torch.int8, torch.int32, torch.int64]),
)
def test_round_trip(data, shape, qdtype, int_dtype):
    lo, hi = qdtype.quant_min, qdtype.quant_max
    if int_dtype == torch.uint8:
        lo = max(lo, 0)
    n = 1
    for size in shape:
        n *= size
    values = torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), dtype=int_dtype).reshape(shape)
    packed = pack_int4(values, qdtype)
    assert packed.shape == (*shape[:-1], packed_length(shape[-1]))
    out = unpack_int4(packed, shape[-1], qdtype)
    assert out.dtype == (torch.int8 if qdtype is dtypes.int4 else torch.uint8)
    assert torch.equal(out.to(torch.int64), values.to(torch.int64))


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.integers(0, 15), min_size=1, max_size=33), scale=st.sampled_from([1.0, 0.5, 2.0]))
def test_matches_torch_quint4x2_bytes(values, scale):
    if not hasattr(torch, "quint4x2"):
        pytest.skip("torch.quint4x2 is not available")
    x = torch.tensor(values, dtype=torch.float32) * scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.quantize_per_tensor(x, scale, 0, torch.quint4x2).int_repr()
    # torch packs the flattened tensor; along the last dimension of a 1-d tensor that is the same.
    assert torch.equal(pack_int4(torch.tensor(values, dtype=torch.uint8)), ref)
    if len(values) % 2 == 0:
        two_rows = torch.tensor(values + values, dtype=torch.uint8).reshape(2, -1)
        assert torch.equal(pack_int4(two_rows).reshape(-1), torch.cat([ref, ref]))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: pack_int4(torch.tensor([16], dtype=torch.int32)), r"outside uint4's range"),
        (lambda: pack_int4(torch.tensor([-9], dtype=torch.int32), "int4"), r"outside int4's range"),
        (lambda: pack_int4(torch.tensor([1.0])), "integer tensor"),
        (lambda: pack_int4(torch.tensor(3, dtype=torch.uint8)), "0-d"),
        (lambda: pack_int4(torch.tensor([1], dtype=torch.uint8), "uint8"), "uint4 or int4"),
        (lambda: unpack_int4(torch.tensor([1], dtype=torch.int8)), "uint8 tensor"),
        (lambda: unpack_int4(torch.tensor([1, 2], dtype=torch.uint8), 7), "does not fit 2 packed bytes"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(QuantizationError, match=message):
        call()
