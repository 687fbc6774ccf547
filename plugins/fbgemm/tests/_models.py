"""What the fbgemm plugin's tests share: eager quantization of a small model on a chosen backend."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

import qcore
from qcore.flow.eager import convert, prepare


def converted(build: Callable[[], nn.Module], input_shape: tuple[int, ...], backend: str) -> nn.Module:
    """``build()`` (seeded) with fbgemm's default qconfig, calibrated on one seeded batch, converted on ``backend``."""
    torch.manual_seed(0)
    model = build().eval()
    model.qconfig = qcore.get_default_qconfig("fbgemm")
    prepared = prepare(model)
    with torch.no_grad():
        prepared(torch.rand(*input_shape, generator=torch.Generator().manual_seed(1)))
    with qcore.backend(backend):
        return convert(prepared)
