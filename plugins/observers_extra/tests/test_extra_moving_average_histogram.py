"""MovingAverageHistogramObserver: an exponential moving average of batch histograms."""

from __future__ import annotations

import pytest
import torch

import qcore
from qcore.errors import ConfigError
from qcore_observers_extra.moving_average_histogram import MovingAverageHistogramObserver

torch.set_num_threads(1)


def test_first_batch_sets_the_histogram_like_the_core_observer():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    ours = MovingAverageHistogramObserver(averaging_constant=0.3, bins=256)
    core = qcore.HistogramObserver(bins=256)
    ours(x)
    core(x)
    assert torch.equal(ours.histogram, core.histogram)
    for got, want in zip(ours.calculate_qparams(), core.calculate_qparams()):
        assert torch.equal(got, want)


def test_batches_within_the_range_are_averaged():
    c = 0.25
    obs = MovingAverageHistogramObserver(averaging_constant=c, bins=4)
    obs(torch.tensor([0.0, 4.0, 0.5, 0.6]))  # bins over [0, 4]: [3, 0, 0, 1]
    obs(torch.tensor([2.5, 2.5, 2.5, 4.0]))  # [0, 0, 3, 1]
    expected = (1 - c) * torch.tensor([3.0, 0, 0, 1]) + c * torch.tensor([0.0, 0, 3, 1])
    assert torch.allclose(obs.histogram, expected)


def test_averaging_constant_one_keeps_only_the_latest_batch_over_the_whole_range():
    obs = MovingAverageHistogramObserver(averaging_constant=1.0, bins=8)
    obs(torch.tensor([0.0, 1.0]))
    obs(torch.tensor([-3.0, 5.0, 5.0]))
    assert (float(obs.min_val), float(obs.max_val)) == (-3.0, 5.0)
    assert torch.equal(obs.histogram, torch.histc(torch.tensor([-3.0, 5.0, 5.0]), 8, min=-3.0, max=5.0))


def test_growing_range_rebins_then_averages():
    c = 0.5
    obs = MovingAverageHistogramObserver(averaging_constant=c, bins=4)
    obs(torch.tensor([0.0, 1.0, 2.0, 3.0]))  # one per bin over [0, 3]
    obs(torch.tensor([6.0]))
    # Old counts re-binned onto [0, 6] (the core's upsampling), then blended.
    core = qcore.HistogramObserver(bins=4)
    core(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    rebinned = core._combine_histograms(
        core.histogram, core.min_val, core.max_val, torch.zeros(4), torch.tensor(0.0), torch.tensor(6.0)
    )
    expected = (1 - c) * rebinned + c * torch.tensor([0.0, 0, 0, 1])
    assert torch.allclose(obs.histogram, expected)
    assert float(obs.histogram.sum()) == pytest.approx((1 - c) * 4 + c * 1)


def test_early_batches_fade_from_a_long_calibration():
    g = torch.Generator().manual_seed(1)
    early = [torch.randn(2048, generator=g) * 6 for _ in range(10)]  # a wide start, e.g. before a drift
    late = [torch.randn(2048, generator=g) for _ in range(100)]
    ours = MovingAverageHistogramObserver(averaging_constant=0.1)
    core = qcore.HistogramObserver()
    for batch in early + late:
        ours(batch)
        core(batch)
    assert float(ours.histogram.sum()) == pytest.approx(2048, rel=1e-3)
    ours_scale = float(ours.calculate_qparams()[0])
    core_scale = float(core.calculate_qparams()[0])
    assert ours_scale < 0.5 * core_scale  # the early batches no longer set the range
    late_only = qcore.HistogramObserver()
    for batch in late:
        late_only(batch)
    assert ours_scale == pytest.approx(float(late_only.calculate_qparams()[0]), rel=0.25)


def test_bad_averaging_constant_is_a_config_error():
    with pytest.raises(ConfigError, match="averaging_constant must be in"):
        MovingAverageHistogramObserver(averaging_constant=0)
    assert "averaging_constant=0.5" in repr(MovingAverageHistogramObserver(averaging_constant=0.5))
