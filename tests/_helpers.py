"""Helpers the module tests share: torch.ao oracle calls without warnings, and a small digits classifier."""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn


#: Whether this torch still has the quantized kernels (built with fbgemm) the differential tests use as oracle.
HAVE_TORCH_Q = (
    hasattr(torch, "quantize_per_tensor")
    and hasattr(torch, "quint8")
    and "fbgemm" in getattr(torch.backends.quantized, "supported_engines", ())
)
needs_torch_q = pytest.mark.skipif(not HAVE_TORCH_Q, reason="needs torch's quantized kernels built with fbgemm (the oracle)")


def oracle(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with warnings silenced (torch.ao's deprecation warnings, in tests only)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@functools.lru_cache(maxsize=None)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as (N, 64) floats in [0, 1] and their labels; skips without scikit-learn."""
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)


def digits_split(n: int, train_size: int = 1400) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random (train, test) split of ``n`` sample indices."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return order[:train_size], order[train_size:]


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, epochs: int) -> None:
    """Train ``model`` on ``x[train]`` with Adam (lr 0.01), cross entropy and batches of 64, in order."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(epochs):
        for i in range(0, len(train), 64):
            batch = train[i : i + 64]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Percentage of ``x`` that ``model`` labels as ``y``."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item() * 100
