"""2-layer LSTM and GRU classifiers reading the digits row by row, dynamic int8 with qcore and with torch.ao.

Each image is 8 steps of 8 pixels; the recurrent layers (hidden 64, 2 layers)
feed a linear classifier on the last step. The classifiers are trained once
(Adam, 15 epochs, seed 0) and cached next to the demo's weights. Both
frameworks quantize the LSTM/GRU and the Linear with their default dynamic
qconfig (int8 weights per tensor, 7-bit dynamic activations).
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

import qcore
from qcore.demo.data import batches, load_digits_split
from qcore.demo.train import default_cache_dir

from benchmarks.common import Context, quiet
from benchmarks.harness import Row, Workload, size_ratios, workload_rows

NAME = "digits {cell} 2-layer (dynamic)"
BATCHES = (1, 32, 256)
HIDDEN, LAYERS, EPOCHS, LR, SEED = 64, 2, 15, 1e-2, 0


class RowClassifier(nn.Module):
    """``cell`` (LSTM or GRU) over the 8 image rows, then a linear layer on the last output."""

    def __init__(self, cell: str) -> None:
        super().__init__()
        self.rnn = getattr(nn, cell)(8, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.fc = nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.reshape(x.shape[0], 8, 8))
        return self.fc(out[:, -1])


def trained(cell: str, data: object, cache_dir: Optional[Path]) -> RowClassifier:
    """The trained classifier, from the cache or trained now (a few seconds) and cached."""
    key = hashlib.sha256(f"{cell}-{HIDDEN}-{LAYERS}-{EPOCHS}-{LR}-{SEED}-v1".encode()).hexdigest()[:12]
    path = (cache_dir or default_cache_dir()) / "benchmarks" / f"digits-{cell.lower()}-{key}.pt"
    model = RowClassifier(cell)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    torch.manual_seed(SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        for images, labels in batches(data.train_images, data.train_labels, 32, generator):  # type: ignore[attr-defined]
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)
    return model.eval()


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode(), quiet():
        return 100.0 * (model(images).argmax(1) == labels).float().mean().item()


def build(ctx: Context, cell: str = "LSTM") -> Workload:
    with quiet():
        import torch.ao.quantization as tq
    data = load_digits_split()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = trained(cell, data, ctx.cache_dir)
    finally:
        torch.set_num_threads(previous)
    spec = {getattr(nn, cell), nn.Linear}
    with qcore.backend("fbgemm"):
        ours = qcore.quantize_dynamic(fp32, spec, dtype=torch.qint8)
    with quiet():
        theirs = tq.quantize_dynamic(fp32, spec, dtype=torch.qint8)
    models = {"fp32": fp32, "fp32 A/A": copy.deepcopy(fp32), "qcore": ours, "torch.ao": theirs}
    with quiet():
        sizes = size_ratios(models)
    acc = {name: _accuracy(models[name], data.test_images, data.test_labels) for name in ("fp32", "qcore", "torch.ao")}
    accuracy = f"test acc fp32 {acc['fp32']:.1f}%, qcore {acc['qcore']:.1f}%, torch.ao {acc['torch.ao']:.1f}%"
    return Workload(NAME.format(cell=cell), models, sizes, {"qcore": accuracy},
                    lambda batch: (data.test_images[:batch],), BATCHES)


def rows(ctx: Context) -> Iterator[Row]:
    for cell in ("LSTM", "GRU"):
        yield from workload_rows(build(ctx, cell), ctx.settings, quiet)
