"""EntropyObserver: TensorRT's KL-divergence calibration, checked against NVIDIA's reference loop."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import qcore
from qcore.errors import ConfigError
from qcore.qparams import calculate_qparams
from qcore_observers_extra.entropy import EntropyObserver, entropy_threshold_bins, kl_divergences

torch.set_num_threads(1)


def reference_divergences(hist: np.ndarray, levels: int, start: int, stride: int) -> tuple[list[int], np.ndarray]:
    """The candidate loop of NVIDIA pytorch-quantization's ``_compute_amax_entropy`` (no smoothing), as the oracle."""
    bins = hist.astype(np.float64).copy()
    bins[0] = bins[1]
    widths, divergences = [], []
    for i in range(start, len(bins) + 1, stride):
        counts = np.zeros(levels)
        space = np.linspace(0, i, num=levels + 1)
        digitized = np.digitize(range(i), space) - 1
        digitized[bins[:i] == 0] = -1
        for idx, level in enumerate(digitized):
            if level != -1:
                counts[level] += bins[idx]
        for level, n in Counter(digitized).items():
            if level != -1:
                counts[level] /= n
        q = np.array([counts[level] if level != -1 else 0.0 for level in digitized])
        p = bins[:i].copy()
        p[-1] += bins[i:].sum()
        p, q = p / p.sum(), q / q.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * np.log(p / q), 0.0)
        divergences.append(terms.sum())
        widths.append(i)
    return widths, np.array(divergences)


def abs_histogram(x: torch.Tensor, bins: int) -> torch.Tensor:
    return torch.histc(x.abs(), bins, min=0, max=float(x.abs().max()))


def sample(kind: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(n, generator=g)
    if kind == "laplace":
        u = torch.rand(n, generator=g) - 0.5
        return -u.sign() * torch.log1p(-2 * u.abs())
    if kind == "relu":
        return torch.relu(torch.randn(n, generator=g) * 2 + 0.3)
    x = torch.randn(n, generator=g)
    x[:20] *= 6  # gauss with outliers
    return x


@pytest.mark.parametrize("kind", ["gauss", "laplace", "relu", "outliers"])
def test_divergences_and_threshold_match_the_reference(kind):
    bins, levels, stride = 512, 128, 4
    hist = abs_histogram(sample(kind, 60_000, seed=len(kind)), bins)
    widths, ref = reference_divergences(hist.numpy(), levels, levels, stride)
    h = hist.double().clone()
    h[0] = h[1]
    ours = kl_divergences(h, torch.tensor(widths), levels).numpy()
    finite = np.isfinite(ref)
    assert finite.sum() >= 10
    # Smoothing moves 1e-4 counts around: negligible next to counts of tens of thousands.
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-5, atol=1e-7)
    assert np.isfinite(ours).all()  # where the reference divides by an empty Q bin, smoothing keeps it finite
    assert bool((torch.tensor(ours[~finite]) > ref[finite].min()).all())
    best = widths[len(ref) - 1 - int(np.argmin(ref[::-1]))]
    assert entropy_threshold_bins(hist, levels, stride=stride) == best


def test_outliers_are_clipped_for_int8():
    x = sample("outliers", 100_000, seed=1)
    x[:20] *= 4
    obs = EntropyObserver(dtype="int8", qscheme="per_tensor_symmetric")
    obs(x)
    threshold = float(obs.threshold())
    assert 2.0 < threshold < 0.5 * float(x.abs().max())
    scale, zero_point = obs.calculate_qparams()
    want = calculate_qparams(torch.tensor(-threshold), torch.tensor(threshold), obs.spec)
    assert torch.allclose(scale, want[0]) and torch.equal(zero_point, want[1])


def test_levels_follow_the_scheme_and_the_sign_of_the_data():
    positive = torch.rand(1000) + 0.1
    signed = torch.randn(1000)
    cases = [
        (dict(dtype="int8", qscheme="per_tensor_symmetric"), signed, 128),
        (dict(dtype="int8", qscheme="per_tensor_symmetric", reduce_range=True), signed, 64),
        (dict(dtype="uint8", qscheme="per_tensor_symmetric"), positive, 128),
        (dict(), positive, 256),  # uint8 affine on non-negative data: the whole grid covers [0, threshold]
        (dict(reduce_range=True), positive, 128),
        (dict(quant_min=0, quant_max=15), positive, 16),
        (dict(), signed, 128),  # affine, but the data is signed: half the grid per side
    ]
    for kwargs, data, levels in cases:
        obs = EntropyObserver(bins=256, **kwargs)
        obs(data)
        assert obs.levels == levels, kwargs


def test_affine_uint8_on_non_negative_data_uses_the_positive_range():
    x = sample("relu", 50_000, seed=2)
    x[:10] = 60.0
    obs = EntropyObserver()  # 2048 bins: 8 per level at the widest candidate
    obs(x)
    threshold = obs.threshold()
    assert float(threshold) < 30
    scale, zero_point = obs.calculate_qparams()
    assert int(zero_point) == 0
    assert float(scale) == pytest.approx(float(threshold) / 255, rel=1e-6)


def test_affine_on_signed_data_clips_both_ends_at_the_threshold():
    x = sample("outliers", 50_000, seed=3) + 0.5
    obs = EntropyObserver(bins=1024)
    obs(x)
    t = obs.threshold()
    want = calculate_qparams(torch.max(obs.min_val, -t), torch.min(obs.max_val, t), obs.spec)
    got = obs.calculate_qparams()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_histogram_of_magnitudes_grows_with_the_range():
    obs = EntropyObserver(bins=128)
    obs(torch.tensor([0.5, -1.0, 0.25]))
    obs(torch.tensor([-4.0, 3.0]))
    obs(torch.tensor([2.0]))
    assert (float(obs.min_val), float(obs.max_val)) == (-4.0, 3.0)
    assert float(obs.histogram.sum()) == pytest.approx(6.0)
    edges = torch.linspace(0, 4.0, 129)
    for value in (4.0, 3.0, 2.0):  # later batches land exactly in their bins
        index = min(127, int(torch.bucketize(torch.tensor(value), edges, right=True)) - 1)
        assert float(obs.histogram[index]) >= 1.0


def test_all_zero_input_gives_the_eps_scale():
    obs = EntropyObserver(bins=64, dtype="int8", qscheme="per_tensor_symmetric")
    obs(torch.zeros(10))
    obs(torch.zeros(3))
    assert float(obs.histogram[0]) == 13.0
    scale, zero_point = obs.calculate_qparams()
    assert float(scale) == pytest.approx(torch.finfo(torch.float32).eps) and int(zero_point) == 0


def test_start_bin_and_stride_limit_the_candidates():
    x = sample("laplace", 20_000, seed=4)
    obs = EntropyObserver(bins=512, start_bin=400, stride=7)
    obs(x)
    kept = round(float(obs.threshold()) / float(obs.max_val.abs().max(obs.min_val.abs())) * 512)
    assert kept >= 400 and (kept - 400) % 7 == 0 or kept == 512
    with pytest.raises(ConfigError, match="stride must be a positive integer"):
        EntropyObserver(stride=0)
    with pytest.raises(ConfigError, match="smoothing must be in"):
        EntropyObserver(smoothing=0)


def test_tensorrt_style_qconfig_by_name():
    qconfig = qcore.QConfig(activation="entropy", weight=qcore.default_weight_observer)
    activation = qconfig.activation.with_args(dtype="int8", qscheme="per_tensor_symmetric")()
    assert isinstance(activation, EntropyObserver) and activation.quant_min == -128
