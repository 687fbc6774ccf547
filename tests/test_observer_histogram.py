"""HistogramObserver against torch.ao: the same histogram, range and qparams, bit for bit."""

from __future__ import annotations

import functools
import time
import warnings
from typing import Any, Callable

import pytest
import torch

from qcore import dtypes
from qcore.errors import ObserverError
from qcore.observers import HistogramObserver

torch.set_num_threads(1)


def torch_histogram_observer(kwargs: dict[str, Any]):
    """torch.ao's HistogramObserver configured like ours (upsample_rate is an attribute there)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization.observer import HistogramObserver as TorchHistogramObserver
    except ImportError:
        pytest.skip("torch.ao.quantization is not available")
    kwargs = dict(kwargs)
    upsample_rate = kwargs.pop("upsample_rate", 16)
    for key, convert in (("dtype", dtypes.to_torch_dtype), ("qscheme", dtypes.to_torch_qscheme)):
        if key in kwargs:
            kwargs[key] = convert(kwargs[key])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        observer = TorchHistogramObserver(**kwargs)
    observer.upsample_rate = upsample_rate
    return observer


def outliers() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(3):
        x = torch.randn(400, generator=g) * (1 + i)
        x[:3] = torch.tensor([15.0, -25.0, 40.0]) * (i + 1)
        batches.append(x)
    return batches


@functools.lru_cache(maxsize=None)
def digit_images() -> torch.Tensor:
    datasets = pytest.importorskip("sklearn.datasets")
    data = torch.tensor(datasets.load_digits().data[:192], dtype=torch.float32)
    return ((data - data.mean()) / data.std()).reshape(-1, 1, 8, 8)


def digits() -> list[torch.Tensor]:
    images = digit_images()
    return [images[i : i + 64] for i in range(0, 192, 64)]


def conv_relu() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(4, 1, 3, 3, generator=g) * 0.5
    bias = torch.randn(4, generator=g) * 0.1
    return [torch.relu(torch.nn.functional.conv2d(x, weight, bias)) for x in digits()]


def awkward() -> list[torch.Tensor]:
    """A constant first batch, then a batch inside the range, then growth on both sides."""
    g = torch.Generator().manual_seed(2)
    return [torch.full((50,), 0.5), torch.full((10,), 0.5), torch.rand(200, generator=g) * 3 - 1, torch.rand(100, generator=g)]


DATASETS: dict[str, Callable[[], list[torch.Tensor]]] = {
    "outliers": outliers,
    "digits": digits,
    "conv_relu": conv_relu,
    "awkward": awkward,
}

u8, i8, i32 = dtypes.uint8, dtypes.int8, dtypes.int32
sym = dtypes.per_tensor_symmetric

CONFIGS = [
    {"bins": 256},
    {"bins": 256, "dtype": i8, "qscheme": sym},
    {"bins": 256, "dtype": u8, "qscheme": sym},
    {"bins": 128, "reduce_range": True},
    {"bins": 128, "dtype": i8, "reduce_range": True},
    {"bins": 128, "quant_min": 0, "quant_max": 127},
    {"bins": 128, "dtype": i8, "qscheme": sym, "quant_min": -127, "quant_max": 127, "eps": 2**-12},
    {"bins": 128, "dtype": i32, "qscheme": sym},
    {"bins": 64, "upsample_rate": 4},
    {"bins": 2048},
]


def config_id(kwargs: dict[str, Any]) -> str:
    return "-".join(f"{k}={getattr(v, 'name', getattr(v, 'value', v))}" for k, v in kwargs.items())


def observe_both(kwargs: dict[str, Any], batches: list[torch.Tensor]):
    ours, theirs = HistogramObserver(**kwargs), torch_histogram_observer(kwargs)
    for x in batches:
        assert ours(x) is x
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs(x)
    return ours, theirs


@pytest.mark.parametrize("data", DATASETS)
@pytest.mark.parametrize("kwargs", CONFIGS, ids=config_id)
def test_histogram_matches_torch(kwargs, data):
    ours, theirs = observe_both(kwargs, DATASETS[data]())
    assert torch.equal(ours.histogram, theirs.histogram)
    assert torch.equal(ours.min_val, theirs.min_val) and torch.equal(ours.max_val, theirs.max_val)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs.calculate_qparams()
        expected_range = theirs._non_linear_param_search()
    assert all(torch.equal(a, b) for a, b in zip(ours._non_linear_param_search(), expected_range))
    scale, zero_point = ours.calculate_qparams()
    assert scale.dtype == expected[0].dtype and zero_point.dtype == expected[1].dtype
    assert torch.equal(scale, expected[0]) and torch.equal(zero_point, expected[1])


def test_quantization_error_matches_torch_for_every_candidate_shape():
    ours, theirs = observe_both({"bins": 64}, outliers())
    for start, end in [(0, 63), (3, 60), (10, 11), (20, 20), (0, 0)]:
        assert ours._compute_quantization_error(start, end) == theirs._compute_quantization_error(start, end)


def test_search_matches_torch_on_an_arbitrary_loaded_histogram():
    """A loaded histogram need not be a valid count (its cumulative sum may fall): the search still agrees."""
    g = torch.Generator().manual_seed(5)
    state = {
        "eps": torch.tensor([torch.finfo(torch.float32).eps]),
        "histogram": torch.randn(64, generator=g).abs() * torch.where(torch.rand(64, generator=g) < 0.1, -0.5, 1.0),
        "min_val": torch.tensor(-2.0),
        "max_val": torch.tensor(3.0),
    }
    ours, theirs = HistogramObserver(bins=64), torch_histogram_observer({"bins": 64})
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs._non_linear_param_search()
    assert all(torch.equal(a, b) for a, b in zip(ours._non_linear_param_search(), expected))


def test_search_trims_a_thin_tail():
    x = torch.randn(100000, generator=torch.Generator().manual_seed(0))
    obs = HistogramObserver(bins=512)
    obs(x)
    new_min, new_max = obs._non_linear_param_search()
    assert x.min() <= new_min and new_max < x.max() - 0.2  # the few values beyond ~4 sigma get clipped
    assert obs.calculate_qparams()[0].item() < ((x.max() - x.min()) / 255).item()


def test_nan_input_is_refused():
    obs = HistogramObserver(bins=16)
    with pytest.raises(ObserverError, match="HistogramObserver got 1 non-finite"):
        obs(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ObserverError, match="saw no data"):
        obs.calculate_qparams()


def test_search_is_not_slower_than_torch():
    ours, theirs = observe_both({"bins": 2048}, conv_relu())
    start = time.perf_counter()
    ours.calculate_qparams()
    mine = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs.calculate_qparams()
    reference = time.perf_counter() - start
    assert mine < reference * 2 + 0.05


def test_histogram_attributes():
    obs = HistogramObserver(bins=32, upsample_rate=8, dtype="qint8", qscheme="per_tensor_symmetric")
    assert obs.bins == 32 and obs.upsample_rate == 8 and obs.dst_nbins == 256
    assert obs.histogram.shape == (32,) and obs.min_val.dim() == 0
    assert (obs.quant_min, obs.quant_max) == (-128, 127)
    assert "bins=32" in repr(obs)
    obs(torch.randn(10))
    obs.reset_min_max_vals()
    assert obs.histogram.sum() == 0
    with pytest.raises(ObserverError, match="saw no data"):
        obs.calculate_qparams()
