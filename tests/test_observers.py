"""The min/max observers against torch.ao (bit-exact), plus state dicts, errors, factories and defaults."""

from __future__ import annotations

import functools
import io
import warnings
from typing import Any, Callable

import pytest
import torch

import qcore.observers as qobs
from qcore import dtypes
from qcore.dtypes import QScheme
from qcore.errors import ConfigError, ObserverError
from qcore.factory import Factory
from qcore.observers import (
    CORE_OBSERVERS,
    FixedQParamsObserver,
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    NoopObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    RecordingObserver,
    ReuseInputObserver,
)
from qcore.quant_spec import QuantSpec

torch.set_num_threads(1)


def torch_ao():
    """torch.ao's observer module (the oracle), or skip when this torch has none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import observer
    except ImportError:
        pytest.skip("torch.ao.quantization is not available")
    return observer


def to_torch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    if "dtype" in out:
        out["dtype"] = dtypes.to_torch_dtype(out["dtype"])
    if "qscheme" in out:
        out["qscheme"] = dtypes.to_torch_qscheme(out["qscheme"])
    return out


def torch_twin(cls: type, kwargs: dict[str, Any]):
    """The torch.ao observer of the same name and configuration."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(torch_ao(), cls.__name__)(**to_torch_kwargs(kwargs))


def feed(observer, batches) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x in batches:
            assert observer(x) is x


def assert_same_qparams(ours, theirs) -> None:
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape, (a, b)
        assert torch.equal(a, b), (a, b)


# --- data: random with outliers, real digits, conv activations ---------------------------


def normal_with_outliers() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(4):
        x = torch.randn(4, 6, 5, 5, generator=g) * (1 + i) + 0.3 * i
        where = torch.randint(0, x.numel(), (3,), generator=g)
        x.view(-1)[where] = torch.tensor([25.0, -40.0, 60.0]) * (i + 1) / 2
        batches.append(x)
    return batches


@functools.lru_cache(maxsize=None)
def digit_images() -> torch.Tensor:
    datasets = pytest.importorskip("sklearn.datasets")
    data = torch.tensor(datasets.load_digits().data[:256], dtype=torch.float32) / 16.0
    return data.reshape(-1, 1, 8, 8)


def digits() -> list[torch.Tensor]:
    images = digit_images()
    return [images[i : i + 64] for i in range(0, 256, 64)]


def conv_activations(relu: bool) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 1, 3, 3, generator=g) * 0.5
    bias = torch.randn(6, generator=g) * 0.1
    images = digit_images()
    images = (images - images.mean()) / images.std()
    out = []
    for i in range(0, 256, 64):
        y = torch.nn.functional.conv2d(images[i : i + 64], weight, bias)
        out.append(torch.relu(y) if relu else y)
    return out


DATASETS: dict[str, Callable[[], list[torch.Tensor]]] = {
    "normal_outliers": normal_with_outliers,
    "digits": digits,
    "conv": lambda: conv_activations(relu=False),
    "conv_relu": lambda: conv_activations(relu=True),
}

# --- configurations (qcore spellings; torch_twin converts them) ---------------------------

u8, i8, i32, u4 = dtypes.uint8, dtypes.int8, dtypes.int32, dtypes.uint4
aff, sym = dtypes.per_tensor_affine, dtypes.per_tensor_symmetric
pc_aff, pc_sym, pc_float = dtypes.per_channel_affine, dtypes.per_channel_symmetric, dtypes.per_channel_affine_float_qparams

PER_TENSOR = [
    {},
    {"dtype": i8},
    {"dtype": i8, "qscheme": sym},
    {"dtype": u8, "qscheme": sym},
    {"dtype": i32},
    {"dtype": i32, "qscheme": sym},
    {"reduce_range": True},
    {"dtype": i8, "reduce_range": True},
    {"dtype": i8, "qscheme": sym, "reduce_range": True},
    {"dtype": i32, "reduce_range": True},
    {"quant_min": 0, "quant_max": 127},
    {"qscheme": sym, "quant_min": 0, "quant_max": 127},
    {"dtype": i8, "qscheme": sym, "quant_min": -127, "quant_max": 127, "eps": 2**-12},
    {"dtype": i8, "quant_min": -8, "quant_max": 7},
    {"dtype": i8, "quant_min": -100, "quant_max": 20, "reduce_range": True},
    {"quant_min": 0, "quant_max": 15, "reduce_range": True},
    {"dtype": i32, "quant_min": -1000, "quant_max": 1000},
    {"dtype": u4},
    {"dtype": u4, "qscheme": sym},
]

PER_CHANNEL = [
    {},
    {"dtype": i8, "qscheme": pc_sym},
    {"dtype": u8, "qscheme": pc_sym},
    {"dtype": u8, "qscheme": pc_float},
    {"dtype": u4, "qscheme": pc_float},
    {"dtype": i32, "qscheme": pc_sym},
    {"dtype": i8, "qscheme": pc_sym, "reduce_range": True},
    {"dtype": i8, "qscheme": pc_sym, "quant_min": -127, "quant_max": 127, "eps": 2**-12},
    {"dtype": i8, "quant_min": -8, "quant_max": 7},
]


def config_id(kwargs: dict[str, Any]) -> str:
    return "-".join(f"{k}={getattr(v, 'name', getattr(v, 'value', v))}" for k, v in kwargs.items()) or "default"


def check_against_torch(cls: type, kwargs: dict[str, Any], batches: list[torch.Tensor]) -> None:
    ours, theirs = cls(**kwargs), torch_twin(cls, kwargs)
    feed(ours, batches)
    feed(theirs, batches)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    assert (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("kwargs", PER_TENSOR, ids=config_id)
def test_minmax_matches_torch(kwargs, data):
    check_against_torch(MinMaxObserver, kwargs, DATASETS[data]())


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("averaging_constant", [0.01, 0.5, 1.0])
@pytest.mark.parametrize("kwargs", [{}, {"dtype": i8, "qscheme": sym}, {"quant_min": 0, "quant_max": 127}, {"dtype": i32}], ids=config_id)
def test_moving_average_matches_torch(kwargs, averaging_constant, data):
    check_against_torch(MovingAverageMinMaxObserver, {**kwargs, "averaging_constant": averaging_constant}, DATASETS[data]())


def test_moving_average_dynamic_matches_torch():
    kwargs = {"averaging_constant": 1, "is_dynamic": True, "dtype": u8, "quant_min": 0, "quant_max": 255}
    check_against_torch(MovingAverageMinMaxObserver, kwargs, normal_with_outliers())
    assert MovingAverageMinMaxObserver(**kwargs).is_dynamic


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("kwargs", PER_CHANNEL, ids=config_id)
def test_per_channel_matches_torch(kwargs, data):
    check_against_torch(PerChannelMinMaxObserver, {**kwargs, "ch_axis": 1}, DATASETS[data]())


@pytest.mark.parametrize("ch_axis", [0, 1, 2, -1, 3])
@pytest.mark.parametrize("kwargs", [{}, {"dtype": i8, "qscheme": pc_sym}, {"dtype": u8, "qscheme": pc_float}], ids=config_id)
def test_per_channel_axes_match_torch(kwargs, ch_axis):
    check_against_torch(PerChannelMinMaxObserver, {**kwargs, "ch_axis": ch_axis}, conv_activations(relu=False))


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("averaging_constant", [0.01, 0.5])
@pytest.mark.parametrize("kwargs", [{"ch_axis": 1}, {"dtype": i8, "qscheme": pc_sym, "ch_axis": -1}, {"dtype": u4, "qscheme": pc_float, "ch_axis": 0}], ids=config_id)
def test_moving_average_per_channel_matches_torch(kwargs, averaging_constant, data):
    check_against_torch(MovingAveragePerChannelMinMaxObserver, {**kwargs, "averaging_constant": averaging_constant}, DATASETS[data]())


def test_weights_observed_per_output_channel_match_torch():
    """A Linear weight, as the weight observers see it at convert time."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(16, 32, generator=g) * torch.linspace(0.01, 2.0, 16).unsqueeze(1)
    for cls, kwargs in [
        (PerChannelMinMaxObserver, {"dtype": i8, "qscheme": pc_sym}),
        (MinMaxObserver, {"dtype": i8, "qscheme": sym}),
        (PerChannelMinMaxObserver, {"dtype": u8, "qscheme": pc_float}),
    ]:
        check_against_torch(cls, kwargs, [weight])


# --- configuration surface ---------------------------------------------------------------


def test_attributes_follow_the_spec():
    obs = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, reduce_range=True, eps=2**-10)
    assert obs.dtype is dtypes.int8 and obs.qscheme is QScheme.PER_TENSOR_SYMMETRIC
    assert (obs.quant_min, obs.quant_max) == (-64, 63)
    assert obs.reduce_range and not obs.is_dynamic and not obs.has_customized_qrange
    assert obs.eps.tolist() == [2**-10]
    assert obs.spec == QuantSpec(dtypes.int8, dtypes.per_tensor_symmetric, reduce_range=True, eps=2**-10)
    pc = PerChannelMinMaxObserver(ch_axis=1, dtype="qint8", qscheme="per_channel_symmetric")
    assert pc.ch_axis == 1 and pc.spec.ch_axis == 1 and pc.qscheme is QScheme.PER_CHANNEL_SYMMETRIC
    pc.ch_axis = 0
    assert pc.spec.ch_axis == 0


def test_strings_and_torch_values_are_equivalent():
    a = MinMaxObserver(dtype="int8", qscheme="per_tensor_symmetric")
    b = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    c = MinMaxObserver(dtype=dtypes.int8, qscheme=QScheme.PER_TENSOR_SYMMETRIC)
    assert a.spec == b.spec == c.spec


def test_setters_revalidate():
    obs = MinMaxObserver()
    obs.dtype = "int8"
    assert obs.dtype is dtypes.int8 and (obs.quant_min, obs.quant_max) == (-128, 127)
    with pytest.raises(ConfigError, match="PerChannelMinMaxObserver"):
        obs.qscheme = torch.per_channel_affine
    assert obs.qscheme is QScheme.PER_TENSOR_AFFINE


def test_forward_returns_input_and_keeps_autograd():
    obs = MinMaxObserver()
    x = torch.randn(3, 4, requires_grad=True)
    y = obs(x)
    assert y is x
    y.sum().backward()
    assert x.grad is not None and not obs.min_val.requires_grad


def test_empty_input_is_ignored():
    for obs in (MinMaxObserver(), PerChannelMinMaxObserver(), HistogramObserver(bins=8)):
        x = torch.empty(0, 3)
        assert obs(x) is x
        with pytest.raises(ObserverError, match="saw no data"):
            obs.calculate_qparams()


def test_reset_min_max_vals():
    for obs in (MinMaxObserver(), MovingAverageMinMaxObserver(), PerChannelMinMaxObserver()):
        obs(torch.randn(2, 3))
        obs.reset_min_max_vals()
        with pytest.raises(ObserverError, match="saw no data"):
            obs.calculate_qparams()
    pc = PerChannelMinMaxObserver()
    pc(torch.randn(2, 3))
    pc.reset_min_max_vals()
    pc(torch.randn(5, 3))  # a new channel count is fine after a reset
    assert pc.min_val.shape == (5,)


def test_extra_repr_names_config_and_range():
    obs = PerChannelMinMaxObserver(ch_axis=1, dtype="int8", qscheme="per_channel_symmetric")
    obs(torch.tensor([[-1.0, 2.0]]))
    text = repr(obs)
    assert "dtype=int8" in text and "per_channel_symmetric" in text and "ch_axis=1" in text and "min_val" in text
    assert "averaging_constant=0.5" in repr(MovingAverageMinMaxObserver(0.5))


# --- with_args and the named defaults -----------------------------------------------------


def test_with_args_returns_factory():
    factory = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    assert isinstance(factory, Factory)
    first, second = factory(), factory()
    assert isinstance(first, MinMaxObserver) and first is not second
    assert first.dtype is dtypes.int8 and first.qscheme is QScheme.PER_TENSOR_SYMMETRIC
    assert factory.with_args(reduce_range=True)().reduce_range
    assert factory == MinMaxObserver.with_args(qscheme=torch.per_tensor_symmetric, dtype=torch.qint8)
    assert FixedQParamsObserver.with_args(scale=0.5, zero_point=3)().zero_point.tolist() == [3]
    assert HistogramObserver.with_args(bins=64)().bins == 64


DEFAULT_NAMES = [
    "default_observer",
    "default_placeholder_observer",
    "default_debug_observer",
    "default_weight_observer",
    "weight_observer_range_neg_127_to_127",
    "default_histogram_observer",
    "default_per_channel_weight_observer",
    "per_channel_weight_observer_range_neg_127_to_127",
    "default_dynamic_quant_observer",
    "default_float_qparams_observer",
    "default_float_qparams_observer_4bit",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_fixed_qparams_range_0to1_observer",
    "default_symmetric_fixed_qparams_observer",
    "default_affine_fixed_qparams_observer",
    "default_reuse_input_observer",
]


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_named_defaults_match_torch(name):
    ours_factory = getattr(qobs, name)
    assert isinstance(ours_factory, Factory) and name in qobs.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(torch_ao(), name)()
    ours = ours_factory()
    assert type(ours).__name__ == type(theirs).__name__
    assert dtypes.to_torch_dtype(ours.dtype) == theirs.dtype
    assert ours.is_dynamic == theirs.is_dynamic
    if hasattr(theirs, "qscheme"):
        assert dtypes.to_torch_qscheme(ours.qscheme) == theirs.qscheme
    if getattr(theirs, "quant_min", None) is not None:
        assert (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max)
    if isinstance(getattr(theirs, "eps", None), torch.Tensor):
        assert torch.equal(ours.eps, theirs.eps)
    if isinstance(theirs, torch_ao().FixedQParamsObserver):
        assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams())
    if isinstance(theirs, torch_ao().UniformQuantizationObserverBase) and not isinstance(theirs, torch_ao().HistogramObserver):
        batches = conv_activations(relu=False)
        feed(ours, batches)
        feed(theirs, batches)
        assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


def test_core_observers_table():
    assert set(CORE_OBSERVERS) >= {
        "minmax", "moving_average_minmax", "per_channel_minmax", "moving_average_per_channel_minmax",
        "histogram", "placeholder", "noop", "fixed_qparams", "reuse_input",
    }
    assert all(isinstance(cls, type) and issubclass(cls, ObserverBase) for cls in CORE_OBSERVERS.values())
    assert CORE_OBSERVERS["minmax"] is MinMaxObserver and CORE_OBSERVERS["histogram"] is HistogramObserver


# --- state dicts -------------------------------------------------------------------------

STATEFUL = [
    (MinMaxObserver, {}),
    (MovingAverageMinMaxObserver, {"averaging_constant": 0.5}),
    (PerChannelMinMaxObserver, {"ch_axis": 1, "dtype": i8, "qscheme": pc_sym}),
    (MovingAveragePerChannelMinMaxObserver, {"ch_axis": 1}),
    (HistogramObserver, {"bins": 64}),
]


@pytest.mark.parametrize("cls, kwargs", STATEFUL, ids=lambda v: getattr(v, "__name__", ""))
def test_state_dict_round_trip(cls, kwargs):
    batches = conv_activations(relu=True)
    source = cls(**kwargs)
    feed(source, batches)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = cls(**kwargs)
    target.load_state_dict(torch.load(buffer))
    assert_same_qparams(target.calculate_qparams(), source.calculate_qparams())
    # Calibration continues from the loaded statistics exactly as it would have.
    feed(source, batches[:1])
    feed(target, batches[:1])
    assert_same_qparams(target.calculate_qparams(), source.calculate_qparams())


@pytest.mark.parametrize("cls, kwargs", STATEFUL, ids=lambda v: getattr(v, "__name__", ""))
def test_state_dict_interchanges_with_torch(cls, kwargs):
    batches = normal_with_outliers()
    theirs = torch_twin(cls, kwargs)
    feed(theirs, batches)
    ours = cls(**kwargs)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams())
        back = torch_twin(cls, kwargs)
        back.load_state_dict(ours.state_dict())
        assert_same_qparams(back.calculate_qparams(), theirs.calculate_qparams())


def test_fixed_qparams_state_dict_matches_torch():
    theirs = torch_twin(FixedQParamsObserver, {"scale": 0.25, "zero_point": 7})
    ours = FixedQParamsObserver(0.5, 1)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    assert_same_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


def test_histogram_state_dict_with_other_bins_is_refused():
    source = HistogramObserver(bins=32)
    source(torch.randn(10))
    with pytest.raises(RuntimeError, match="construct it with bins=32"):
        HistogramObserver(bins=64).load_state_dict(source.state_dict())


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MinMaxObserver(qscheme=torch.per_channel_affine), "use PerChannelMinMaxObserver"),
        (lambda: MovingAverageMinMaxObserver(qscheme="per_channel_symmetric"), "use PerChannelMinMaxObserver"),
        (lambda: HistogramObserver(qscheme=torch.per_channel_symmetric), "use PerChannelMinMaxObserver"),
        (lambda: PerChannelMinMaxObserver(qscheme=torch.per_tensor_affine), "use MinMaxObserver"),
        (lambda: MovingAveragePerChannelMinMaxObserver(qscheme="per_tensor_symmetric"), "use MinMaxObserver"),
        (lambda: MinMaxObserver(quant_min=10, quant_max=5), "swap them"),
        (lambda: MinMaxObserver(quant_min=5, quant_max=10), "must include 0"),
        (lambda: MinMaxObserver(quant_min=0, quant_max=0), "fewer than two levels"),
        (lambda: MinMaxObserver(quant_min=0), "set both quant_min and quant_max"),
        (lambda: MinMaxObserver(dtype=torch.qint8, quant_min=-200, quant_max=100), "outside int8's range"),
        (lambda: MinMaxObserver(dtype=torch.float16), "use PlaceholderObserver"),
        (lambda: PerChannelMinMaxObserver(dtype="float32", qscheme="per_tensor_affine"), "float dtype"),
        (lambda: MinMaxObserver(dtype="int9"), "unsupported quantized dtype"),
        (lambda: MinMaxObserver(qscheme="per_block"), "unsupported qscheme"),
        (lambda: MinMaxObserver(qscheme=torch.per_tensor_symmetric, reduce_range=True), "drop reduce_range"),
        (lambda: MinMaxObserver(eps=0.0), "eps must be positive"),
        (lambda: PerChannelMinMaxObserver(is_dynamic=True), "PlaceholderObserver"),
        (lambda: MovingAveragePerChannelMinMaxObserver(is_dynamic=True), "dynamic"),
        (lambda: HistogramObserver(is_dynamic=True), "dynamic"),
        (lambda: MovingAverageMinMaxObserver(is_dynamic=True), "averaging_constant=1"),
        (lambda: MovingAverageMinMaxObserver(averaging_constant=0.0), r"\(0, 1\]"),
        (lambda: MovingAveragePerChannelMinMaxObserver(averaging_constant=1.5), r"\(0, 1\]"),
        (lambda: HistogramObserver(bins=0), "bins must be a positive integer"),
        (lambda: HistogramObserver(upsample_rate=1.5), "upsample_rate must be a positive integer"),
        (lambda: FixedQParamsObserver(scale=0.0, zero_point=0), "scale must be a positive"),
        (lambda: FixedQParamsObserver(scale=0.1, zero_point=300), r"zero_point must be an integer in \[0, 255\]"),
        (lambda: FixedQParamsObserver(scale=0.1, zero_point=0, qscheme=torch.per_channel_affine), "per-tensor"),
        (lambda: FixedQParamsObserver(scale=0.1, zero_point=0, dtype=torch.float16), "integer dtype"),
        (lambda: FixedQParamsObserver(scale=0.1, zero_point=0, is_dynamic=True), "dynamic"),
    ],
)
def test_invalid_configuration_raises_config_error(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_config_errors_name_the_observer():
    with pytest.raises(ConfigError, match="^HistogramObserver"):
        HistogramObserver(quant_min=3, quant_max=9)


@pytest.mark.parametrize(
    "obs", [MinMaxObserver(), MovingAverageMinMaxObserver(), PerChannelMinMaxObserver(ch_axis=1),
            MovingAveragePerChannelMinMaxObserver(ch_axis=1), HistogramObserver(bins=16)],
    ids=lambda o: type(o).__name__,
)
def test_non_finite_input_raises_and_leaves_state_alone(obs):
    good = torch.randn(2, 3, 4)
    obs(good)
    before = {k: v.clone() for k, v in obs.state_dict().items()}
    bad = good.clone()
    bad[0, 0, 0] = float("nan")
    bad[1, 2, 3] = float("inf")
    bad[1, 1, 1] = float("-inf")
    with pytest.raises(ObserverError, match=f"{type(obs).__name__} got 3 non-finite value"):
        obs(bad)
    after = obs.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("cls", [MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver,
                                 MovingAveragePerChannelMinMaxObserver, HistogramObserver])
def test_qparams_before_data_raise(cls):
    with pytest.raises(ObserverError, match=f"{cls.__name__}.*saw no data.*run calibration"):
        cls().calculate_qparams()


def test_per_channel_input_errors():
    obs = PerChannelMinMaxObserver(ch_axis=3)
    with pytest.raises(ObserverError, match="ch_axis=3.*shape \\(2, 3\\)"):
        obs(torch.randn(2, 3))
    obs = PerChannelMinMaxObserver(ch_axis=1)
    obs(torch.randn(2, 3))
    with pytest.raises(ObserverError, match="saw 4 channels.*earlier inputs had 3"):
        obs(torch.randn(2, 4))
    one_d = PerChannelMinMaxObserver()
    one_d(torch.tensor([1.0, -2.0]))  # a 1-d tensor: each element is a channel
    assert one_d.min_val.tolist() == [1.0, -2.0]


# --- observers without qparams -----------------------------------------------------------


def test_placeholder_observer():
    obs = PlaceholderObserver(dtype=torch.float16)
    x = torch.randn(3)
    assert obs(x) is x
    assert obs.dtype is dtypes.float16 and not obs.is_dynamic and obs.quant_min is None
    with pytest.raises(ObserverError, match="PlaceholderObserver has no qparams"):
        obs.calculate_qparams()
    dynamic = qobs.default_dynamic_quant_observer()
    assert dynamic.is_dynamic and dynamic.dtype is dtypes.uint8 and (dynamic.quant_min, dynamic.quant_max) == (0, 255)
    assert PlaceholderObserver(dtype="int8", is_dynamic=True).quant_min == -128
    assert PlaceholderObserver(dtype=torch.quint8, compute_dtype=torch.quint8).is_dynamic
    assert "is_dynamic=True" in repr(dynamic)


def test_noop_reuse_and_recording_observers():
    x = torch.randn(2, 2)
    noop, reuse, record = NoopObserver(), ReuseInputObserver(), RecordingObserver()
    assert noop.dtype is dtypes.float16 and reuse.dtype is dtypes.uint8
    for obs in (noop, reuse, record):
        assert obs(x) is x
        with pytest.raises(ObserverError, match="has no qparams"):
            obs.calculate_qparams()
    x.add_(1)
    assert len(record.get_tensor_value()) == 1 and not torch.equal(record.get_tensor_value()[0], x)


def test_fixed_qparams_observer():
    obs = qobs.default_fixed_qparams_range_neg1to1_observer()
    x = torch.randn(4)
    assert obs(x) is x
    scale, zero_point = obs.calculate_qparams()
    assert scale.tolist() == [2.0 / 256.0] and zero_point.tolist() == [128] and zero_point.dtype == torch.int32
    scale.fill_(5.0)  # the caller gets a copy
    assert obs.scale.tolist() == [2.0 / 256.0]
    signed = FixedQParamsObserver(0.1, -3, dtype="int8")
    assert (signed.quant_min, signed.quant_max) == (-128, 127)


def test_custom_observer_on_the_base_class():
    """torch.ao-style user observers subclass ObserverBase and pass a dtype."""

    class ConstantObserver(ObserverBase):
        def __init__(self) -> None:
            super().__init__(torch.qint8, is_dynamic=False)

        def forward(self, x):
            return x

        def calculate_qparams(self):
            return torch.tensor([0.1]), torch.tensor([0])

    obs = ConstantObserver()
    assert obs.dtype is dtypes.int8 and obs.spec.dtype is dtypes.int8
    obs.dtype = torch.quint8
    assert obs.dtype is dtypes.uint8
    assert isinstance(ConstantObserver.with_args(), Factory)
    with pytest.raises(TypeError):
        ObserverBase()  # abstract


def test_other_input_dtypes_are_observed_as_float32():
    x = torch.tensor([[-1.5, 2.25]], dtype=torch.float64)
    for obs in (MinMaxObserver(), PerChannelMinMaxObserver(ch_axis=1), HistogramObserver(bins=8)):
        obs(x)
        obs(x.to(torch.bfloat16))
        obs(torch.tensor([[3, -4]]))
        assert obs.min_val.dtype == torch.float32
        assert obs.calculate_qparams()[0].dtype == torch.float32


def test_is_dynamic_setter_is_checked_too():
    with pytest.raises(ConfigError, match="does not support dynamic"):
        PerChannelMinMaxObserver().is_dynamic = True
    with pytest.raises(ConfigError, match="averaging_constant=1"):
        MovingAverageMinMaxObserver(0.5).is_dynamic = True
    obs = MinMaxObserver()
    obs.is_dynamic = True
    assert obs.is_dynamic and obs.spec.is_dynamic
