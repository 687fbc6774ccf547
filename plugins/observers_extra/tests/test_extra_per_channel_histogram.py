"""The per-channel histograms record each channel as the core HistogramObserver records a tensor."""

from __future__ import annotations

import torch

import qcore
import qcore_observers_extra.per_channel_histogram as pch
from qcore_observers_extra.percentile import PerChannelPercentileObserver

torch.set_num_threads(1)


def test_each_channel_histogram_matches_the_core_histogram_observer():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 200, generator=g) * (1 + i) + i for i in range(4)]  # the range grows every batch
    ours = PerChannelPercentileObserver(bins=128, upsample_rate=8)
    cores = [qcore.HistogramObserver(bins=128, upsample_rate=8) for _ in range(5)]
    for batch in batches:
        ours(batch)
        for row, core in enumerate(cores):
            core(batch[row])
    for row, core in enumerate(cores):
        assert float(ours.min_val[row]) == float(core.min_val) and float(ours.max_val[row]) == float(core.max_val)
        assert torch.allclose(ours.histogram[row], core.histogram, atol=1e-4)
        assert float(ours.histogram[row].sum()) == 800.0


def test_rebinning_in_chunks_equals_rebinning_at_once(monkeypatch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 100, generator=g)
    lo, hi = x.min(1).values, x.max(1).values
    hist = pch.histogram_rows(x, lo, hi, 32)
    whole = pch.rebin_rows(hist, lo, hi, lo - 1, hi + 3, 4)
    monkeypatch.setattr(pch, "_CHUNK", 32 * 4 * 2)  # two channels per chunk
    assert torch.equal(pch.rebin_rows(hist, lo, hi, lo - 1, hi + 3, 4), whole)
    assert torch.allclose(whole.sum(1), torch.full((9,), 100.0))


def test_a_constant_channel_keeps_its_mass_at_its_value():
    obs = PerChannelPercentileObserver(bins=16, percentile=100)
    obs(torch.tensor([[2.0, 2.0, 2.0], [0.0, 1.0, 2.0]]))
    obs(torch.tensor([[-2.0, 2.0, 6.0], [0.5, 0.5, 0.5]]))
    assert obs.histogram[0].sum() == 6.0
    edges = torch.linspace(-2.0, 6.0, 17)
    bin_of_two = int(torch.bucketize(torch.tensor(2.0), edges, right=True)) - 1
    assert float(obs.histogram[0, bin_of_two]) >= 4.0  # the three 2.0s of the first batch and one of the second
