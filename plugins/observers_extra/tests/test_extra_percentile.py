"""PercentileObserver and PerChannelPercentileObserver: histogram percentiles against exact quantiles."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qcore
from qcore.errors import ConfigError
from qcore.qparams import calculate_qparams
from qcore_observers_extra.percentile import PercentileObserver, PerChannelPercentileObserver, histogram_quantile

torch.set_num_threads(1)


def exact_range(x: torch.Tensor, low: float, high: float) -> tuple[float, float]:
    flat = x.reshape(-1).double()
    return float(torch.quantile(flat, low / 100)), float(torch.quantile(flat, high / 100))


def bin_width(obs) -> float:
    return float(obs.max_val - obs.min_val) / obs.bins


def test_defaults_keep_the_0_01_to_99_99_percentiles():
    obs = PercentileObserver()
    assert (obs.min_percentile, obs.max_percentile) == pytest.approx((0.01, 99.99))
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    x[:5] = torch.tensor([80.0, -60.0, 70.0, 90.0, -75.0])  # far outliers the range must ignore
    obs(x)
    lo, hi = obs._select_ranges(obs.histogram.double()[None], obs.min_val.double()[None], obs.max_val.double()[None])
    want_lo, want_hi = exact_range(x, 0.01, 99.99)
    # Within a bin (plus the spread of the handful of samples around the quantile).
    assert abs(float(lo[0]) - want_lo) <= 1.5 * bin_width(obs)
    assert abs(float(hi[0]) - want_hi) <= 1.5 * bin_width(obs)
    scale, zero_point = obs.calculate_qparams()
    want = calculate_qparams(lo[0].float(), hi[0].float(), obs.spec)
    assert torch.equal(scale, want[0]) and torch.equal(zero_point, want[1])
    assert float(scale) < 10 / 255  # the outliers did not stretch the grid


def test_min_and_max_percentiles_are_separate():
    x = torch.rand(50_000, generator=torch.Generator().manual_seed(1)) * 10 - 2
    obs = PercentileObserver(min_percentile=5, max_percentile=90, bins=4096)
    obs(x)
    lo, hi = obs._select_ranges(obs.histogram.double()[None], obs.min_val.double()[None], obs.max_val.double()[None])
    want_lo, want_hi = exact_range(x, 5, 90)
    assert float(lo[0]) == pytest.approx(want_lo, abs=2 * bin_width(obs))
    assert float(hi[0]) == pytest.approx(want_hi, abs=2 * bin_width(obs))


def test_percentile_100_keeps_the_whole_range():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    full = PercentileObserver(percentile=100)
    full(x)
    minmax = qcore.MinMaxObserver()
    minmax(x)
    for got, want in zip(full.calculate_qparams(), minmax.calculate_qparams()):
        assert torch.allclose(got.double(), want.double(), rtol=1e-5)


def test_long_calibration_grows_the_range_and_keeps_the_quantiles():
    g = torch.Generator().manual_seed(3)
    obs = PercentileObserver(percentile=99.9, dtype="int8", qscheme="per_tensor_symmetric")
    batches = [torch.randn(4096, generator=g) * (1 + i / 10) for i in range(30)]
    for batch in batches:
        obs(batch)
    lo, hi = obs._select_ranges(obs.histogram.double()[None], obs.min_val.double()[None], obs.max_val.double()[None])
    want_lo, want_hi = exact_range(torch.cat(batches), 0.1, 99.9)
    # Re-binning as the range grows costs a little accuracy: allow a few bins.
    assert float(lo[0]) == pytest.approx(want_lo, abs=4 * bin_width(obs))
    assert float(hi[0]) == pytest.approx(want_hi, abs=4 * bin_width(obs))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 3000),
    q=st.floats(0, 1),
    shift=st.floats(-5, 5),
    spread=st.floats(1e-3, 1e3),
)
def test_histogram_quantile_is_within_a_bin_of_the_exact_quantile(seed, n, q, shift, spread):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * spread + shift
    lo, hi = x.min(), x.max()
    bins = 512
    hist = torch.histc(x, bins, min=float(lo), max=float(hi))[None]
    got = float(histogram_quantile(hist, lo.reshape(1), hi.reshape(1), q)[0])
    width = float(hi - lo) / bins
    assert float(lo) - 1e-9 * spread <= got <= float(hi) + 1e-9 * spread
    # The empirical CDF at the answer brackets q within one bin.
    below = float((x < got - width).double().mean())
    at_most = float((x <= got + width).double().mean())
    assert below <= q + 1e-12 and at_most >= q - 1e-12


def test_constant_input_gives_that_value():
    obs = PercentileObserver()
    obs(torch.full((100,), 3.5))
    scale, zero_point = obs.calculate_qparams()
    want = calculate_qparams(torch.tensor(3.5), torch.tensor(3.5), obs.spec)
    assert torch.equal(scale, want[0]) and torch.equal(zero_point, want[1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"percentile": 101}, "between 0 and 100"),
        ({"percentile": float("nan")}, "must be a number"),
        ({"min_percentile": 60, "max_percentile": 40}, "must be below max_percentile"),
        ({"percentile": 50}, "must be below max_percentile"),
        ({"max_percentile": "99"}, "must be a number"),
    ],
)
def test_bad_percentiles_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PercentileObserver(**kwargs)
    with pytest.raises(ConfigError, match=message):
        PerChannelPercentileObserver(**kwargs)


def test_per_channel_matches_exact_row_quantiles():
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(16, 3, 3, 40, generator=g) * torch.linspace(0.1, 4, 16).reshape(16, 1, 1, 1)
    weight[3, 0, 0, :2] = torch.tensor([30.0, -25.0])
    obs = PerChannelPercentileObserver(percentile=99, bins=1024, dtype="int8", qscheme="per_channel_symmetric")
    obs(weight)
    lo, hi = obs._select_ranges(obs.histogram.double(), obs.min_val.double(), obs.max_val.double())
    rows = weight.reshape(16, -1).double()
    width = (obs.max_val - obs.min_val).double() / obs.bins
    # Sparse rows: judge by the empirical CDF, which must reach q within a bin of the answer.
    for got, q in ((lo, 0.01), (hi, 0.99)):
        below = (rows < (got - width).unsqueeze(1)).double().mean(1)
        at_most = (rows <= (got + width).unsqueeze(1)).double().mean(1)
        assert bool((below <= q + 1e-12).all()) and bool((at_most >= q - 1e-12).all())
    scale, zero_point = obs.calculate_qparams()
    assert torch.equal(zero_point, torch.zeros(16, dtype=torch.int64))
    assert float(scale[3]) < 0.2  # channel 3's two outliers were clipped


def test_per_channel_along_another_axis_equals_transposed_input():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 6, 20, generator=g)
    along1 = PerChannelPercentileObserver(ch_axis=1, bins=128)
    along1(x)
    along0 = PerChannelPercentileObserver(ch_axis=0, bins=128)
    along0(x.transpose(0, 1).contiguous())
    for got, want in zip(along1.calculate_qparams(), along0.calculate_qparams()):
        assert torch.equal(got, want)


def test_per_channel_histograms_grow_per_channel():
    obs = PerChannelPercentileObserver(bins=64, percentile=100)
    obs(torch.tensor([[0.0, 1.0], [5.0, 6.0]]))
    obs(torch.tensor([[-3.0, 2.0], [5.5, 5.5]]))
    assert obs.min_val.tolist() == [-3.0, 5.0] and obs.max_val.tolist() == [2.0, 6.0]
    assert obs.histogram.sum(1).tolist() == [4.0, 4.0]
    lo, hi = obs._select_ranges(obs.histogram.double(), obs.min_val.double(), obs.max_val.double())
    assert lo.tolist() == pytest.approx([-3.0, 5.0]) and hi.tolist() == pytest.approx([2.0, 6.0])
