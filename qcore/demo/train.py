"""Training the demo's models (the CNN, and through :func:`fit` the recurrent ones), weights cached by configuration."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

import attrs
import torch
from torch import nn

from qcore.demo.data import SPLIT_SEED, TEST_FRACTION, Digits, batches
from qcore.demo.model import DigitsCNN, ModelConfig
from qcore.demo.progress import progress_bar

M = TypeVar("M", bound=nn.Module)

# Bump when training changes in a way the configuration does not show.
CACHE_FORMAT = 1


@attrs.frozen
class TrainConfig:
    """How a demo model is trained; part of the cache key."""

    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    # The model is tiny: one thread is as fast as two, and far steadier on a busy machine.
    threads: int = 1


@attrs.frozen
class TrainedModel:
    """A trained float model and where its weights came from."""

    model: DigitsCNN
    from_cache: bool
    path: Optional[Path]
    seconds: float


def default_cache_dir() -> Path:
    """``$QCORE_CACHE_DIR``, else ``~/.cache/qcore``."""
    env = os.environ.get("QCORE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qcore"


def cache_key(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """A short hash of everything that decides the trained weights."""
    description = {
        "format": CACHE_FORMAT,
        "model": attrs.asdict(model_config),
        "train": {k: v for k, v in attrs.asdict(train_config).items() if k != "threads"},
        "data": {"name": "sklearn.load_digits", "test_fraction": TEST_FRACTION, "split_seed": SPLIT_SEED},
    }
    text = json.dumps(description, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit(build: Callable[[], M], train_config: TrainConfig, data: Digits, desc: str = "training",
        quiet: bool = False) -> M:
    """Seed, ``build()`` a model and train it with Adam, cross-entropy and a cosine schedule; returns it in eval mode."""
    torch.manual_seed(train_config.seed)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=train_config.learning_rate,
                                 weight_decay=train_config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_config.epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(train_config.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(train_config.threads)
    try:
        model.train()
        with progress_bar(range(train_config.epochs), desc=desc, unit="epoch", quiet=quiet) as bar:
            for _ in bar:
                total, count = 0.0, 0
                for images, labels in batches(data.train_images, data.train_labels,
                                              train_config.batch_size, generator):
                    optimizer.zero_grad()
                    loss = loss_fn(model(images), labels)
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(labels)
                    count += len(labels)
                scheduler.step()
                bar.set_postfix(loss=f"{total / count:.4f}")
    finally:
        torch.set_num_threads(previous_threads)
    return model.eval()


def train_model(model_config: ModelConfig, train_config: TrainConfig, data: Digits,
                quiet: bool = False) -> DigitsCNN:
    """Train the CNN from a fixed seed (see :func:`fit`); returns the model in eval mode."""
    return fit(lambda: DigitsCNN(model_config), train_config, data, quiet=quiet)


def cache_path(name: str, cache_dir: Optional[Path] = None) -> Path:
    """Where the demo caches the weights called ``name``: under ``cache_dir``, else :func:`default_cache_dir`."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / "demo" / f"{name}.pt"


def load_or_fit(path: Optional[Path], build: Callable[[], M], train: Callable[[], M]) -> tuple[M, bool]:
    """``build()`` with the weights cached at ``path`` if they load, else ``train()``'s, cached there; and which."""
    if path is not None and path.is_file():
        model = build()
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception:  # a truncated or foreign file: retrain and overwrite it
            pass
        else:
            return model.eval(), True
    model = train()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a file.
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save(model.state_dict(), partial)
        os.replace(partial, path)
    return model, False


def load_or_train(data: Digits, model_config: ModelConfig = ModelConfig(),
                  train_config: TrainConfig = TrainConfig(), cache_dir: Optional[Path] = None,
                  use_cache: bool = True, quiet: bool = False) -> TrainedModel:
    """Load the cached weights for this configuration, or train and cache them."""
    start = time.perf_counter()
    path = cache_path(f"digits-cnn-{cache_key(model_config, train_config)}", cache_dir) if use_cache else None
    model, from_cache = load_or_fit(path, lambda: DigitsCNN(model_config),
                                    lambda: train_model(model_config, train_config, data, quiet=quiet))
    return TrainedModel(model, from_cache, path, time.perf_counter() - start)
