"""MSEObserver and PerChannelMSEObserver: the closed-form error, and ranges no brute-force search beats."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qcore
from qcore.affine import fake_quantize_affine
from qcore.qparams import calculate_qparams
from qcore.quant_spec import QuantSpec
from qcore_observers_extra.mse import MSEObserver, PerChannelMSEObserver, histogram_mse, rounding_error_integral

torch.set_num_threads(1)


def nearest_on_grid(t: torch.Tensor, low: float, high: float, scale: float) -> torch.Tensor:
    return low + torch.round((t.clamp(low, high) - low) / scale) * scale


@settings(max_examples=30, deadline=None)
@given(
    scale=st.floats(0.01, 2.0),
    steps=st.integers(1, 20),
    low=st.floats(-5, 5),
    a=st.floats(-30, 30),
    length=st.floats(0.001, 40),
)
def test_rounding_error_integral_matches_numerical_integration(scale, steps, low, a, length):
    high = low + steps * scale
    b = a + length
    t = torch.linspace(a, b, 200_001, dtype=torch.float64)
    err = (t - nearest_on_grid(t, low, high, scale)) ** 2
    numeric = float(torch.trapezoid(err, t))
    as_t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    closed = float(
        rounding_error_integral(as_t(b), as_t(low), as_t(high), as_t(scale))
        - rounding_error_integral(as_t(a), as_t(low), as_t(high), as_t(scale))
    )
    assert closed == pytest.approx(numeric, rel=1e-4, abs=1e-9 * (1 + length) ** 3)


def test_histogram_mse_is_the_error_of_values_spread_evenly_in_their_bins():
    g = torch.Generator().manual_seed(0)
    bins, lo, hi = 64, -3.0, 5.0
    hist = torch.randint(0, 50, (bins,), generator=g).double()
    width = (hi - lo) / bins
    # 400 evenly spaced points inside each bin, weighted by its count.
    offsets = (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    points = lo + (torch.arange(bins, dtype=torch.float64).unsqueeze(1) + offsets) * width
    weights = (hist / 400).unsqueeze(1).expand_as(points)
    grids = [(-2.0, 2.0, 0.25), (-3.0, 5.0, 8 / 255), (0.0, 1.0, 0.1), (-1.0, 4.0, 5 / 7)]
    got = histogram_mse(
        hist[None],
        torch.tensor([lo], dtype=torch.float64),
        torch.tensor([hi], dtype=torch.float64),
        torch.tensor([[g_[0] for g_ in grids]], dtype=torch.float64),
        torch.tensor([[g_[1] for g_ in grids]], dtype=torch.float64),
        torch.tensor([[g_[2] for g_ in grids]], dtype=torch.float64),
    )[0]
    for value, (low, high, scale) in zip(got.tolist(), grids):
        err = (points - nearest_on_grid(points, low, high, scale)) ** 2
        want = float((err * weights).sum() / hist.sum())
        assert value == pytest.approx(want, rel=1e-3)


def empirical_mse(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, obs) -> float:
    return float((x - fake_quantize_affine(x, scale, zero_point, obs.quant_min, obs.quant_max)).pow(2).mean())


def brute_force_best(x: torch.Tensor, spec: QuantSpec, lows, highs) -> float:
    best = float("inf")
    quant_min, quant_max = spec.qrange
    for low in lows:
        for high in highs:
            scale, zero_point = calculate_qparams(torch.tensor(low), torch.tensor(high), spec)
            xq = fake_quantize_affine(x, scale, zero_point, quant_min, quant_max)
            best = min(best, float((x - xq).pow(2).mean()))
    return best


@pytest.mark.parametrize("qscheme", ["per_tensor_symmetric", "per_tensor_affine"])
def test_mse_range_is_as_good_as_a_brute_force_search(qscheme):
    g = torch.Generator().manual_seed(1)
    # Skewed, heavy-tailed data: a one-sided search and a two-sided one differ.
    x = torch.cat([torch.randn(20_000, generator=g), -torch.rand(5_000, generator=g).log() / 0.4 + 1])
    dtype = "int8" if qscheme.endswith("symmetric") else "uint8"
    obs = MSEObserver(dtype=dtype, qscheme=qscheme, reduce_range=True)
    obs(x)
    scale, zero_point = obs.calculate_qparams()
    got = empirical_mse(x, scale, zero_point, obs)
    minmax = qcore.MinMaxObserver(dtype=dtype, qscheme=qscheme, reduce_range=True)
    minmax(x)
    assert got < 0.9 * empirical_mse(x, *minmax.calculate_qparams(), minmax)
    lo, hi = float(x.min()), float(x.max())
    fractions = torch.linspace(0.05, 1, 40).tolist()
    if qscheme.endswith("symmetric"):
        best = brute_force_best(x, obs.spec, [0.0], [hi * f for f in fractions])
    else:
        best = brute_force_best(x, obs.spec, [lo * f for f in fractions[::2]], [hi * f for f in fractions])
    assert got <= best * 1.01


def test_a_lone_outlier_is_clipped_but_a_heavy_tail_is_kept():
    g = torch.Generator().manual_seed(2)
    four_bits = dict(dtype="int8", qscheme="per_tensor_symmetric", quant_min=-8, quant_max=7)
    lone = torch.randn(100_000, generator=g)
    lone[0] = 40.0
    obs = MSEObserver(**four_bits)
    obs(lone)
    assert float(obs.calculate_qparams()[0]) * 7.5 < 5  # clipped far below 40
    heavy = lone.clone()
    heavy[:2000] = 40.0  # 2% at 40: clipping them costs more than coarse rounding
    obs = MSEObserver(**four_bits)
    obs(heavy)
    assert float(obs.calculate_qparams()[0]) * 7.5 > 35


def test_search_resolution_is_configurable():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(3))
    coarse = MSEObserver(grid=5)
    fine = MSEObserver()
    coarse(x)
    fine(x)
    assert coarse.grid == 5 and "grid=5" in repr(coarse)
    assert empirical_mse(x, *fine.calculate_qparams(), fine) <= empirical_mse(x, *coarse.calculate_qparams(), coarse) * 1.001
    with pytest.raises(qcore.ConfigError, match="grid must be a positive integer"):
        MSEObserver(grid=0)


def test_per_channel_weights_get_lower_error_than_min_max_in_every_channel():
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(12, 200, generator=g) * torch.linspace(0.05, 2, 12).unsqueeze(1)
    weight[:, 0] *= 10  # one outlier per row
    obs = PerChannelMSEObserver(dtype="int8", qscheme="per_channel_symmetric", quant_min=-8, quant_max=7)
    obs(weight)
    minmax = qcore.PerChannelMinMaxObserver(dtype="int8", qscheme="per_channel_symmetric", quant_min=-8, quant_max=7)
    minmax(weight)
    (scale, zp), (mm_scale, mm_zp) = obs.calculate_qparams(), minmax.calculate_qparams()
    err = (weight - fake_quantize_affine(weight, scale, zp, -8, 7, axis=0)).pow(2).mean(1)
    mm_err = (weight - fake_quantize_affine(weight, mm_scale, mm_zp, -8, 7, axis=0)).pow(2).mean(1)
    assert bool((err <= mm_err * 1.0001).all()) and float(err.sum()) < 0.8 * float(mm_err.sum())


def test_per_channel_equals_the_per_tensor_search_on_each_channel():
    g = torch.Generator().manual_seed(5)
    weight = torch.randn(5, 300, generator=g).exp() - 0.5  # skewed rows for the affine end search
    obs = PerChannelMSEObserver(bins=256)
    obs(weight)
    scale, zero_point = obs.calculate_qparams()
    for row in range(5):
        single = MSEObserver(bins=256)
        single(weight[row])
        want_scale, want_zp = single.calculate_qparams()
        assert float(scale[row]) == pytest.approx(float(want_scale), rel=1e-3)
        assert abs(int(zero_point[row]) - int(want_zp)) <= 1
