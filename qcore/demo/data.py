"""The demo's data: scikit-learn's bundled handwritten digits (8x8 images, 1797 samples).

Real data that ships inside scikit-learn, so the demo needs no download.
"""

from __future__ import annotations

from typing import Iterator

import attrs
import torch

from qcore.errors import ConfigError

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@attrs.frozen
class Digits:
    """A fixed train/test split; images are float32 in [0, 1] of shape (N, 1, 8, 8)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor

    @property
    def num_classes(self) -> int:
        return 10


def load_digits_split(test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED) -> Digits:
    """Load the digits and split them, stratified by label, the same way on every call."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("the demo needs scikit-learn: install qcore[demo]") from exc
    images, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )

    def as_images(x) -> torch.Tensor:
        # Pixel values are integers 0..16.
        return torch.as_tensor(x, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8).contiguous()

    def as_labels(y) -> torch.Tensor:
        return torch.as_tensor(y, dtype=torch.int64)

    return Digits(as_images(x_train), as_labels(y_train), as_images(x_test), as_labels(y_test))


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images, labels) batches, shuffled when a generator is given."""
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    n = images.shape[0]
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        yield images[index], labels[index]
