"""What every extra observer owes qcore: errors, zero-exact qparams honouring the spec, state dicts, names."""

from __future__ import annotations

import pytest
import torch

import qcore
from qcore.errors import ConfigError, ObserverError
from qcore.factory import Factory
from qcore_observers_extra.entropy import EntropyObserver
from qcore_observers_extra.moving_average_histogram import MovingAverageHistogramObserver
from qcore_observers_extra.mse import MSEObserver, PerChannelMSEObserver
from qcore_observers_extra.percentile import PercentileObserver, PerChannelPercentileObserver
from qcore_observers_extra.plugin import observers

torch.set_num_threads(1)

PER_TENSOR = [PercentileObserver, MSEObserver, EntropyObserver, MovingAverageHistogramObserver]
PER_CHANNEL = [PerChannelPercentileObserver, PerChannelMSEObserver]
ALL = PER_TENSOR + PER_CHANNEL

# Small histograms keep the searches fast; the defaults are exercised by the accuracy tests.
SMALL = {cls: {"bins": 256} for cls in ALL}


def make(cls, **kwargs):
    return cls(**{**SMALL[cls], **kwargs})


def heavy_tailed(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x.view(-1)[:: max(1, x.numel() // 16)] *= 12  # a few outliers
    return x


def per_channel_kwargs(cls, qscheme):
    if cls in PER_CHANNEL:
        return {"qscheme": qscheme.replace("per_tensor", "per_channel")}
    return {"qscheme": qscheme}


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_is_rejected(cls, bad):
    obs = make(cls)
    x = torch.randn(4, 8)
    x[1, 3] = bad
    with pytest.raises(ObserverError, match="non-finite"):
        obs(x)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_qparams_without_data_raise(cls):
    obs = make(cls)
    obs(torch.empty(0, 4))  # an empty batch is no data either
    with pytest.raises(ObserverError, match="saw no data"):
        obs.calculate_qparams()


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "dtype, qscheme, reduce_range, qrange, expected_range",
    [
        ("uint8", "per_tensor_affine", False, None, (0, 255)),
        ("uint8", "per_tensor_affine", True, None, (0, 127)),
        ("int8", "per_tensor_symmetric", False, None, (-128, 127)),
        ("int8", "per_tensor_symmetric", True, None, (-64, 63)),
        ("int8", "per_tensor_affine", False, (-127, 127), (-127, 127)),
        ("uint8", "per_tensor_symmetric", False, None, (0, 255)),
        (torch.quint8, "per_tensor_affine", False, (0, 15), (0, 15)),
    ],
)
def test_qparams_honour_the_spec_and_keep_zero_exact(cls, dtype, qscheme, reduce_range, qrange, expected_range):
    kwargs = dict(dtype=dtype, reduce_range=reduce_range, **per_channel_kwargs(cls, qscheme))
    if qrange is not None:
        kwargs.update(quant_min=qrange[0], quant_max=qrange[1])
    obs = make(cls, **kwargs)
    assert (obs.quant_min, obs.quant_max) == expected_range
    x = heavy_tailed(6, 64)
    obs(x)
    obs(x * 0.5 + 0.25)
    scale, zero_point = obs.calculate_qparams()
    channels = 6 if cls in PER_CHANNEL else 1
    assert scale.shape == zero_point.shape == (channels,)
    assert scale.dtype == torch.float32 and bool((scale > 0).all())
    assert not zero_point.is_floating_point()
    assert bool(((zero_point >= expected_range[0]) & (zero_point <= expected_range[1])).all())
    if obs.qscheme.is_symmetric:
        middle = 0 if obs.dtype is qcore.int8 else 128
        assert bool((zero_point == middle).all())
    # Zero is exact: it quantizes to the zero point and back to 0.0.
    q = torch.round(torch.zeros(channels) / scale) + zero_point
    assert bool(((q - zero_point) * scale == 0).all())


@pytest.mark.parametrize("cls", PER_TENSOR, ids=lambda c: c.__name__)
def test_per_tensor_observers_refuse_per_channel_schemes(cls):
    with pytest.raises(ConfigError, match="per_channel_affine"):
        make(cls, qscheme="per_channel_affine")


@pytest.mark.parametrize("cls", PER_CHANNEL, ids=lambda c: c.__name__)
def test_per_channel_observers_refuse_per_tensor_schemes(cls):
    with pytest.raises(ConfigError, match="per_tensor_affine"):
        make(cls, qscheme="per_tensor_affine")


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_dynamic_quantization_is_refused(cls):
    with pytest.raises(ConfigError, match="dynamic"):
        make(cls, is_dynamic=True)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_bad_bins_are_a_config_error(cls):
    with pytest.raises(ConfigError, match="bins must be a positive integer"):
        cls(bins=0)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_dict_round_trip(cls):
    obs = make(cls, dtype="int8", **per_channel_kwargs(cls, "per_tensor_symmetric"))
    obs(heavy_tailed(4, 50, seed=1))
    obs(heavy_tailed(4, 50, seed=2) * 3)
    expected = obs.calculate_qparams()
    state = obs.state_dict()
    fresh = make(cls, dtype="int8", **per_channel_kwargs(cls, "per_tensor_symmetric"))
    fresh.load_state_dict(state)
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, state[name]), name
    for got, want in zip(fresh.calculate_qparams(), expected):
        assert torch.equal(got, want)
    # Calibration continues where it left off.
    more = heavy_tailed(4, 50, seed=3)
    obs(more)
    fresh(more)
    for got, want in zip(fresh.calculate_qparams(), obs.calculate_qparams()):
        assert torch.equal(got, want)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_state_dict_with_other_bins_is_refused(cls):
    obs = make(cls)
    obs(heavy_tailed(4, 50))
    other = cls(bins=128)
    with pytest.raises(RuntimeError, match="bins=256"):
        other.load_state_dict(obs.state_dict())


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_with_args_builds_a_configured_observer(cls):
    factory = cls.with_args(bins=64, dtype="int8", **per_channel_kwargs(cls, "per_tensor_symmetric"))
    assert isinstance(factory, Factory)
    obs = factory()
    assert isinstance(obs, cls) and obs.bins == 64 and obs.dtype is qcore.int8
    assert "bins=64" in repr(obs)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_forward_returns_its_input(cls):
    obs = make(cls)
    x = heavy_tailed(3, 10)
    assert obs(x) is x


@pytest.mark.parametrize("name", sorted(observers()))
def test_registered_names_work_in_a_qconfig(name):
    cls = observers()[name]
    per_channel = cls in PER_CHANNEL
    weight = name if per_channel else qcore.default_weight_observer
    activation = qcore.default_observer if per_channel else name
    qconfig = qcore.QConfig(activation=activation, weight=weight)
    built = (qconfig.weight if per_channel else qconfig.activation)()
    assert type(built) is cls
    assert qcore.QConfig.from_dict(qconfig.to_dict()) == qconfig
    assert qconfig.to_dict()["weight" if per_channel else "activation"]["class"] == name


def test_per_channel_observer_is_refused_for_activations():
    with pytest.raises(ConfigError, match="per-channel"):
        qcore.QConfig(activation="per_channel_mse", weight=qcore.default_weight_observer)


def test_per_channel_observers_check_their_input():
    obs = PerChannelMSEObserver(bins=32, ch_axis=2)
    with pytest.raises(ObserverError, match="ch_axis=2"):
        obs(torch.randn(3, 4))
    obs = PerChannelPercentileObserver(bins=32)
    obs(torch.randn(3, 4))
    with pytest.raises(ObserverError, match="saw 5 channels"):
        obs(torch.randn(5, 4))
    obs.reset_min_max_vals()
    obs(torch.randn(5, 4))
    assert obs.calculate_qparams()[0].shape == (5,)


def test_per_channel_mse_refuses_float_qparams():
    with pytest.raises(ConfigError, match="per_channel_affine_float_qparams"):
        PerChannelMSEObserver(qscheme="per_channel_affine_float_qparams")
