"""qcore.qparams: the effective quant range and (scale, zero_point), bit-exact against torch.ao."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qcore import dtypes
from qcore.errors import ConfigError, ObserverError
from qcore.qparams import calculate_qparams, quant_range, validate_min_max
from qcore.quant_spec import QuantSpec

INT_DTYPES = (dtypes.uint8, dtypes.int8, dtypes.int32, dtypes.uint4)


def torch_ao():
    """torch.ao's observer and utils modules (the oracle), or skip when this torch has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import observer, utils
    except ImportError:
        pytest.skip("torch.ao.quantization is not available")
    return observer, utils


def spec_is_valid_for_torch(spec: QuantSpec) -> bool:
    # torch.ao refuses symmetric uint8 with reduce_range; qcore refuses it too (tested below).
    return not (spec.is_symmetric and spec.reduce_range and spec.dtype is dtypes.uint8)


def torch_observer(spec: QuantSpec):
    """A torch.ao observer configured like ``spec``, whose ``_calculate_qparams`` is the oracle."""
    observer, _ = torch_ao()
    cls = observer.PerChannelMinMaxObserver if spec.is_per_channel else observer.MinMaxObserver
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(
            dtype=dtypes.to_torch_dtype(spec.dtype),
            qscheme=dtypes.to_torch_qscheme(spec.qscheme),
            reduce_range=spec.reduce_range,
            quant_min=spec.quant_min,
            quant_max=spec.quant_max,
            eps=spec.eps,
        )


def assert_same_qparams(ours, theirs) -> None:
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype, (a, b)
        assert a.shape == b.shape, (a, b)
        assert torch.equal(a, b), (a, b)


# --- quant_range ------------------------------------------------------------------------


@st.composite
def specs(draw, per_channel: bool = False):
    dtype = draw(st.sampled_from(INT_DTYPES))
    if per_channel:
        qscheme = draw(st.sampled_from([dtypes.per_channel_affine, dtypes.per_channel_symmetric, dtypes.per_channel_affine_float_qparams]))
    else:
        qscheme = draw(st.sampled_from([dtypes.per_tensor_affine, dtypes.per_tensor_symmetric]))
    reduce_range = draw(st.booleans())
    quant_min = quant_max = None
    if draw(st.booleans()):
        quant_min = draw(st.integers(dtype.quant_min, 0))
        quant_max = draw(st.integers(max(quant_min + 1, 0), dtype.quant_max))
    eps = draw(st.sampled_from([QuantSpec().eps, 2**-12, 1e-5]))
    spec = QuantSpec(dtype, qscheme, quant_min, quant_max, reduce_range=reduce_range, eps=eps)
    if not spec_is_valid_for_torch(spec) or (quant_min is not None and reduce_range and quant_max // 2 <= quant_min // 2):
        spec = QuantSpec(dtype, qscheme, quant_min, quant_max, reduce_range=False, eps=eps)
    return spec


RANGE_CASES = [
    (dtype, custom)
    for dtype in INT_DTYPES
    for custom in (None, (0, 15), (0, 127), (-127, 127), (-8, 7), (-100, 20), (-1000, 1000))
    if custom is None or (dtype.quant_min <= custom[0] and custom[1] <= dtype.quant_max)
]


@pytest.mark.parametrize("dtype, custom", RANGE_CASES, ids=str)
@pytest.mark.parametrize("reduce_range", [False, True])
def test_quant_range_matches_torch_calculate_qmin_qmax(dtype, custom, reduce_range):
    _, utils = torch_ao()
    quant_min, quant_max = custom if custom else (None, None)
    spec = QuantSpec(dtype, quant_min=quant_min, quant_max=quant_max, reduce_range=reduce_range)
    expected = utils.calculate_qmin_qmax(quant_min, quant_max, custom is not None, dtypes.to_torch_dtype(dtype), reduce_range)
    assert quant_range(spec) == expected


@settings(max_examples=150, deadline=None)
@given(spec=specs())
def test_quant_range_property(spec):
    _, utils = torch_ao()
    expected = utils.calculate_qmin_qmax(
        spec.quant_min, spec.quant_max, spec.quant_min is not None, dtypes.to_torch_dtype(spec.dtype), spec.reduce_range
    )
    assert quant_range(spec) == expected


def test_quant_range_rejects_collapsed_range():
    with pytest.raises(ConfigError, match="fewer than two levels.*drop reduce_range"):
        quant_range(QuantSpec(dtypes.uint8, quant_min=0, quant_max=1, reduce_range=True))


def test_quant_range_int4_and_float():
    assert quant_range(QuantSpec(dtypes.int4)) == (-8, 7)
    assert quant_range(QuantSpec(dtypes.int4, reduce_range=True)) == (-8, 7)  # 4-bit ranges are never reduced
    with pytest.raises(ConfigError, match="no integer range"):
        quant_range(QuantSpec(dtypes.float16))


# --- calculate_qparams ------------------------------------------------------------------

finite32 = st.floats(-2.0**20, 2.0**20, allow_nan=False, width=32)
tiny32 = st.floats(-(2.0**-20), 2.0**-20, allow_nan=False, width=32)
value32 = st.one_of(finite32, tiny32, st.just(0.0))


@st.composite
def ranges(draw, n: int):
    lows, highs = [], []
    for _ in range(n):
        a, b = draw(value32), draw(value32)
        lows.append(min(a, b))
        highs.append(max(a, b))
    return torch.tensor(lows, dtype=torch.float32), torch.tensor(highs, dtype=torch.float32)


@settings(max_examples=200, deadline=None)
@given(spec=specs(), bounds=ranges(1))
def test_per_tensor_matches_torch_observer(spec, bounds):
    min_val, max_val = bounds[0][0], bounds[1][0]  # 0-d, as the per-tensor observers hold them
    ours = calculate_qparams(min_val, max_val, spec)
    theirs = torch_observer(spec)._calculate_qparams(min_val, max_val)
    assert_same_qparams(ours, theirs)
    assert ours[0].shape == (1,)


@settings(max_examples=150, deadline=None)
@given(spec=specs(per_channel=True), data=st.data())
def test_per_channel_matches_torch_observer(spec, data):
    n = data.draw(st.integers(1, 6))
    min_val, max_val = data.draw(ranges(n))
    ours = calculate_qparams(min_val, max_val, spec)
    theirs = torch_observer(spec)._calculate_qparams(min_val, max_val)
    assert_same_qparams(ours, theirs)
    assert ours[0].shape == (n,)


@settings(max_examples=150, deadline=None)
@given(spec=st.one_of(specs(), specs(per_channel=True)), data=st.data())
def test_matches_torch_determine_qparams(spec, data):
    if spec.qscheme is dtypes.per_channel_affine_float_qparams:
        return  # determine_qparams truncates the float zero point to int64; the observer oracle covers it
    _, utils = torch_ao()
    n = data.draw(st.integers(1, 4))
    min_val, max_val = data.draw(ranges(n))
    if not spec.is_per_channel:
        min_val, max_val = min_val[0], max_val[0]
    qmin, qmax = quant_range(spec)
    scale, zero_point = utils.determine_qparams(
        min_val, max_val, qmin, qmax, dtypes.to_torch_dtype(spec.dtype), torch.tensor([spec.eps]),
        spec.quant_min is not None, dtypes.to_torch_qscheme(spec.qscheme),
    )
    ours_scale, ours_zero_point = calculate_qparams(min_val, max_val, spec)
    assert torch.equal(ours_scale.double(), scale)
    assert torch.equal(ours_zero_point.long(), zero_point)


def test_known_values():
    spec = QuantSpec(dtypes.uint8)
    scale, zero_point = calculate_qparams(torch.tensor(-1.0), torch.tensor(3.0), spec)
    assert scale.item() == pytest.approx(4.0 / 255) and zero_point.tolist() == [64]
    assert zero_point.dtype == torch.int32
    # The range is widened to include zero: [2, 3] quantizes like [0, 3].
    scale, zero_point = calculate_qparams(torch.tensor(2.0), torch.tensor(3.0), spec)
    assert scale.item() == pytest.approx(3.0 / 255) and zero_point.tolist() == [0]
    # Symmetric uint8 puts zero at 128 (or the custom range's midpoint); int8 at 0.
    sym = QuantSpec(dtypes.uint8, dtypes.per_tensor_symmetric)
    assert calculate_qparams(torch.tensor(-1.0), torch.tensor(1.0), sym)[1].tolist() == [128]
    sym_custom = QuantSpec(dtypes.uint8, dtypes.per_tensor_symmetric, quant_min=0, quant_max=100)
    assert calculate_qparams(torch.tensor(-1.0), torch.tensor(1.0), sym_custom)[1].tolist() == [50]
    sym8 = QuantSpec(dtypes.int8, dtypes.per_tensor_symmetric)
    _, zero_point = calculate_qparams(torch.tensor(-1.0), torch.tensor(1.0), sym8)
    assert zero_point.tolist() == [0] and zero_point.dtype == torch.int64
    # A zero-width range gets the eps floor, not a zero scale.
    scale, _ = calculate_qparams(torch.tensor(0.0), torch.tensor(0.0), spec, eps=2**-12)
    assert scale.tolist() == [2**-12]


def test_float_qparams_zero_point_is_float():
    spec = QuantSpec(dtypes.uint8, dtypes.per_channel_affine_float_qparams)
    scale, zero_point = calculate_qparams(torch.tensor([1.0, -2.0]), torch.tensor([3.0, 2.0]), spec)
    assert zero_point.dtype == torch.float32
    assert torch.allclose(scale, torch.tensor([2.0 / 255, 4.0 / 255]))
    assert torch.allclose(zero_point, torch.tensor([-1.0 / (2.0 / 255), 2.0 / (4.0 / 255)]))
    # No range at all: scale falls back to 1.
    scale, _ = calculate_qparams(torch.tensor([5.0]), torch.tensor([5.0]), spec)
    assert scale.tolist() == [1.0]


# --- validation -------------------------------------------------------------------------


def test_no_data_raises_observer_error():
    spec = QuantSpec()
    with pytest.raises(ObserverError, match="saw no data.*calibration"):
        calculate_qparams(torch.tensor(float("inf")), torch.tensor(float("-inf")), spec)
    pc = QuantSpec(qscheme=dtypes.per_channel_affine)
    with pytest.raises(ObserverError, match="saw no data"):
        calculate_qparams(torch.tensor([]), torch.tensor([]), pc)


def test_bad_ranges_raise():
    spec = QuantSpec()
    with pytest.raises(ObserverError, match="greater than max_val"):
        calculate_qparams(torch.tensor(2.0), torch.tensor(1.0), spec)
    with pytest.raises(ObserverError, match="1 min/max value.*NaN or infinite"):
        calculate_qparams(torch.tensor(float("nan")), torch.tensor(1.0), spec)
    with pytest.raises(ConfigError, match="shape"):
        validate_min_max(torch.tensor([0.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ConfigError, match="per_channel qscheme"):
        calculate_qparams(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), spec)
    pc = QuantSpec(qscheme=dtypes.per_channel_symmetric)
    with pytest.raises(ConfigError, match="1-d"):
        calculate_qparams(torch.tensor(0.0), torch.tensor(1.0), pc)
    with pytest.raises(ConfigError, match="must be tensors"):
        validate_min_max(0.0, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no integer range"):
        calculate_qparams(torch.tensor(0.0), torch.tensor(1.0), QuantSpec(dtypes.float16))


def test_per_channel_error_names_positions():
    pc = QuantSpec(qscheme=dtypes.per_channel_affine)
    with pytest.raises(ObserverError, match=r"position\(s\) \[1\]"):
        calculate_qparams(torch.tensor([0.0, 3.0, 0.0]), torch.tensor([1.0, 2.0, 1.0]), pc)
