"""What the demo measures: accuracy, model size, and latency interleaved with the fp32 model."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Iterator

import torch
from torch import nn

from qcore.demo.data import batches
from qcore.flow.simulate import ObserveThenFakeQuantize, SimulatedModule


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run torch ops on ``n`` threads inside the block, restoring the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    """Top-1 accuracy in percent."""
    correct = 0
    for x, y in batches(images, labels, batch_size):
        correct += int((model(x).argmax(dim=1) == y).sum())
    return 100.0 * correct / len(labels)


def float_size_bytes(model: nn.Module) -> int:
    """Bytes of every tensor in the model's state_dict."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def simulated_size_bytes(model: nn.Module) -> int:
    """Bytes the simulated model would take quantized: int weights, fp32 biases and the rest, qparams.

    Observer state (running ranges, histograms) is calibration-time only and not counted.
    """
    total = 0
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, ObserveThenFakeQuantize):
            total += module.scale.numel() * 4 + module.zero_point.numel() * 4
            skip.update(id(t) for t in module.state_dict(keep_vars=True).values())
        elif isinstance(module, SimulatedModule):
            weight = module.module.weight
            total += (weight.numel() * module.weight_fake_quant.bits + 7) // 8
            skip.add(id(weight))
    for tensor in model.state_dict(keep_vars=True).values():
        if id(tensor) not in skip:
            total += tensor.numel() * tensor.element_size()
    return total


@torch.no_grad()
def interleaved_latency(model: nn.Module, baseline: nn.Module, batch: torch.Tensor,
                        rounds: int, warmup: int = 3) -> tuple[float, float]:
    """Median milliseconds per batch of ``model`` and of ``baseline``, timed alternately on one thread.

    Alternating the two in every round keeps machine noise (other processes,
    frequency changes) from favouring either.
    """
    with num_threads(1):
        for _ in range(warmup):
            model(batch)
            baseline(batch)
        ours, theirs = [], []
        for _ in range(rounds):
            for target, times in ((baseline, theirs), (model, ours)):
                start = time.perf_counter()
                target(batch)
                times.append(time.perf_counter() - start)
    return 1000 * statistics.median(ours), 1000 * statistics.median(theirs)
