"""QDType/QScheme normalisation and QuantSpec validation and ranges (against torch.ao's rules)."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qcore import dtypes
from qcore.errors import ConfigError
from qcore.quant_spec import QuantSpec


@pytest.mark.parametrize(
    "value, expected",
    [
        (torch.quint8, dtypes.uint8), (torch.qint8, dtypes.int8), (torch.qint32, dtypes.int32),
        (torch.float16, dtypes.float16), (torch.quint4x2, dtypes.uint4), (torch.float32, dtypes.float32),
        ("int8", dtypes.int8), ("quint8", dtypes.uint8), ("torch.qint8", dtypes.int8), ("FP16", dtypes.float16),
        ("int4", dtypes.int4), (dtypes.int32, dtypes.int32),
    ],
)
def test_qdtype_accepts_torch_dtypes_and_strings(value, expected):
    assert dtypes.qdtype(value) is expected


@pytest.mark.parametrize("bad", ["int7", torch.bool, 3, None])
def test_unknown_dtype_lists_the_supported_ones(bad):
    with pytest.raises(ConfigError, match="use one of: .*int8"):
        dtypes.qdtype(bad)


def test_qscheme_accepts_torch_and_strings():
    assert dtypes.qscheme(torch.per_channel_symmetric) is dtypes.QScheme.PER_CHANNEL_SYMMETRIC
    assert dtypes.qscheme("per_tensor_affine").is_per_channel is False
    assert dtypes.qscheme("torch.per_channel_affine").is_per_channel
    with pytest.raises(ConfigError, match="per_tensor_affine"):
        dtypes.qscheme("per_row")


def test_torch_interop_round_trip():
    for torch_dtype in (torch.quint8, torch.qint8, torch.qint32, torch.float16):
        assert dtypes.to_torch_dtype(dtypes.qdtype(torch_dtype)) == torch_dtype
    assert dtypes.to_torch_qscheme("per_channel_affine") == torch.per_channel_affine


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(quant_min=5, quant_max=2), "greater than quant_max"),
        (dict(quant_min=1, quant_max=20), "must include 0"),
        (dict(dtype="int8", quant_min=-200, quant_max=100), "outside int8's range"),
        (dict(quant_min=0), "set both"),
        (dict(dtype="float16", qscheme="per_channel_affine"), "cannot use per_channel_affine"),
        (dict(eps=0.0), "eps must be positive"),
    ],
)
def test_invalid_specs_say_what_to_change(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        QuantSpec(**kwargs)


def _torch_qrange(quant_min, quant_max, dtype, reduce_range):
    from torch.ao.quantization.utils import calculate_qmin_qmax

    custom = quant_min is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calculate_qmin_qmax(quant_min, quant_max, custom, dtypes.to_torch_dtype(dtype), reduce_range)


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(["uint8", "int8", "int32"]),
    custom=st.booleans(),
    reduce_range=st.booleans(),
    data=st.data(),
)
def test_qrange_matches_torch_ao(dtype, custom, reduce_range, data):
    pytest.importorskip("torch.ao.quantization")
    d = dtypes.qdtype(dtype)
    quant_min = quant_max = None
    if custom:
        bound = 255 if d is not dtypes.int32 else 2**20
        lo_limit = max(d.quant_min, -bound)
        quant_min = data.draw(st.integers(lo_limit, 0))
        quant_max = data.draw(st.integers(0, min(d.quant_max, bound)))
        if dtype == "uint8" or dtype == "int8":
            # torch.ao keeps only the length, which must fit 8 bits.
            quant_max = min(quant_max, quant_min + 255)
    spec = QuantSpec(d, quant_min=quant_min, quant_max=quant_max, reduce_range=reduce_range)
    assert spec.qrange == tuple(_torch_qrange(quant_min, quant_max, d, reduce_range))


def test_spec_dict_round_trip():
    spec = QuantSpec(torch.qint8, torch.per_channel_symmetric, quant_min=-127, quant_max=127, ch_axis=1)
    data = spec.to_dict()
    assert data["dtype"] == "int8" and data["qscheme"] == "per_channel_symmetric"
    assert QuantSpec.from_dict(data) == spec


def test_dtypes_stay_singletons_through_copy_and_pickle():
    import copy
    import pickle

    for d in dtypes.ALL_QDTYPES:
        assert copy.deepcopy(d) is d and copy.copy(d) is d and pickle.loads(pickle.dumps(d)) is d
